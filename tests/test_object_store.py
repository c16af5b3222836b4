"""Data, DVC remotes and ZenML artifacts in object storage: a real S3 server (SeaweedFS) on 127.0.0.1.

The library reads credentials and the endpoint from the standard AWS_* variables only; the
same recordings give the same fingerprint, features and metrics wherever they are read from.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import yaml

from audioflow import audio
from audioflow.config import DataConfig, ValidateConfig
from audioflow.manifest import Dataset, ManifestError, ingest
from tests.conftest import tone, write_wav

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
SMALL = ["--set", "train.epochs=2", "--set", "features.window_s=1.5", "--set", "model.channels=[8,16]",
         "--set", "validate.min_per_class=3"]


@pytest.fixture
def s3_env(s3_server, monkeypatch):
    """The AWS_* variables of the test server in this process, as a user would set them."""
    for key, value in s3_server.env().items():
        monkeypatch.setenv(key, value)
    return s3_server


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> Path:
    from audioflow.demo import write_demo_dataset

    root = tmp_path_factory.mktemp("demo") / "data"
    write_demo_dataset(root, n_recordings=60, seed=5, min_s=2.0, max_s=3.0, progress=False)
    return root


@pytest.fixture(scope="module")
def demo_url(s3_server, demo) -> str:
    url = f"s3://{s3_server.make_bucket('data')}/demo"
    s3_server.upload(demo, url)
    return url


def upload_dir(s3_server, local: Path) -> str:
    url = f"s3://{s3_server.make_bucket('data')}/root"
    s3_server.upload(local, url)
    return url


# ---------------------------------------------------------------- the library on S3


def test_audio_reads_objects_as_it_reads_files(s3_env, tmp_path: Path):
    local = write_wav(tmp_path / "a.wav", np.stack([tone(440, 0.3, 8000), tone(220, 0.3, 8000)], 1), 8000)
    (tmp_path / "empty.wav").write_bytes(b"")
    (tmp_path / "garbage.wav").write_bytes(b"RIFF\x00\x00not really a wav" * 3)
    url = upload_dir(s3_env, tmp_path)
    data, sr = audio.read(f"{url}/a.wav")
    want, want_sr = audio.read(local)
    assert sr == want_sr and np.array_equal(data, want)
    assert audio.info(f"{url}/a.wav") == audio.info(local)
    np.testing.assert_array_equal(audio.load(f"{url}/a.wav", 16000), audio.load(local, 16000))
    for name, reason in (("missing.wav", "file not found"), ("empty.wav", "empty file (0 bytes)"),
                         ("garbage.wav", f"unreadable or unsupported format (Error opening '{url}/garbage.wav'")):
        for fn in (audio.read, audio.info):
            with pytest.raises(audio.AudioError) as e:
                fn(f"{url}/{name}")
            assert str(e.value).startswith(f"{url}/{name}: {reason}"), str(e.value)


def test_ingest_local_and_s3_agree(s3_env, tone_dataset: Path, tmp_path: Path):
    url = upload_dir(s3_env, tone_dataset)
    here = ingest(DataConfig(root=str(tone_dataset), group_column="speaker"), progress=False)
    there = ingest(DataConfig(root=url, group_column="speaker"), progress=False)
    assert there.fingerprint == here.fingerprint
    assert there.files.equals(here.files)
    there.save(tmp_path / "ingest")
    assert json.loads((tmp_path / "ingest/dataset.json").read_text())["root"] == url  # as configured
    again = Dataset.load(tmp_path / "ingest")
    assert str(again.root) == url and again.location("low/s0_0.wav") == f"{url}/low/s0_0.wav"
    # A trailing slash names the same data.
    assert ingest(DataConfig(root=url + "/", group_column="speaker"), progress=False).fingerprint == here.fingerprint


def test_class_folders_on_s3(s3_env, tmp_path: Path):
    for label in ("dog", "cat"):
        for k in range(2):
            write_wav(tmp_path / label / "sub" / f"{k}.wav", tone(200 + k, 0.1, 8000), 8000)
    write_wav(tmp_path / ".hidden" / "x.wav", tone(200, 0.1, 8000), 8000)
    (tmp_path / "notes.txt").write_text("ignored")
    (tmp_path / "dog" / "notes.txt").write_text("not audio")
    url = upload_dir(s3_env, tmp_path)
    there = ingest(DataConfig(root=url, manifest=None), progress=False)
    here = ingest(DataConfig(root=str(tmp_path), manifest=None), progress=False)
    assert there.files["path"].tolist() == ["cat/sub/0.wav", "cat/sub/1.wav", "dog/sub/0.wav", "dog/sub/1.wav"]
    assert there.files.equals(here.files) and there.fingerprint == here.fingerprint


def test_missing_object_named_by_its_url(s3_env, tone_dataset: Path):
    (tone_dataset / "low/s1_0.wav").unlink()
    url = upload_dir(s3_env, tone_dataset)
    with pytest.raises(ManifestError) as e:
        ingest(DataConfig(root=url), progress=False)
    assert f"{url}/low/s1_0.wav: file not found" in str(e.value)
    with pytest.raises(ManifestError, match=f"data root {url}/nope does not exist"):
        ingest(DataConfig(root=f"{url}/nope"), progress=False)


def test_unreadable_object_reported_like_a_local_file(s3_env, tone_dataset: Path):
    from audioflow.validation import collect_facts, validate

    (tone_dataset / "mid/s2_1.wav").write_bytes(b"RIFF\x00\x00not really a wav" * 3)
    url = upload_dir(s3_env, tone_dataset)
    here = ingest(DataConfig(root=str(tone_dataset)), progress=False)
    there = ingest(DataConfig(root=url), progress=False)
    # The per-file facts (and so the report) are the same wherever the data lives.
    assert collect_facts(there, progress=False).equals(collect_facts(here, progress=False))
    report = validate(there, ValidateConfig(min_per_class=3), progress=False)
    assert not report.ok and report.summary["root"] == url
    (problem,) = [r for p, r in report.problems if p == "mid/s2_1.wav"]
    assert problem.startswith("unreadable or unsupported format (Error opening 'mid/s2_1.wav'")
    with pytest.raises(audio.AudioError, match=f"^{url}/mid/s2_1.wav: unreadable"):
        audio.load(there.location("mid/s2_1.wav"), 8000)


def test_manifest_path_leaving_the_root_refused(s3_env, tmp_path: Path):
    write_wav(tmp_path / "root/ok.wav", tone(300, 0.1, 8000), 8000)
    write_wav(tmp_path / "outside.wav", tone(300, 0.1, 8000), 8000)
    (tmp_path / "root/manifest.csv").write_text("path,label\nok.wav,a\n../outside.wav,a\n")
    url = upload_dir(s3_env, tmp_path)
    with pytest.raises(ManifestError) as e:
        ingest(DataConfig(root=f"{url}/root"), progress=False)
    assert f"{url}/root/manifest.csv:3: ../outside.wav: path leaves the data root" in str(e.value)
