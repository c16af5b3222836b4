"""The command line end to end: every stage on a small demo dataset, then predict."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import tone, write_wav

ROOT = Path(__file__).resolve().parents[1]


def audioflow(*args: str, cwd: Path, check: bool = True, env: dict | None = None) -> subprocess.CompletedProcess:
    p = subprocess.run([sys.executable, "-m", "audioflow.cli", *args], cwd=cwd, env=env,
                       capture_output=True, text=True, timeout=900)
    if check and p.returncode != 0:
        raise AssertionError(f"audioflow {' '.join(args)} failed ({p.returncode}):\n{p.stdout}\n{p.stderr}")
    return p


def test_help_explains_every_stage(tmp_path: Path):
    out = audioflow("--help", cwd=tmp_path).stdout
    for stage in ("ingest", "validate", "featurize", "split", "train", "evaluate", "export",
                  "predict", "demo-data", "run"):
        assert stage in out
    assert "--set" in audioflow("train", "--help", cwd=tmp_path).stdout


@pytest.mark.slow
def test_run_all_stages_then_predict(tmp_path: Path):
    from audioflow.demo import write_demo_dataset

    write_demo_dataset(tmp_path / "data", n_recordings=60, seed=3, min_s=2.0, max_s=3.0, progress=False)
    (tmp_path / "params.yaml").write_text((ROOT / "params.yaml").read_text())
    p = audioflow("run", "-q", "--set", "train.epochs=3", "--set", "features.window_s=1.5",
                  "--set", "model.cnn.channels=[8,16]", "--set", "validate.min_per_class=3", cwd=tmp_path)
    assert "test         accuracy" in p.stdout and "outputs/model.onnx" in p.stdout
    # Each figure with its interval, and the lines that say where to read the rest.
    assert re.search(r"test +accuracy \d\.\d{3} \[\d\.\d{3}, \d\.\d{3}\], macro-F1 \d\.\d{3} \[", p.stdout), p.stdout
    assert "bootstrap intervals over" in p.stdout and "outputs/model_card.md" in p.stdout
    assert re.search(r"calibration +ECE \d\.\d{3} -> \d\.\d{3}", p.stdout), p.stdout
    out = tmp_path / "outputs"
    for name in ("metrics.json", "confusion_matrix.csv", "confusion_matrix.png", "model.onnx",
                 "validation_report.json", "predictions.csv"):
        assert (out / name).stat().st_size > 0, name
    metrics = json.loads((out / "metrics.json").read_text())
    assert {"accuracy", "macro_f1", "balanced_accuracy", "per_class"} <= set(metrics)
    assert metrics["n"] == metrics["split"]["test"] > 0
    cm = np.loadtxt(out / "confusion_matrix.csv", delimiter=",", skiprows=1, usecols=(1, 2, 3))
    assert cm.sum() == metrics["n"]
    # Every stage wrote the parameters it used beside its outputs.
    for stage in ("ingest", "validate", "features", "split", "train", "evaluate", "export"):
        assert (tmp_path / "artifacts" / stage / "params.json").exists(), stage
    # The demo has patients: the summary counts them.
    assert "recordings, 3 classes" in p.stdout and " groups" in p.stdout

    rec = sorted((tmp_path / "data/recordings").rglob("*.wav"))[:2]
    pr = audioflow("predict", str(out / "model.onnx"), *map(str, rec), cwd=tmp_path)
    lines = [json.loads(x) for x in pr.stdout.splitlines()]
    assert [x["path"] for x in lines] == list(map(str, rec))
    for x in lines:
        assert x["label"] in metrics["per_class"]
        assert abs(sum(x["probabilities"].values()) - 1) < 1e-5

    # INT8 on request: its own file beside the FP32 one, judged on the same test recordings.
    q = audioflow("export", "-q", "--int8", "--set", "features.window_s=1.5", "--set", "model.cnn.channels=[8,16]",
                  cwd=tmp_path)
    report = json.loads((tmp_path / "artifacts/export/export.json").read_text())["int8"]
    assert (tmp_path / "artifacts/export/model.int8.onnx").stat().st_size == report["size_bytes"] > 0
    assert report["n_test_recordings"] == metrics["n"] and report["n_calibration_windows"] > 0
    assert report["macro_f1_drop"] == pytest.approx(report["test_macro_f1_fp32"] - report["test_macro_f1_int8"],
                                                    abs=2e-6)
    assert f"{report['test_macro_f1_int8']:.4f} INT8" in q.stderr
    pr = audioflow("predict", str(tmp_path / "artifacts/export/model.int8.onnx"), str(rec[0]), cwd=tmp_path)
    assert json.loads(pr.stdout)["label"] in metrics["per_class"]


def test_validate_dir_lists_every_problem(tmp_path: Path):
    data = tmp_path / "d"
    for label in ("a", "b"):
        for k in range(5):
            write_wav(data / label / f"{k}.wav", tone(300 + 500 * (label == "b") + k, 0.4, 8000, seed=k), 8000)
    write_wav(data / "a" / "silent.wav", np.zeros(4000, dtype=np.float32), 8000)
    (data / "b" / "broken.wav").write_bytes(b"not audio at all" * 20)
    p = audioflow("validate", str(data), "-q", "--params", str(tmp_path / "none.yaml"), cwd=tmp_path, check=False)
    assert p.returncode == 1, p.stderr
    lines = p.stdout.splitlines()
    assert any(line.startswith("a/silent.wav: ") and "silent" in line for line in lines), lines
    assert any(line.startswith("b/broken.wav: ") and "unreadable" in line for line in lines), lines


def test_bad_params_exit_2_with_the_key(tmp_path: Path):
    (tmp_path / "params.yaml").write_text("train:\n  epochz: 1\n")
    p = audioflow("ingest", cwd=tmp_path, check=False)
    assert p.returncode == 2 and "train.epochz: unknown key" in p.stderr


def _two_class_folder(root: Path, manifest: str | None) -> None:
    for label in ("a", "b"):
        for k in range(5):
            write_wav(root / label / f"{k}.wav", tone(300 + 500 * (label == "b") + 20 * k, 0.4, 8000, seed=k), 8000)
    if manifest is not None:
        rows = [f"{label}/{k}.wav,{label}" + manifest.format(k=k) for label in ("a", "b") for k in range(5)]
        header = "path,label" + ("" if not manifest else ",speaker")
        (root / "manifest.csv").write_text("\n".join([header, *rows]) + "\n")


@pytest.mark.parametrize("manifest", [None, "", ",s{k}"], ids=["class-folders", "path-label-only", "speaker"])
def test_validate_dir_works_on_any_manifest_and_leaves_no_trace(tmp_path: Path, manifest):
    """The project's params.yaml names a `patient` column; a folder without one still validates."""
    data, scratch = tmp_path / "mine", tmp_path / "tmp"
    scratch.mkdir()
    _two_class_folder(data, manifest)
    (tmp_path / "params.yaml").write_text((ROOT / "params.yaml").read_text())
    env = os.environ | {"TMPDIR": str(scratch)}
    p = audioflow("validate", str(data), "-q", cwd=tmp_path, env=env)
    assert ("validate: passed: 10 of 10 listed recordings used, 0 warning(s); "
            "report: outputs/validation_report.html") in p.stderr
    assert "data.group_column='patient'" in p.stderr  # said, not silently dropped
    assert (tmp_path / "outputs/validation_report.html").stat().st_size > 0
    assert list(scratch.iterdir()) == []  # the scratch ingest is gone
    assert sorted(q.name for q in tmp_path.iterdir()) == ["mine", "outputs", "params.yaml", "tmp"]


def test_run_on_class_folders_with_a_group_column_fails_clearly(tmp_path: Path):
    _two_class_folder(tmp_path / "data", None)
    (tmp_path / "params.yaml").write_text((ROOT / "params.yaml").read_text())  # group_column: patient
    p = audioflow("ingest", "-q", cwd=tmp_path, check=False)
    assert p.returncode == 2
    assert "no manifest.csv, so data.group_column='patient' cannot be read" in p.stderr


def test_summary_says_no_groups(tmp_path: Path, capsys):
    from audioflow.cli.summary import print_summary

    (tmp_path / "dataset.json").write_text(json.dumps(
        {"root": "d", "n_files": 4, "labels": ["a", "b"], "n_groups": 0,
         "warnings": ["data.group_column='patient' ignored: data.manifest is null"]}))
    (tmp_path / "metrics.json").write_text(json.dumps(
        {"split": {"train": 2, "val": 1, "test": 1}, "accuracy": 1, "macro_f1": 1, "balanced_accuracy": 1}))
    print_summary(tmp_path / "dataset.json", tmp_path, 1.0)
    out = capsys.readouterr().out
    assert "4 recordings, 2 classes (a, b), no groups" in out and "1 groups" not in out
    assert "warning      data.group_column='patient' ignored" in out


def test_the_command_line_imports_a_library_only_where_a_command_uses_it():
    """Every `audioflow` command builds the whole parser first: that must not import the
    libraries of any one command (the web framework, ONNX Runtime, torch, Great Expectations,
    pandas), or each command pays for all of them before it starts."""
    code = ("import sys; from audioflow.cli import build_parser; build_parser(); "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in {'fastapi', 'onnxruntime', 'torch', "
            "'torchaudio', 'great_expectations', 'pandas', 'sklearn', 'matplotlib', 'zenml', 'numpy'}))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]", out
