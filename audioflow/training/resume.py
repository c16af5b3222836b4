"""Resume after a crash: the checkpoint ``checkpoint/last.pt`` written after every epoch (the
pass's model, optimizer, schedule, scaler, generator and global RNG states, plus the run's
selection and histories), read back only by a run with the same ``run_key``, and the seeding
and RNG state handling that make a resumed run draw what an uninterrupted one would."""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from audioflow.atomic import atomic_path
from audioflow.training.state import PassState, TrainState


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def rng_state(device: torch.device) -> dict[str, object]:
    """The global RNG states training draws from (dropout on CPU, or on every CUDA device)."""
    state: dict[str, object] = {"torch_rng": torch.get_rng_state()}
    if device.type == "cuda":
        state["cuda_rng"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict, device: torch.device) -> None:
    torch.set_rng_state(state["torch_rng"])
    # A checkpoint from a CPU run carries no CUDA state: resuming it on a GPU cannot be exact.
    if device.type == "cuda" and "cuda_rng" in state:
        torch.cuda.set_rng_state_all(list(state["cuda_rng"]))


def pass_state(fit: PassState, device: torch.device) -> dict:
    """What a checkpoint needs to continue this pass exactly."""
    return {"model": fit.model.state_dict(), "optimizer": fit.optimizer.state_dict(),
            "scheduler": fit.scheduler.state_dict(), "scaler": fit.scaler.state_dict(),
            "generator": fit.gen.get_state(), **rng_state(device)}


def restore_pass(fit: PassState, state: dict, device: torch.device) -> None:
    fit.model.load_state_dict(state["model"])
    fit.optimizer.load_state_dict(state["optimizer"])
    fit.scheduler.load_state_dict(state["scheduler"])
    fit.scaler.load_state_dict(state["scaler"])
    fit.gen.set_state(state["generator"])
    restore_rng_state(state, device)


def _atomic_torch_save(obj: dict, path: Path) -> None:
    with atomic_path(path) as tmp:
        torch.save(obj, tmp)


def save_checkpoint(run: TrainState, fit: PassState, device: torch.device,
                    on_checkpoint: Callable[[Path], None] | None) -> None:
    """The run's state after ``run.epoch`` epochs of ``run.phase`` to ``run.ckpt_path`` (replaced
    whole), then ``on_checkpoint(path)``. The best weights ride along, so the checkpoint alone
    resumes; plain tensors, numbers and JSON strings, so it loads with ``weights_only=True``."""
    result, selection = run.result, run.selection
    extra: dict = {"phase": run.phase, "epoch": run.epoch}
    if run.phase == "refit":
        extra["refit_history"] = json.dumps(result.refit_history)
    _atomic_torch_save({"run_key": run.key, **pass_state(fit, device), "best_score": selection.best_score,
                        "bad_epochs": selection.bad_epochs, "best_epoch": result.best_epoch,
                        "best_metric": result.best_metric, "history": json.dumps(result.history),
                        "best_model": selection.best_state, "stopped_early": result.stopped_early, **extra},
                       run.ckpt_path)
    if on_checkpoint is not None:
        on_checkpoint(run.ckpt_path)


def load_checkpoint(run: TrainState) -> dict | None:
    """The checkpoint at ``run.ckpt_path`` if there is one of this very run (same model, training,
    features, data and split: the same ``run_key``), else None."""
    if not run.ckpt_path.exists():
        return None
    state = torch.load(run.ckpt_path, map_location="cpu", weights_only=True)
    return state if state.get("run_key") == run.key else None


def restore_run(run: TrainState, state: dict) -> None:
    """The run's phase, epochs done, selection and histories as the checkpoint left them (the
    pass itself is restored by ``restore_pass`` once it is built)."""
    result, selection = run.result, run.selection
    run.phase = state.get("phase", "select")
    run.epoch = state["epoch"]
    selection.best_state = state.get("best_model")
    selection.best_score, selection.bad_epochs = state["best_score"], state["bad_epochs"]
    result.history = json.loads(state["history"])
    result.best_epoch, result.best_metric = state["best_epoch"], state["best_metric"]
    result.stopped_early = bool(state.get("stopped_early", False))
    result.refit_history = json.loads(state.get("refit_history", "[]"))
    result.resumed_from_epoch = len(result.history) + len(result.refit_history)
