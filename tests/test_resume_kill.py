"""Training survives SIGKILL: a `audioflow train` process killed mid-epoch resumes from its last
checkpoint and ends with the same metrics, byte for byte, and the same ONNX outputs as a run that
was never interrupted (CPU: two runs with the same seed are identical).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

BIN = Path(sys.executable).parent
AUDIOFLOW = str(BIN / "audioflow")
# Several epochs of a few seconds each on 60 demo recordings: time to be killed in the middle.
SETTINGS = ["--set", "train.epochs=6", "--set", "train.batch_size=8", "--set", "train.patience=20",
            "--set", "features.window_s=1.5", "--set", "model.cnn.channels=[8,16,32]",
            "--set", "validate.min_per_class=3"]


def env(project: Path) -> dict[str, str]:
    # A killed process cannot clean up its temporary folders: keep them inside the test's folder.
    scratch = project.parent / "tmp"
    scratch.mkdir(exist_ok=True)
    return os.environ | {"TMPDIR": str(scratch)}


def cli(project: Path, *args: str, artifacts: str = "artifacts", check: bool = True) -> subprocess.CompletedProcess:
    p = subprocess.run([AUDIOFLOW, *args, "--artifacts", artifacts, "--outputs", f"{artifacts}-out", *SETTINGS],
                       cwd=project, env=env(project), capture_output=True, text=True, timeout=900)
    if check:
        assert p.returncode == 0, f"audioflow {' '.join(args)}: {p.stdout[-2000:]}{p.stderr[-4000:]}"
    return p


def kill_mid_epoch(project: Path, artifacts: str, after_checkpoints: int = 2) -> None:
    """Start `audioflow train`; once ``after_checkpoints`` more epochs are checkpointed, wait half
    an epoch and SIGKILL it (no handler runs, nothing is flushed: a killed pod, an OOM kill)."""
    ckpt = project / artifacts / "train" / "checkpoint" / "last.pt"
    before = ckpt.stat().st_mtime_ns if ckpt.exists() else None  # a crashed run's, which it resumes
    proc = subprocess.Popen([AUDIOFLOW, "train", "-q", "--artifacts", artifacts, "--outputs", f"{artifacts}-out",
                             *SETTINGS], cwd=project, env=env(project), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        seen, stamps, deadline = None, [], time.monotonic() + 600
        while len(stamps) < after_checkpoints:
            assert proc.poll() is None, "training finished before it could be killed: make epochs longer"
            assert time.monotonic() < deadline
            if ckpt.exists() and ckpt.stat().st_mtime_ns not in (seen, before):
                seen = ckpt.stat().st_mtime_ns
                stamps.append(time.monotonic())
            time.sleep(0.02)
        epoch = stamps[-1] - stamps[-2]
        time.sleep(epoch / 2)
        assert proc.poll() is None, "training finished before it could be killed: make epochs longer"
        proc.send_signal(signal.SIGKILL)
        assert proc.wait(timeout=30) == -signal.SIGKILL
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=30)


def onnx_outputs(model: Path, clips: np.ndarray) -> np.ndarray:
    import onnxruntime as ort

    session = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: clips})[0]


@pytest.mark.slow
def test_sigkill_mid_epoch_resumes_to_the_same_result(tmp_path: Path):
    project = tmp_path / "project"
    project.mkdir()
    shutil.copyfile(Path(__file__).resolve().parents[1] / "params.yaml", project / "params.yaml")
    subprocess.run([AUDIOFLOW, "demo-data", "data", "--n-recordings", "60", "-q"], cwd=project, env=env(project),
                   check=True)
    for stage in ("ingest", "validate", "featurize", "split"):
        cli(project, stage, "-q")
    shutil.copytree(project / "artifacts", project / "killed")

    for stage in ("train", "evaluate", "export"):  # never interrupted
        cli(project, stage, "-q")
    full = json.loads((project / "artifacts/train/train.json").read_text())
    chosen, refit = full["epochs_run"], full["refit_epochs"]
    assert refit == full["best_epoch"] >= 2, full  # train.refit (the default): a second pass to kill
    # Killed twice: mid-epoch while the epoch is being chosen, then, resumed, mid-epoch in the
    # refit on train + val (after its first epoch's checkpoint).
    kill_mid_epoch(project, "killed")
    assert not (project / "killed/train/train.json").exists()  # it did not finish
    kill_mid_epoch(project, "killed", after_checkpoints=chosen - 2 + 1)
    assert not (project / "killed/train/train.json").exists()
    assert not (project / "killed/train/model").exists()  # written when training ends, not before
    resumed = cli(project, "train", artifacts="killed")
    assert "(resumed after epoch" in resumed.stderr, resumed.stderr
    history = json.loads((project / "killed/train/train.json").read_text())
    assert history["resumed_from_epoch"] >= chosen + 1 and history["refit_epochs"] == refit
    for stage in ("evaluate", "export"):
        cli(project, stage, "-q", artifacts="killed")

    # The same figures, byte for byte, and the same model.
    assert (project / "killed-out/metrics.json").read_bytes() == (project / "artifacts-out/metrics.json").read_bytes()
    assert (project / "killed-out/predictions.csv").read_bytes() == \
        (project / "artifacts-out/predictions.csv").read_bytes()
    assert (project / "killed/train/model/model.safetensors").read_bytes() == \
        (project / "artifacts/train/model/model.safetensors").read_bytes()
    losses = [[h["train_loss"] for h in _history(project / where)] for where in ("killed", "artifacts")]
    assert losses[0] == losses[1]
    # ONNX Runtime gives the same outputs for both exports on the same audio.
    clips = np.random.default_rng(0).normal(0, 0.1, (4, 6000)).astype(np.float32)
    a = onnx_outputs(project / "artifacts-out/model.onnx", clips)
    b = onnx_outputs(project / "killed-out/model.onnx", clips)
    assert np.array_equal(a, b)


def _history(artifacts: Path) -> list[dict]:
    import csv

    with open(artifacts / "train" / "history.csv") as f:
        return list(csv.DictReader(f))
