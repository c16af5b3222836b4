"""A collection with every kind of damage, through validation and the whole pipeline, under
both policies: every problem in one pass, by name, with its severity; nothing lost.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf

from audioflow.config import DataConfig, ParamsError, ValidateConfig, load_params
from audioflow.manifest import ingest
from audioflow.validation import DATASET, validate
from tests.conftest import tone, write_wav

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
SR = 16000
GOOD = [f"{label}/ok{k}.wav" for label in ("low", "high") for k in range(6)]

# (where, check, severity) of everything the corpus gets wrong, with default severities.
EXPECTED = {
    ("low/trunc.wav", "truncated", "error"),
    ("low/empty.wav", "readable", "error"),
    ("low/text.wav", "readable", "error"),
    ("low/nan.wav", "readable", "error"),
    ("low/silent.wav", "silence", "error"),
    ("low/missing.wav", "missing", "error"),
    ("high/copy_of_low.wav", "conflict", "error"),
    ("low/ok0.wav", "conflict", "error"),
    ("manifest.csv:24", "listed_twice", "error"),
    ("manifest.csv:25", "manifest_entry", "error"),
    ("manifest.csv:26", "manifest_entry", "error"),
    ("manifest.csv:28", "manifest_entry", "error"),
    ("high/clipped.wav", "clipping", "warning"),
    ("high/quiet.wav", "low_level", "warning"),
    ("high/stereo.wav", "multichannel", "info"),  # mixed to mono by design: noted, not a concern
    ("high/rate8k.wav", "sample_rate", "warning"),
    ("high/unlisted.wav", "unlisted", "warning"),
    ("stray.wav", "unlisted", "warning"),
    (DATASET, "group_labels", "warning"),  # speakers s0..s2 say both words
}
REASONS = {
    "low/trunc.wav": "truncated: the WAV header promises 16000 frames, the file holds",
    "low/empty.wav": "empty file (0 bytes)",
    "low/text.wav": "unreadable or unsupported format",
    "low/nan.wav": "non-finite samples (NaN or Inf)",
    "low/silent.wav": "silent: every sample is zero",
    "low/missing.wav": "file not found",
    "high/copy_of_low.wav": "same content as low/ok0.wav, which is labelled 'low'",
    "manifest.csv:24": "low/ok1.wav listed again (first on line 3)",
    "manifest.csv:25": "empty path",
    "manifest.csv:26": "high/ok2.wav: empty label",
    "manifest.csv:28": "../outside.wav: path leaves the data root",
    "high/clipped.wav": "% of samples at full scale (max 1.0%)",
    "high/quiet.wav": "low level: RMS",
    "high/stereo.wav": "2 channels: mixed down to mono",
    "high/rate8k.wav": "sample rate 8000 Hz not in 16000 Hz (resampled)",
}
# Errors on listed entries: what quarantine leaves out.
LEFT_OUT = {w for w, _, sev in EXPECTED if sev == "error" and w != DATASET}


def make_corpus(root: Path) -> Path:
    rows = ["path,label,speaker"]
    for i, rel in enumerate(GOOD):
        f = 300 if rel.startswith("low") else 1200
        write_wav(root / rel, tone(f * (1 + 0.03 * (i % 6)), 0.6, SR, seed=i), SR)
        rows.append(f"{rel},{rel.split('/')[0]},s{i % 3}")

    def listed(rel: str, label: str, speaker: str = "s9") -> None:
        rows.append(f"{rel},{label},{speaker}")

    write_wav(root / "low/trunc.wav", tone(300, 1.0, SR, seed=99), SR)
    whole = (root / "low/trunc.wav").read_bytes()
    (root / "low/trunc.wav").write_bytes(whole[: len(whole) // 2])
    (root / "low/empty.wav").write_bytes(b"")
    (root / "low/text.wav").write_text("not audio at all\n" * 20)
    nan = tone(300, 0.6, SR, seed=5)
    nan[100] = np.nan
    write_wav(root / "low/nan.wav", nan, SR, subtype="FLOAT")
    write_wav(root / "low/silent.wav", np.zeros(SR // 2, np.float32), SR)
    for rel in ("low/trunc.wav", "low/empty.wav", "low/text.wav", "low/nan.wav", "low/silent.wav"):
        listed(rel, "low")
    write_wav(root / "high/clipped.wav", np.clip(tone(1200, 0.6, SR, amp=0.9, seed=7) * 1.5, -1, 1), SR)
    write_wav(root / "high/stereo.wav", np.stack([tone(1200, 0.6, SR, seed=8), tone(1250, 0.6, SR, seed=9)], 1),
              SR)
    write_wav(root / "high/quiet.wav", tone(1200, 0.6, SR, amp=0.005, seed=11) * 0.1, SR)
    write_wav(root / "high/rate8k.wav", tone(1200, 0.6, 8000, seed=12), 8000)
    shutil.copy(root / "low/ok0.wav", root / "high/copy_of_low.wav")
    for rel in ("high/clipped.wav", "high/stereo.wav", "high/quiet.wav", "high/rate8k.wav", "high/copy_of_low.wav"):
        listed(rel, "high", "s8")
    rows += ["low/ok1.wav,low,s1", ",low,s1", "high/ok2.wav,,s2", "low/missing.wav,low,s2", "../outside.wav,low,s2"]
    write_wav(root / "high/unlisted.wav", tone(1200, 0.6, SR, seed=13), SR)
    write_wav(root / "stray.wav", tone(300, 0.6, SR, seed=14), SR)
    write_wav(root / ".hidden/ignored.wav", tone(300, 0.6, SR, seed=15), SR)
    (root / "manifest.csv").write_text("\n".join(rows) + "\n")
    return root


CFG = dict(sample_rates=[SR], min_per_class=3)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    return make_corpus(tmp_path_factory.mktemp("corpus") / "data")


def test_one_pass_reports_every_problem_by_name_with_its_severity(corpus: Path):
    ds = ingest(DataConfig(root=str(corpus), group_column="speaker"), progress=False)
    report = validate(ds, ValidateConfig(**CFG), progress=False)
    found = {(p.path, p.check, p.severity) for p in report.problems}
    assert found == EXPECTED, (found - EXPECTED, EXPECTED - found)
    reasons = {p.path: p.reason for p in report.problems}
    for where, text in REASONS.items():
        assert text in reasons[where], (where, reasons[where])
    assert not report.ok  # errors stand under on_error: fail
    s = report.summary
    assert s["n_listed"] == 27 and s["n_files"] == 22 and s["n_quarantined"] == 5  # what ingest could not take
    assert s["n_used"] + s["n_quarantined"] == s["n_listed"]


def test_quarantine_leaves_out_exactly_the_errors_and_loses_nothing(corpus: Path):
    ds = ingest(DataConfig(root=str(corpus), group_column="speaker"), progress=False)
    report = validate(ds, ValidateConfig(**CFG, on_error="quarantine"), progress=False)
    assert report.ok and set(report.quarantined) == LEFT_OUT
    s = report.summary
    assert s["n_used"] + s["n_quarantined"] == s["n_listed"] == 27
    # Warned-about recordings stay: they are quality concerns, not damage.
    assert {"high/clipped.wav", "high/quiet.wav", "high/stereo.wav", "high/rate8k.wav"}.isdisjoint(report.quarantined)
    # A class that quarantine makes too small still fails the run.
    small = validate(ds, ValidateConfig(sample_rates=[SR], min_per_class=6, on_error="quarantine"), progress=False)
    assert not small.ok
    assert [p.reason for p in small.errors if p.path == DATASET] == [
        "label 'low' has 5 usable recording(s) (11 listed), fewer than min_per_class=6"]


def test_severities_are_parameters(corpus: Path):
    ds = ingest(DataConfig(root=str(corpus), group_column="speaker"), progress=False)
    cfg = ValidateConfig(**CFG, severity={"clipping": "error", "unlisted": "off", "group_labels": "off"})
    found = {(p.path, p.check, p.severity) for p in validate(ds, cfg, progress=False).problems}
    assert ("high/clipped.wav", "clipping", "error") in found
    assert not {c for _, c, _ in found} & {"unlisted", "group_labels"}
    with pytest.raises(ValueError, match=r"validate.severity: unknown check\(s\) \['cliping'\]"):
        ValidateConfig(severity={"cliping": "error"})
    with pytest.raises(ParamsError, match="validate.severity"):
        load_params(ROOT / "params.yaml", {"validate.severity": {"clipping": "fatal"}})


def test_similar_labels_are_one_class_under_two_names(tmp_path: Path):
    for i in range(8):
        write_wav(tmp_path / f"{i}.wav", tone(200 + 40 * i, 0.3, 8000, seed=i), 8000)
    (tmp_path / "manifest.csv").write_text("path,label\n" + "".join(
        f"{i}.wav,{label}\n" for i, label in enumerate(["Normal"] * 3 + ["normal "] * 2 + ["murmur"] * 3)))
    report = validate(ingest(DataConfig(root=str(tmp_path)), progress=False), ValidateConfig(min_per_class=2),
                      progress=False)
    similar = [p for p in report.problems if p.check == "similar_labels"]
    assert similar and all(p.severity == "error" for p in similar)
    assert "labels 'Normal' (3 listed) and 'normal' (2 listed) differ only in case" in similar[0].reason


def test_class_folders_without_a_manifest(corpus: Path, tmp_path: Path):
    folders = tmp_path / "folders"
    shutil.copytree(corpus / "low", folders / "low")
    shutil.copytree(corpus / "high", folders / "high")
    ds = ingest(DataConfig(root=str(folders), manifest=None), progress=False)
    report = validate(ds, ValidateConfig(**CFG), progress=False)
    checks = {p.check for p in report.problems}
    assert "unlisted" not in checks and "missing" not in checks  # class folders list what is there
    assert {"truncated", "readable", "silence", "conflict"} <= checks


def audioflow_run(project: Path, *overrides: str) -> subprocess.CompletedProcess:
    small = ["train.epochs=2", "features.window_s=0.5", "model.cnn.channels=[8,16]", "validate.min_per_class=3",
             f"validate.sample_rates=[{SR}]", "data.group_column=speaker", "split.val_fraction=0.25",
             "split.test_fraction=0.25"]
    args = [a for kv in [*small, *overrides] for a in ("--set", kv)]
    return subprocess.run([str(BIN / "audioflow"), "run", "-q", *args], cwd=project, capture_output=True,
                          text=True, timeout=600)


@pytest.mark.slow
def test_whole_pipeline_under_both_policies(corpus: Path, tmp_path: Path):
    project = tmp_path / "project"
    shutil.copytree(corpus, project / "data")
    shutil.copyfile(ROOT / "params.yaml", project / "params.yaml")

    failed = audioflow_run(project)
    assert failed.returncode != 0
    for where, _, severity in EXPECTED:
        if severity == "error" and where != DATASET:
            assert f"{where}: " in failed.stdout + failed.stderr, where
    assert not (project / "artifacts/features").exists()  # nothing read unvalidated data
    report = json.loads((project / "outputs/validation_report.json").read_text())
    assert report["ok"] is False and "Errors (" in (project / "outputs/validation_report.html").read_text()

    done = audioflow_run(project, "validate.on_error=quarantine")
    assert done.returncode == 0, done.stderr[-4000:]
    quarantine = pd.read_csv(project / "artifacts/validate/quarantine.csv", keep_default_na=False)
    assert set(quarantine["path"]) == LEFT_OUT and (quarantine["reason"] != "").all()
    split = pd.read_csv(project / "artifacts/split/split.csv", keep_default_na=False)
    index = pd.read_csv(project / "artifacts/features/index.csv", keep_default_na=False)
    listed = pd.read_csv(project / "artifacts/ingest/files.csv", keep_default_na=False)
    used = set(listed["path"]) - LEFT_OUT
    assert set(split["path"]) == used and set(index["path"]) == used  # every valid recording, nothing else
    summary = json.loads((project / "outputs/validation_report.json").read_text())["summary"]
    assert summary["n_used"] == len(used) and summary["n_used"] + summary["n_quarantined"] == summary["n_listed"]
    assert (f"validation   {len(used)} of 27 listed recordings used, {len(LEFT_OUT)} left out (quarantine.csv)"
            in done.stdout), done.stdout
    assert json.loads((project / "outputs/metrics.json").read_text())["split"]["test"] > 0
    for name in ("files", "label_counts"):  # the GX suites and GX's own results, beside the report
        suite = json.loads((project / f"artifacts/validate/gx_{name}_suite.json").read_text())
        assert suite["expectations"] and json.loads(
            (project / f"artifacts/validate/gx_{name}_result.json").read_text())["results"]
    assert sf.info(str(project / "data/high/rate8k.wav")).samplerate == 8000  # the data is never touched


def test_the_console_names_errors_and_counts_the_rest(corpus: Path, tmp_path: Path):
    """`audioflow validate DIR`: every error by name; a line per kind of warning or info (the
    check, how many files, the first ones, where the list is); -v: every file, as `path: reason`."""
    def console(*extra: str) -> list[str]:
        p = subprocess.run([str(BIN / "audioflow"), "validate", str(corpus), "-q", "--outputs", str(tmp_path / "o"),
                            "--set", f"validate.sample_rates=[{SR}]", "--set", "data.group_column=speaker", *extra],
                           capture_output=True, text=True, timeout=300, cwd=tmp_path)
        assert p.returncode == 1, p.stderr  # the corpus has errors
        return p.stdout.splitlines()

    grouped, every = console(), console("-v")
    errors = {w for w, _, sev in EXPECTED if sev == "error" and w != DATASET}
    for lines in (grouped, every):
        assert all(any(ln.startswith(f"{w}: ") for ln in lines) for w in errors), lines
    report = tmp_path / "o" / "validation_report.html"
    assert (f"unlisted (warning), 2 files: high/unlisted.wav, stray.wav; e.g. high/unlisted.wav: audio file under "
            f"the data root that manifest.csv does not list; every one in {report} and "
            f"{report.with_suffix('.json')}") in grouped
    assert "high/stereo.wav: 2 channels: mixed down to mono (info)" in grouped
    assert not any(ln.startswith("stray.wav") for ln in grouped)
    assert any(ln.startswith("stray.wav: ") and ln.endswith("(warning)") for ln in every), every
    assert len(every) > len(grouped)
