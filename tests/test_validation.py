"""Data validation: facts per file, Great Expectations checks, reports and the error."""

from __future__ import annotations

import json
import logging
import shutil
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest

from audioflow.config import DataConfig, ValidateConfig
from audioflow.manifest import Dataset, ingest
from audioflow.validation import (
    DATASET,
    DataValidationError,
    Problem,
    ValidationReport,
    collect_facts,
    file_facts,
    validate,
)
from tests.conftest import tone, write_wav

SR = 8000
CFG = ValidateConfig(min_per_class=3, labels=["a", "b", "c"])

# Every bad file of the shared dataset and a word its reason must contain.
BAD = {
    "a/unreadable.wav": "unreadable or unsupported format",
    "a/empty.wav": "empty file",
    "a/silent.wav": "silent",
    "b/clipped.wav": "clipped",
    "b/nan.wav": "non-finite samples (NaN or Inf)",
    "b/short.wav": "too short",
    "xyz/odd.wav": "label 'xyz' not in allowed set ['a', 'b', 'c']",
    "b/dup.wav": "same content as a/a0.wav, which is labelled 'a'",
    "a/a0.wav": "same content as b/dup.wav, which is labelled 'b'",
    "a/a1_copy.wav": "same content as a/a1.wav (group 'g1')",
    "a/a1.wav": "same content as a/a1_copy.wav (group 'g9')",
}
# Quality concerns, and copies the split keeps together: warnings by default, the files stay usable.
WARNED = {"b/clipped.wav", "b/short.wav", "a/a1_copy.wav", "a/a1.wav"}


def _manifest(root: Path, rows: list[tuple[str, str, str]]) -> Dataset:
    lines = ["path,label,group"] + [",".join(r) for r in rows]
    (root / "manifest.csv").write_text("\n".join(lines) + "\n")
    return ingest(DataConfig(root=str(root), group_column="group"), progress=False)


def _good(root: Path, rel: str, seed: int) -> None:
    write_wav(root / rel, tone(300 + 50 * seed, 0.2, SR, seed=seed), SR)


@pytest.fixture(scope="module")
def clean_ds(tmp_path_factory: pytest.TempPathFactory) -> Dataset:
    root = tmp_path_factory.mktemp("clean")
    rows = []
    for i in range(6):
        label = "ab"[i % 2]
        _good(root, f"{label}/{i}.wav", seed=i)
        rows.append((f"{label}/{i}.wav", label, f"g{i}"))
    return _manifest(root, rows)


@pytest.fixture(scope="module")
def bad_ds(tmp_path_factory: pytest.TempPathFactory) -> Dataset:
    """Labels a and b with three good files each, every kind of bad file, one lone c."""
    root = tmp_path_factory.mktemp("bad")
    rows = []
    for label, base in (("a", 0), ("b", 10)):
        for k in range(3):
            _good(root, f"{label}/{label}{k}.wav", seed=base + k)
            rows.append((f"{label}/{label}{k}.wav", label, f"g{k}"))
    _good(root, "c/c0.wav", seed=40)  # one recording: below min_per_class
    _good(root, "xyz/odd.wav", seed=41)
    rng = np.random.default_rng(0)
    (root / "a/unreadable.wav").write_bytes(rng.bytes(3000))
    (root / "a/empty.wav").write_bytes(b"")
    write_wav(root / "a/silent.wav", np.zeros(SR // 2, np.float32), SR)
    square = np.sign(np.sin(2 * np.pi * 200 * np.arange(SR // 2) / SR)).astype(np.float32)
    write_wav(root / "b/clipped.wav", square, SR)
    nan = tone(500, 0.2, SR)
    nan[100] = np.nan
    write_wav(root / "b/nan.wav", nan, SR, subtype="FLOAT")
    write_wav(root / "b/short.wav", tone(500, 0.01, SR, seed=42), SR)
    shutil.copy(root / "a/a0.wav", root / "b/dup.wav")  # same content, other label
    shutil.copy(root / "a/a1.wav", root / "a/a1_copy.wav")  # same label, other group
    rows += [
        ("c/c0.wav", "c", "g0"),
        ("xyz/odd.wav", "xyz", "g0"),
        ("a/unreadable.wav", "a", "g0"),
        ("a/empty.wav", "a", "g0"),
        ("a/silent.wav", "a", "g0"),
        ("b/clipped.wav", "b", "g0"),
        ("b/nan.wav", "b", "g0"),
        ("b/short.wav", "b", "g0"),
        ("b/dup.wav", "b", "g0"),
        ("a/a1_copy.wav", "a", "g9"),
    ]
    return _manifest(root, rows)


@pytest.fixture(scope="module")
def bad_report(bad_ds: Dataset) -> ValidationReport:
    return validate(bad_ds, CFG, progress=False)


class _Tags(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[str] = []

    def handle_starttag(self, tag: str, attrs: list) -> None:
        self.tags.append(tag)


def test_clean_dataset_passes_and_writes_reports(clean_ds: Dataset, tmp_path: Path) -> None:
    report = validate(clean_ds, ValidateConfig(min_per_class=3), progress=False)
    assert report.ok and report.problems == [], report.problems
    report.raise_if_failed()  # no error
    s = report.summary
    assert s["n_files"] == 6 and s["n_failing_files"] == 0 and s["gx_success"] is True
    assert s["per_label"] == {"a": {"listed": 3, "usable": 3}, "b": {"listed": 3, "usable": 3}}
    assert all(e["success"] for e in s["expectations"].values())
    assert s["expectations"]["duration"]["element_count"] == 6

    report.to_json(tmp_path / "r/validation.json")
    data = json.loads((tmp_path / "r/validation.json").read_text())
    assert data["ok"] is True and data["problems"] == [] and len(data["facts"]) == 6
    report.to_html(tmp_path / "r/validation.html")
    parser = _Tags()
    parser.feed((tmp_path / "r/validation.html").read_text())
    assert "table" in parser.tags and "PASSED" in (tmp_path / "r/validation.html").read_text()


def test_json_report_written_in_blocks_holds_every_fact(clean_ds: Dataset, tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """The facts are written a block of rows at a time (memory stays flat on a large collection):
    the file is the report's dict exactly, across block boundaries and for an empty table."""
    import audioflow.validation as v

    report = validate(clean_ds, ValidateConfig(min_per_class=3), progress=False)
    expected = json.loads(json.dumps(report.to_dict()))
    for block in (1, 4, 6, 100):
        monkeypatch.setattr(v, "_BLOCK", block)
        report.to_json(tmp_path / f"{block}.json")
        assert json.loads((tmp_path / f"{block}.json").read_text()) == expected, block
    report.facts = report.facts.iloc[:0]
    report.to_json(tmp_path / "empty.json")
    assert json.loads((tmp_path / "empty.json").read_text())["facts"] == []


def test_report_facts_are_plain_python_with_none_for_missing(bad_report: ValidationReport) -> None:
    """Every fact of every row, unreadable files' missing ones included, as JSON writes it:
    Python scalars, None where the table has NA/NaN, equal to the table's own value."""
    import pandas as pd

    rows = bad_report.to_dict()["facts"]
    facts = bad_report.facts
    assert len(rows) == len(facts) and any(not r["readable"] for r in rows)
    for row, (_, want) in zip(rows, facts.iterrows(), strict=True):
        assert list(row) == list(facts.columns)
        for key, value in row.items():
            assert type(value) in (str, bool, int, float, type(None)), (key, type(value))
            assert (value is None) == bool(pd.isna(want[key])), key
            assert value is None or value == want[key], key
    assert any(r["sample_rate"] is None and r["rms_dbfs"] is None for r in rows)


def bad_ds_root(report: ValidationReport) -> str:
    return report.summary["root"]


def test_every_bad_file_is_reported_with_its_reason(bad_report: ValidationReport) -> None:
    report = bad_report
    assert not report.ok and not report.summary["gx_success"]
    by_path: dict[str, list[str]] = {}
    for p in report.problems:
        by_path.setdefault(p.path, []).append(p.reason)
        assert p.severity == ("warning" if p.path in WARNED or p.check == "group_labels" else "error"), p
    for path, expected in BAD.items():
        assert any(expected in r for r in by_path.get(path, [])), (path, by_path.get(path))
    # Unreadable files get their decode reason only, not range-check noise.
    for path in ("a/unreadable.wav", "a/empty.wav", "b/nan.wav"):
        assert len(by_path[path]) == 1, by_path[path]
    # Reasons quote the measured value.
    (silent,) = by_path["a/silent.wav"]
    assert "every sample is zero" in silent
    (clipped,) = by_path["b/clipped.wav"]
    assert "% of samples at full scale" in clipped
    (short,) = by_path["b/short.wav"]
    assert "0.010 s" in short
    # Good files stay clean; dataset-level problems come last.
    assert {"a/a2.wav", "b/b0.wav", "b/b1.wav", "b/b2.wav"}.isdisjoint(by_path)
    assert set(by_path) == set(BAD) | {DATASET}
    dataset = by_path[DATASET]
    assert any("label 'c' has 1 usable recording(s)," in r for r in dataset), dataset
    assert any("label 'xyz' has 0 usable recording(s) (1 listed)" in r for r in dataset), dataset
    # Of label a, a2 and the two copies of a1 (a warning: kept together by the split) stay usable.
    assert not any("label 'a'" in r for r in dataset), dataset
    assert report.summary["per_label"]["a"] == {"listed": 7, "usable": 3}
    assert report.summary["per_label"]["b"] == {"listed": 7, "usable": 5}  # + clipped, short: warnings
    # Decode errors name the file relative to the data root, not by its absolute path.
    (unreadable,) = by_path["a/unreadable.wav"]
    assert "'a/unreadable.wav'" in unreadable and str(bad_ds_root(report)) not in unreadable
    # Errors first, files before the dataset's; then the warnings.
    severities = [p.severity for p in report.problems]
    assert severities == sorted(severities, key=lambda sev: sev != "error")
    errors = [p.path for p in report.errors]
    assert all(x == DATASET for x in errors[errors.index(DATASET):])
    assert report.summary["n_failing_files"] == len(BAD) - len(WARNED)
    assert report.summary["n_warning_files"] == len(WARNED)
    assert report.summary["expectations"]["readable"]["unexpected_count"] == 3


def test_raise_if_failed_lists_every_bad_file(bad_report: ValidationReport, tmp_path: Path) -> None:
    bad_report.to_json(tmp_path / "v.json")  # NA facts of unreadable files serialize as null
    data = json.loads((tmp_path / "v.json").read_text())
    assert data["ok"] is False and len(data["problems"]) == len(bad_report.problems)
    with pytest.raises(DataValidationError) as info:
        bad_report.raise_if_failed()
    msg = str(info.value)
    for path in set(BAD) - WARNED:  # every error, by name
        assert f"\n{path}: " in msg, path
    assert info.value.problems == bad_report.problems
    # Errors (files one per line, then the dataset's), then one line per kind of warning: the
    # check, how many, their names (the copies of a1: one line for both).
    lines = msg.splitlines()[1:]
    errors = [ln for ln in lines if "(warning)" not in ln]
    assert lines[: len(errors)] == errors
    first_dataset = next(i for i, ln in enumerate(errors) if ln.startswith(DATASET))
    assert all(ln.startswith(DATASET) for ln in errors[first_dataset:])
    warned = lines[len(errors):]
    assert any(ln.startswith("duplicate (warning), 2 files: a/a1.wav, a/a1_copy.wav; e.g.") for ln in warned), warned
    assert all(any(path in ln for ln in warned) for path in WARNED), warned
    assert len(warned) == len({p.check for p in bad_report.problems if p.severity == "warning"})


def test_facts_reused_with_another_config(bad_ds: Dataset, bad_report: ValidationReport) -> None:
    facts = bad_report.facts
    assert not facts.set_index("path").loc["b/nan.wav", "finite"]
    # A sample rate outside the list is a warning by default; made an error here.
    cfg = ValidateConfig(min_per_class=1, sample_rates=[16000], min_duration_s=0.001,
                         severity={"sample_rate": "error", "clipping": "off"})
    report = validate(bad_ds, cfg, facts=facts, progress=False)
    reasons = {p.path: p.reason for p in report.problems}
    assert reasons["a/a2.wav"] == "sample rate 8000 Hz not in 16000 Hz (resampled)"
    assert "b/short.wav" not in {p.path for p in report.problems if "short" in p.reason}
    assert "clipping" not in {p.check for p in report.problems} and "clipping" not in report.summary["expectations"]
    # Every file now fails, so no class keeps a usable recording.
    assert Problem(DATASET, "n_classes", "error", "0 class(es) with usable recordings []; need at least 2") \
        in report.problems


def test_single_class_is_a_dataset_problem(clean_ds: Dataset) -> None:
    one = Dataset(clean_ds.root, clean_ds.files[clean_ds.files["label"] == "a"], "x")
    report = validate(one, ValidateConfig(min_per_class=1), progress=False)
    assert report.problems == [
        Problem(DATASET, "n_classes", "error", "1 class(es) with usable recordings ['a']; need at least 2")
    ]


def test_stereo_8k_facts(tmp_path: Path) -> None:
    left, right = tone(440, 0.5, SR), tone(660, 0.5, SR, seed=1)
    path = write_wav(tmp_path / "st.wav", np.stack([left, right], axis=1), SR)
    f = file_facts(path)
    assert f["readable"] and f["error"] == "" and f["finite"]
    assert (f["channels"], f["sample_rate"], f["frames"]) == (2, 8000, 4000)
    assert f["duration_s"] == pytest.approx(0.5)
    assert -15 < f["rms_dbfs"] < -8 and 0.25 < f["peak"] < 0.4  # ~0.3 amplitude sine
    assert f["clipped_fraction"] == 0.0


def test_collect_facts_columns_and_types(clean_ds: Dataset) -> None:
    facts = collect_facts(clean_ds, progress=False)
    assert list(facts.columns[:4]) == ["path", "label", "readable", "error"]
    assert facts["readable"].all() and (facts["sample_rate"] == SR).all()
    assert facts["sha256"].tolist() == clean_ds.files["sha256"].tolist()


def test_gx_stays_quiet(clean_ds: Dataset, capfd: pytest.CaptureFixture, caplog) -> None:
    caplog.set_level(logging.DEBUG)
    validate(clean_ds, ValidateConfig(min_per_class=3), progress=False)
    out, err = capfd.readouterr()
    assert out == "" and err == "", (out, err)  # no GX progress bars or prints
    assert not [r for r in caplog.records if r.name.startswith("great_expectations")]


@pytest.mark.parametrize(("name", "fmt", "subtype", "sr", "channels"), [
    ("a.flac", "FLAC", "PCM_24", 16000, 1),
    ("a.ogg", "OGG", "VORBIS", 22050, 2),
    ("a.aiff", "AIFF", "PCM_16", 8000, 1),
    ("a.mp3", "MP3", "MPEG_LAYER_III", 16000, 1),  # libsndfile >= 1.1 reads and writes MP3
])
def test_every_format_soundfile_reads_is_measured(tmp_path: Path, name, fmt, subtype, sr, channels) -> None:
    import soundfile as sf

    if fmt not in sf.available_formats():
        pytest.skip(f"this libsndfile has no {fmt}")
    signal = tone(440, 0.5, sr)
    sf.write(tmp_path / name, np.stack([signal] * channels, 1) if channels > 1 else signal, sr,
             format=fmt, subtype=subtype)
    f = file_facts(tmp_path / name)
    assert f["readable"] and f["error"] == "" and f["truncation"] == "", f
    assert (f["sample_rate"], f["channels"]) == (sr, channels)
    assert f["duration_s"] == pytest.approx(0.5, abs=0.06)  # MP3 frames pad a little
    assert -15 < f["rms_dbfs"] < -8


def test_console_lines_one_per_kind_of_warning():
    """410 stereo files and 4 clipped ones are two lines, not 414; errors stay one per file."""
    from audioflow.validation import console_lines

    problems = [Problem(f"s/{i:03d}.wav", "multichannel", "info", "2 channels: mixed down to mono") for i in range(410)]
    problems += [Problem(f"c/{i}.wav", "clipping", "warning", f"clipped: {i + 2}% of samples") for i in range(4)]
    problems += [Problem("b.wav", "readable", "error", "empty file (0 bytes)"),
                 Problem("a.wav", "silence", "error", "silent"), Problem("q.wav", "low_level", "warning", "low")]
    lines = console_lines(problems, left_out={"a.wav"}, where="out/report.html")
    assert lines == [
        "a.wav: silent (left out)",
        "b.wav: empty file (0 bytes)",
        "clipping (warning), 4 files: c/0.wav, c/1.wav, c/2.wav and 1 more; e.g. c/0.wav: clipped: 2% of samples; "
        "every one in out/report.html",
        "q.wav: low (warning)",
        "multichannel (info), 410 files: s/000.wav, s/001.wav, s/002.wav and 407 more; e.g. s/000.wav: 2 channels: "
        "mixed down to mono; every one in out/report.html",
    ]
    assert len(console_lines(problems, verbose=True)) == len(problems)


def test_great_expectations_imported_without_the_clients_it_would_not_use_leaves_them_importable() -> None:
    """validate imports GX as if the cloud and SQL clients were not installed (they cost seconds
    of its import and judging a pandas table never uses them); afterwards every one of them
    imports normally (object storage needs them) and GX still judges a table. A fresh process:
    this one may have imported GX already."""
    import subprocess
    import sys

    code = """
import sys
from audioflow.validation_gx import _GX_UNUSED_CLIENTS, _import_gx
gx = _import_gx()
hidden = [m for m in _GX_UNUSED_CLIENTS if m in sys.modules]
assert not hidden, hidden
import azure.storage.blob, boto3, google.cloud.storage, sqlalchemy
import pandas as pd
ctx = gx.get_context(mode="ephemeral")
batch = ctx.data_sources.add_pandas("p").add_dataframe_asset("a").add_batch_definition_whole_dataframe("b")
result = batch.get_batch(batch_parameters={"dataframe": pd.DataFrame({"x": [1, 2, 3]})}).validate(
    gx.expectations.ExpectColumnValuesToBeBetween(column="x", min_value=0, max_value=2))
assert not result.success and result.result["unexpected_count"] == 1, result
print("ok")
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0 and done.stdout.strip().endswith("ok"), done.stdout + done.stderr


@pytest.mark.parametrize("n", [1, 5, 1000, 2500])
def test_signal_stats_match_numpy_across_blocks(n: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """Sum of squares, peak |x| and the full-scale count, read in blocks (here of 64 samples),
    are numpy's own over the whole signal: negative peaks and clipping count too."""
    import audioflow.validation_facts as vf

    monkeypatch.setattr(vf, "_CHUNK", 64)
    rng = np.random.default_rng(n)
    for x in (rng.normal(0, 0.3, n), np.clip(rng.normal(0, 2.0, n), -1, 1), -np.abs(rng.normal(0, 0.1, n))):
        x = x.astype(np.float32)
        ref = np.abs(x).astype(np.float64)
        sum_sq, peak, clipped = vf._signal_stats(x)
        assert sum_sq == pytest.approx(float(np.sum(ref * ref)), rel=1e-12)
        assert peak == float(ref.max())
        assert clipped == int(np.count_nonzero(ref >= vf.CLIP_LEVEL))
