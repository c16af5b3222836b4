"""Smoke runs of every benchmark in benchmarks/ on a tiny input, so none can rot unnoticed.

Each runs the real script (`python -m benchmarks.X`) and checks what it prints and the figures
it writes with --json; timings are only required to be positive. Every run gets its own TMPDIR,
which must be empty afterwards: a benchmark leaves nothing behind.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks import featurize_vs_librosa
from tests.conftest import tone, write_wav

ROOT = Path(__file__).resolve().parents[1]


def run_benchmark(module: str, *args: str | Path, tmp_path: Path, timeout: int = 600) -> str:
    tmpdir = tmp_path / "tmpdir"
    tmpdir.mkdir(exist_ok=True)
    env = os.environ | {"TMPDIR": str(tmpdir), "ZENML_ANALYTICS_OPT_IN": "false", "DVC_NO_ANALYTICS": "1"}
    p = subprocess.run([sys.executable, "-m", f"benchmarks.{module}", *map(str, args)], cwd=ROOT, env=env,
                       capture_output=True, text=True, timeout=timeout)
    out = p.stdout + p.stderr
    assert p.returncode == 0, out[-6000:]
    assert sorted(tmpdir.iterdir()) == [], f"{module} left temporary files behind"
    return out


@pytest.fixture
def tiny_recordings(tmp_path: Path) -> Path:
    """Six short 8 kHz recordings of two labels and three speakers, with a manifest."""
    root = tmp_path / "recordings"
    rows = ["path,label,speaker"]
    for i in range(6):
        label, speaker = ("low", "high")[i % 2], f"s{i // 2}"
        rel = f"{label}/{speaker}_{i}.wav"
        write_wav(root / rel, tone(300.0 * (1 + i % 2) + 10 * i, 0.2 + 0.1 * i, 8000, seed=i), 8000)
        rows.append(f"{rel},{label},{speaker}")
    (root / "manifest.csv").write_text("\n".join(rows) + "\n")
    return root


def test_featurize_vs_librosa_smoke(tiny_recordings: Path, tmp_path: Path):
    result = tmp_path / "featurize.json"
    out = run_benchmark("featurize_vs_librosa", "--data", tiny_recordings, "--limit", "4", "--warmup", "2",
                        "--repeats", "2", "--threads", "1", "--json", result, tmp_path=tmp_path)
    for line in ("featurize vs librosa: 4 files from", "audioflow featurize()", "librosa per-file script",
                 "speed-up (librosa median wall / audioflow median wall):"):
        assert line in out, line
    r = json.loads(result.read_text())
    assert r["benchmark"] == "featurize_vs_librosa"
    assert r["n_files"] == 4 and r["repeats"] == 2 and r["warmup_files"] == 2
    assert r["shape"] == [4, 64, 251]  # 2.5 s windows at 8 kHz, 10 ms hop
    for key in ("audioflow_seconds", "librosa_seconds", "audioflow_cpu_seconds", "librosa_cpu_seconds"):
        assert len(r[key]) == 2 and all(t > 0 for t in r[key]), key
    for key in ("audioflow_files_per_s", "librosa_files_per_s", "ratio_librosa_over_audioflow",
                "cpu_ratio_librosa_over_audioflow"):
        assert r[key] > 0, key
    assert r["target_met"] == (r["ratio_librosa_over_audioflow"] >= r["target_ratio"])
    # Both sides compute the same features, or the ratio would compare different work.
    assert r["max_abs_diff_db"] < 0.01
    # The device featurize() ran on, as the library picks it (CUDA when present).
    assert r["machine"]["device"] == ("cuda" if r["machine"]["cuda_available"] else "cpu")
    assert f"audioflow device: {r['machine']['device']}" in out
    assert r["machine"]["torch_threads"] == 1


def test_featurize_vs_librosa_skips_without_data(tmp_path: Path, capsys):
    assert featurize_vs_librosa.main(["--data", str(tmp_path / "absent")]) == 0
    assert capsys.readouterr().out.startswith("SKIP: FSDD not found")


@pytest.mark.slow
def test_zenml_runs_smoke(tmp_path: Path):
    result = tmp_path / "zenml.json"
    out = run_benchmark("zenml_runs", "--repeats", "1", "--n-recordings", "60",
                        "--set", "train.epochs=1", "--set", "features.window_s=1.5",
                        "--set", "model.cnn.channels=[8,16]", "--set", "validate.min_per_class=3",
                        "--json", result, tmp_path=tmp_path)
    for line in ("full run (empty cache)", "fully cached rerun", "train.lr changed: train, evaluate, export rerun",
                 "cached rerun target <= 10 s:", "60 demo recordings, train.epochs=1"):
        assert line in out, line
    r = json.loads(result.read_text())
    assert r["benchmark"] == "zenml_runs" and r["n_recordings"] == 60 and r["repeats"] == 1
    assert r["overrides"] == {"train.epochs": 1, "features.window_s": 1.5, "model.cnn.channels": [8, 16],
                              "validate.min_per_class": 3}
    assert r["full_s"] > 0
    assert len(r["cached_s"]) == len(r["train_only_s"]) == 1
    assert r["cached_over_full"] > 0 and r["train_only_over_full"] > 0


@pytest.mark.parametrize("override, message", [
    ("train.nope=1", "--set train.nope: params.yaml has no such key"),
    ("train.epochs=abc", "train.epochs: Input should be a valid integer"),
])
def test_zenml_runs_rejects_bad_overrides_before_running(override: str, message: str, tmp_path: Path):
    tmpdir = tmp_path / "tmpdir"
    tmpdir.mkdir(exist_ok=True)
    p = subprocess.run([sys.executable, "-m", "benchmarks.zenml_runs", "--set", override], cwd=ROOT,
                       env=os.environ | {"TMPDIR": str(tmpdir)}, capture_output=True, text=True, timeout=120)
    assert p.returncode != 0 and message in p.stderr
    assert sorted(tmpdir.iterdir()) == []


def test_accuracy_smoke(tmp_path: Path):
    """Both protocols of an FSDD-shaped folder (3 speakers, 3 "digits", a split column), the
    baseline on the same splits, and one ablation."""
    root = tmp_path / "digits"
    rows = ["path,label,speaker,split"]
    for d, freq in enumerate((300.0, 700.0, 1500.0)):
        for i, s in enumerate(("ann", "bob", "cyd")):
            for k in range(4):
                rel = f"recordings/{d}_{s}_{k}.wav"
                write_wav(root / rel, tone(freq * (1 + 0.01 * k + 0.02 * i), 0.3 + 0.05 * k, 8000,
                                           seed=d * 100 + i * 10 + k), 8000)
                rows.append(f"{rel},{d},{s},{'test' if k < 1 else 'train'}")
    (root / "manifest.csv").write_text("\n".join(rows) + "\n")
    result, keep = tmp_path / "accuracy.json", tmp_path / "kept"
    args = ["--data", root, "--set", "train.epochs=1", "--set", "model.cnn.channels=[4,8]", "--baseline-epochs", "2",
            "--ablate", "gain", "--keep", keep, "--json", result]
    out = run_benchmark("accuracy", *args, tmp_path=tmp_path)
    assert "digits / official: defaults/baseline accuracy" in out and "digits / loso:" in out
    assert "plain baseline" in out and "without gain" in out and "kept in" not in out
    first = json.loads(result.read_text())["results"]
    assert sorted(p.name for p in keep.iterdir()) == ["digits-loso-defaults.json", "digits-loso-no-gain.json",
                                                       "digits-official-defaults.json",
                                                       "digits-official-no-gain.json"]
    # --keep: a rerun reuses every unit whose key holds and measures the stale one again.
    stale = keep / "digits-loso-no-gain.json"
    stale.write_text(stale.read_text().replace('"key": "', '"key": "0', 1))
    out = run_benchmark("accuracy", *args, tmp_path=tmp_path)
    assert out.count("kept in") == 3 and "digits-loso-no-gain: kept" not in out
    again = json.loads(result.read_text())["results"]
    for r in (first, again):  # the one unit measured again took its own time
        del r["digits/loso"]["ablations"]["gain"]["seconds"]
    assert again == first
    r = json.loads(result.read_text())["results"]
    assert set(r) == {"digits/official", "digits/loso"}
    loso, official = r["digits/loso"], r["digits/official"]
    assert len(loso["defaults"]["folds"]) == len(loso["baseline"]["folds"]) == 3  # one per speaker
    assert len(official["defaults"]["folds"]) == len(official["baseline"]["folds"]) == 1
    for side in (loso["defaults"], loso["baseline"], official["defaults"], official["baseline"],
                 loso["ablations"]["gain"]):
        assert all(0 <= a <= 1 for a in side["folds"]) and side["seconds"] > 0
    # an interval: t over folds; on one test split, evaluate's bootstrap (the baseline has none)
    for side in (loso["defaults"], loso["baseline"], official["defaults"]):
        assert side["interval"][0] <= side["accuracy"] <= side["interval"][1]
    assert official["baseline"]["interval"] is None
    assert loso["ratio"] == pytest.approx(loso["defaults"]["accuracy"] / loso["baseline"]["accuracy"], abs=1e-3)
    # An ablation's effect is paired, fold by fold.
    gain = loso["ablations"]["gain"]
    diffs = [d - o for d, o in zip(loso["defaults"]["folds"], gain["folds"])]
    assert gain["effect_folds"] == pytest.approx(diffs, abs=1e-4)
    assert gain["effect"] == pytest.approx(sum(diffs) / 3, abs=1e-4) and gain["effect_std"] >= 0


SHARED = ROOT.parent / "shared" / "data"


@pytest.mark.skipif(not any(SHARED.glob("*/manifest.csv")), reason=f"no collection in {SHARED}")
def test_accuracy_smoke_on_every_shared_collection(tmp_path: Path):
    """A few recordings of each collection in ../shared/data, under its official split or folds.
    Leave one speaker out (FSDD's second protocol: seven models, as many as the folds) is the
    same kfold path; test_accuracy_smoke runs it on an FSDD-shaped folder."""
    result = tmp_path / "accuracy.json"
    chosen = ["official", "folds", "stratified"]
    run_benchmark("accuracy", "--limit", "3", "--set", "train.epochs=1", "--set", "validate.min_per_class=2",
                  *(a for p in chosen for a in ("--protocol", p)),
                  "--baseline-epochs", "1", "--json", result, tmp_path=tmp_path, timeout=1800)
    r = json.loads(result.read_text())["results"]
    expected = {f"{p.parent.name}/{name}" for p in SHARED.glob("*/manifest.csv")
                for name in _protocols(p.parent) if name in chosen}
    assert set(r) == expected
    assert {key.split("/")[0] for key in r} == {p.parent.name for p in SHARED.glob("*/manifest.csv")}
    for figures in r.values():
        assert len(figures["defaults"]["folds"]) == len(figures["baseline"]["folds"]) >= 1


def _protocols(data: Path) -> list[str]:
    from benchmarks.accuracy import protocols

    return list(protocols(data))


def test_train_throughput_smoke(tmp_path: Path):
    result = tmp_path / "throughput.json"
    out = run_benchmark("train_throughput", "--n-recordings", "60", "--epochs", "1", "--repeats", "1",
                        "--set", "model.cnn.channels=[4,8]", "--set", "validate.min_per_class=3",
                        "--json", result, tmp_path=tmp_path)
    # The defaults augment on the waveform: the loop cuts windows from the audio store.
    assert "loop / bare:" in out and "training loop (audio memmap, waveform augmentation" in out
    r = json.loads(result.read_text())
    assert r["benchmark"] == "train_throughput" and len(r["loop_s"]) == len(r["bare_s"]) == 1
    assert r["waveform_augmentation"] is True
    assert r["n_batches"] >= 1 and r["ratio"] > 0 and all(t > 0 for t in r["loop_s"] + r["bare_s"])


def test_train_amp_smoke(tmp_path: Path):
    """On a machine without CUDA it trains on the CPU, where AMP and the CUDA graph are off: only
    the script is checked."""
    result = tmp_path / "amp.json"
    out = run_benchmark("train_amp", "--n-recordings", "60", "--epochs", "2", "--repeats", "1",
                        "--set", "model.cnn.channels=[4,8]", "--set", "validate.min_per_class=3",
                        "--json", result, tmp_path=tmp_path)
    assert "the defaults (AMP, CUDA graph) / fp32 eager:" in out
    r = json.loads(result.read_text())
    sides = {"fp32 eager", "amp eager", "fp32 graph", "amp graph"}
    assert r["benchmark"] == "train_amp" and set(r["seconds_per_epoch"]) == sides
    assert all(len(s) == 1 and s[0] > 0 for s in r["seconds_per_epoch"].values())  # epoch 1 is not counted
    assert r["ratio_vs_fp32"]["fp32 eager"] == 1.0 and all(r["ratio_vs_fp32"][s] > 0 for s in sides)


def test_every_benchmark_has_a_smoke_run_and_is_in_make_bench():
    modules = {p.stem for p in (ROOT / "benchmarks").glob("*.py") if not p.stem.startswith("_")}  # _: helpers
    # The images benchmark's smoke run needs the built images: it is in tests/test_containers.py.
    containers = re.findall(r"^def (test_\w+_smoke)\(", (ROOT / "tests" / "test_containers.py").read_text(), re.M)
    smoke = {name.removeprefix("test_").removesuffix("_smoke") for name in [*globals(), *containers]
             if name.startswith("test_") and name.endswith("_smoke")}
    assert smoke == modules
    makefile = (ROOT / "Makefile").read_text()
    recipe = makefile.split("\nbench:", 1)[1].split("\n\n", 1)[0]
    assert {m for m in modules if f"python -m benchmarks.{m}" in recipe} == modules


def test_stage_costs_smoke(tmp_path: Path):
    """Two stratified sizes of a collection, the data stages, the fresh-process start-up and the
    memory of validate and featurize on generated recordings: figures of the right shape.
    (``--stages all`` adds train, evaluate and export through the same loop.)"""
    root = tmp_path / "twelve"
    rows = ["path,label"]
    for i in range(12):
        label = ("low", "high")[i % 2]
        write_wav(root / f"{label}/{i}.wav", tone(300.0 * (1 + i % 2) + 10 * i, 0.2 + 0.05 * i, 8000, seed=i), 8000)
        rows.append(f"{label}/{i}.wav,{label}")
    (root / "manifest.csv").write_text("\n".join(rows) + "\n")
    result = tmp_path / "costs.json"
    out = run_benchmark("stage_costs", "--data", root, "--sizes", "8", "12", "--repeats", "1",
                        "--memory", "24", "--set", "validate.min_per_class=1", "--set", "split.val_fraction=0.25",
                        "--set", "split.test_fraction=0.25", "--set", "features.window_s=0.5",
                        "--json", result, tmp_path=tmp_path)
    assert "twelve: 8 and 12 recordings (stratified)" in out and "decode (baseline)" in out
    assert "24 generated recordings: validate peak anonymous" in out
    r = json.loads(result.read_text())
    c = r["collections"]["twelve"]
    assert r["benchmark"] == "stage_costs" and c["sizes"] == [8, 12]
    assert set(c["stages"]) == {"ingest", "validate", "featurize", "split", "decode (baseline)"}
    for stage, v in c["stages"].items():
        assert len(v["median_s"]) == 2 and all(t > 0 for t in v["median_s"]), stage
        if stage != "decode (baseline)":
            assert v["start_s"] > 0 and v["imports_s"] > -1, stage
    for stage in ("ingest", "validate", "featurize"):  # they read recordings; split does not
        assert c["stages"][stage]["before_first_warm_s"] >= 0, stage
    assert all("x_decode" in v and "fixed_s" in v for v in c["stages"].values())
    assert r["great_expectations_import_s"] > 0
    for stage in ("validate", "featurize"):
        m = r["memory"]["24"][stage]
        assert m["peak_rss_mb"] >= m["peak_anon_mb"] >= m["after_imports_anon_mb"] > 0, m
        assert m["growth_anon_mb"] == pytest.approx(m["peak_anon_mb"] - m["after_imports_anon_mb"]), m
    assert r["memory"]["24"]["feature_store_mb"] > 0


def test_inference_speed_smoke(tmp_path: Path):
    result = tmp_path / "speed.json"
    out = run_benchmark("inference_speed", "--repeats", "3", "--requests", "24", "--channels", "4", "8",
                        "--threads", "1", "--sample-rate", "8000", "--json", result, tmp_path=tmp_path)
    for line in ("inference speed: 1-s clips at 8000 Hz", "eager", "ort_fp32", "ort_int8",
                 "targets at 1 thread", "profile fp32: front-end", "serve (24 requests"):
        assert line in out, line
    r = json.loads(result.read_text())
    assert r["benchmark"] == "inference_speed" and list(r["threads"]) == ["1"]
    row = r["threads"]["1"]
    for engine in ("eager", "ort_fp32", "ort_int8"):
        assert row["batch1_ms"][engine] > 0 and row["batch64_clips_per_s"][engine] > 0
    assert r["size_bytes"]["int8"] < r["size_bytes"]["fp32"]
    for q in ("fp32", "int8"):
        assert abs(r["profile"][q]["front_end_share"] + r["profile"][q]["classifier_share"] - 1) < 1e-6
        assert r["serve_rps"][q] > 0


def test_front_end_smoke(tmp_path: Path):
    result = tmp_path / "front_end.json"
    out = run_benchmark("front_end", "--repeats", "2", "--sample-rate", "8000", "--json", result,
                        tmp_path=tmp_path)
    assert "front-end alone, 1-s clips at 8000 Hz" in out
    r = json.loads(result.read_text())
    assert set(r["variants"]) == {"stft_op", "dft_conv", "fft_2stage"}
    for name, v in r["variants"].items():
        assert name in out
        # Every variant computes torchaudio's log-mel: the comparison is between equals.
        assert v["max_abs_diff_db"] < 1e-2, (name, v["max_abs_diff_db"])
        assert v["batch1_ms"] > 0 and v["batch64_clips_per_s"] > 0
        assert 0 < v["profile_b64"]["compute_share"] <= 1
    assert r["variants"]["dft_conv"]["b64_over_dft_conv"] == 1.0
    assert r["variants"]["fft_2stage"]["macs_per_frame"] < r["variants"]["dft_conv"]["macs_per_frame"]


def test_stage_costs_subsets_are_stratified_and_nested():
    """--limit and --sizes take each label in its share (a manifest sorted by label starts with
    one class only), and a smaller subset is part of a larger one."""
    from benchmarks.stage_costs import stratified

    rows = [{"path": f"{lab}/{i}.wav", "label": lab} for lab, n in (("a", 500), ("b", 300), ("c", 200))
            for i in range(n)]
    small, large = stratified(rows, 50), stratified(rows, 200)
    assert [sum(r["label"] == lab for r in small) for lab in "abc"] == [25, 15, 10]
    assert [sum(r["label"] == lab for r in large) for lab in "abc"] == [100, 60, 40]
    assert {r["path"] for r in small} < {r["path"] for r in large}
    assert [r["path"] for r in small] != [r["path"] for r in rows[:50]]
    assert len(stratified(rows, 7)) == 7 and stratified(rows, 1000) == rows
