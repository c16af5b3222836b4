"""The training loop: AdamW, warm-up + cosine, clipping, AMP on CUDA, early stop, resume.

The best epoch (by the monitored validation metric, among the epochs that end with the lr
decayed to ``train.select_lr`` of its peak) is chosen; with ``train.refit`` (the
default) a second pass trains afresh on train + val for that many epochs. ``model/`` holds the
model that is exported (safetensors + JSON): the refit one, or without refit the chosen one;
``model/selected/`` the chosen one, which never heard val, for evaluate to calibrate on. After
every epoch of either pass the full state goes to ``checkpoint/last.pt``, so a crash resumes
where it stopped; it carries the chosen weights too, so the checkpoint alone resumes (a fresh
pod, or DVC, which removes the stage's outputs before it reruns it). The model folder is
written when training ends.

Both passes run the same epoch loop (``_run_epochs``) over the same pass over the batches
(``_epoch``); the pieces it calls live beside it: ``build`` (a pass's start), ``step`` and
``graph`` (a step, eager or as a CUDA graph), ``early_stopping``, ``resume`` (checkpoints),
``history``; ``state`` holds what they share.
"""

from __future__ import annotations

import json
import time
import warnings
from collections.abc import Callable
from functools import partial
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from audioflow.checkpoint import SELECTED, ModelMeta, save_model
from audioflow.config import Params
from audioflow.errors import AudioflowError
from audioflow.evaluation import aggregate_files, classification_metrics, predict_rows, rows_for
from audioflow.features import Features, scratch_compiler_cache
from audioflow.training.build import start_pass
from audioflow.training.device import pick_device
from audioflow.training.early_stopping import score
from audioflow.training.finetune import set_backbone_frozen
from audioflow.training.graph import GraphedStep, NotCapturable
from audioflow.training.history import HISTORY_COLUMNS, refit_row, write_history
from audioflow.training.loss import epoch_order
from audioflow.training.resume import load_checkpoint, restore_pass, restore_run, save_checkpoint
from audioflow.training.state import PassState, TrainResult, TrainState, dataset_fingerprint, model_hash, run_key
from audioflow.training.step import step_draws, step_loss


def train(
    features: Features,
    split_table: pd.DataFrame,
    params: Params,
    out_dir: str | Path,
    progress: bool = True,
    resume: bool = True,
    on_checkpoint: Callable[[Path], None] | None = None,
    on_epoch: Callable[[dict], None] | None = None,
) -> TrainResult:
    """Train the configured model on the train split, select on val, save the best.

    ``on_checkpoint(path)`` is called after every epoch with the freshly written
    ``checkpoint/last.pt``, e.g. to copy it where a restarted job finds it. ``on_epoch(row)``
    gets every epoch's figures (the ``history.csv`` row) as soon as they exist, for live
    progress; a resumed run first replays the epochs before the crash.
    """
    with scratch_compiler_cache(compiling=params.train.compile):
        return _train(features, split_table, params, Path(out_dir), progress, resume, on_checkpoint, on_epoch)


def _train(features: Features, split_table: pd.DataFrame, params: Params, out: Path, progress: bool,
           resume: bool, on_checkpoint: Callable[[Path], None] | None,
           on_epoch: Callable[[dict], None] | None) -> TrainResult:
    from tqdm import tqdm

    cfg = params.train
    (out / "checkpoint").mkdir(parents=True, exist_ok=True)
    device = pick_device(cfg.device)
    labels = features.labels
    label_pos = {lab: i for i, lab in enumerate(labels)}
    # Copies: pandas hands out read-only arrays, and torch warns when it indexes with one.
    train_rows, val_rows = (np.array(rows_for(features, split_table, part)) for part in ("train", "val"))
    if len(train_rows) == 0 or len(val_rows) == 0:
        raise ValueError(f"need train and val windows, got {len(train_rows)} and {len(val_rows)}")
    targets = torch.tensor(features.index["label"].map(label_pos).to_numpy(), dtype=torch.long)
    # train.epochs auto: the schedule's length from the count of training windows (config.py).
    epochs, patience = cfg.schedule(len(train_rows))
    cfg = cfg.model_copy(update={"epochs": epochs, "patience": patience})

    model_kwargs = {"n_mels": features.spec.n_mels, "n_classes": len(labels), **params.model.options}
    meta = ModelMeta(params.model.name, model_kwargs, labels, features.spec, model_hash(params, features),
                     dataset_fingerprint(features))

    # Resume only the same run: same model, training, features, data and split.
    run = TrainState(run_key(params, features, split_table), out / "checkpoint" / "last.pt",
                     TrainResult(out / "model", monitor=cfg.monitor, device=str(device), epochs=epochs,
                                 patience=patience))
    result = run.result
    saved = load_checkpoint(run) if resume else None
    if saved is not None:
        restore_run(run, saved)
        if progress:
            tqdm.write(f"train: resuming from {run.ckpt_path} after epoch {result.resumed_from_epoch}"
                       + (" (refit on train + val)" if run.phase == "refit" else ""))
    saved_refit = saved if run.phase == "refit" else None

    for row in result.history if on_epoch is not None else []:  # the epochs before a crash
        on_epoch(row)
    loop = partial(_run_epochs, run, targets=targets, cfg=cfg, device=device, progress=progress,
                   on_checkpoint=on_checkpoint, on_epoch=on_epoch)
    t0 = time.perf_counter()
    if run.phase == "select":
        fit = start_pass(features, params, meta, train_rows, targets, device, cfg.epochs, progress)
        if saved is not None:
            restore_pass(fit, saved, device)
        loop(fit, cfg.epochs, validate=partial(_validate, features=features, rows=np.sort(val_rows),
                                               targets=targets, label_pos=label_pos, device=device))
        if run.selection.best_state is None:
            raise AudioflowError("train: no epoch gave a finite validation score (the loss is not a number): "
                                 "lower train.lr or check the features")
    best_state = final = run.selection.best_state
    if cfg.refit:
        # train.refit: train afresh on train + val for the number of epochs chosen on val (the
        # warm-up + cosine schedule fitted to them, so it ends annealed), so the model that is
        # exported has heard every group but the test's.
        rows = np.sort(np.concatenate([train_rows, val_rows]))
        fit = start_pass(features, params, meta, rows, targets, device, result.best_epoch, progress=False)
        if saved_refit is not None:
            restore_pass(fit, saved_refit, device)
        else:
            run.phase, run.epoch = "refit", 0
        for row in result.refit_history[:run.epoch] if on_epoch is not None else []:
            on_epoch(refit_row(row, len(result.history)))
        result.refit_windows = len(rows)
        loop(fit, result.best_epoch)
        final = {k: v.detach().cpu() for k, v in fit.model.state_dict().items()}
    # Written at the end only (the checkpoint carries the weights until then): a crash leaves
    # the previous model or none, never one of this run's passes beside another run's.
    _save_state(meta, best_state, out / "model" / SELECTED)
    _save_state(meta, final, out / "model")
    result.seconds = time.perf_counter() - t0
    write_history(result.history, out, result.refit_history)
    (out / "train.json").write_text(json.dumps(result.summary(), indent=2) + "\n")
    # The checkpoint exists to survive a crash. A finished run removes it, so the next run
    # (new code, `dvc repro -f`) trains afresh instead of "resuming" a completed one.
    run.ckpt_path.unlink(missing_ok=True)
    return result


def _run_epochs(run: TrainState, fit: PassState, total: int, *, targets: torch.Tensor, cfg, device: torch.device,
                progress: bool, on_checkpoint: Callable[[Path], None] | None,
                on_epoch: Callable[[dict], None] | None, validate: Callable | None = None) -> None:
    """The epochs of ``run.phase`` from ``run.epoch`` up to ``total``: each one ``_epoch``, then
    in ``select`` the validation pass (``validate``), model selection and early stopping, then
    a checkpoint and ``on_epoch`` with the epoch's figures."""
    from tqdm import tqdm

    result, selection = run.result, run.selection
    select = run.phase == "select"
    epochs = tqdm(range(run.epoch, total), initial=run.epoch, total=total,
                  desc="train" if select else "refit on train + val", unit="epoch", disable=not progress,
                  leave=False)
    for epoch in epochs:
        if select and selection.exhausted(cfg.patience):
            result.stopped_early = True
            break
        te = time.perf_counter()
        row = {"epoch": epoch + 1, **_epoch(fit, targets, epoch, cfg, device)}
        if select:
            val_loss, m = validate(fit.model)
            row |= {"val_loss": val_loss, "val_accuracy": m["accuracy"],
                    "val_balanced_accuracy": m["balanced_accuracy"], "val_macro_f1": m["macro_f1"],
                    "seconds": round(time.perf_counter() - te, 3)}
            row = {k: row[k] for k in HISTORY_COLUMNS}
            result.history.append(row)
            # train.select_lr: only an epoch that ends with the lr decayed far enough is a candidate,
            # and the schedule's last (a warm-up as long as the schedule never decays).
            candidate = row["lr"] <= cfg.select_lr * cfg.lr or epoch + 1 == total
            if candidate and selection.observe(score(m, val_loss, cfg.monitor), fit.model):
                result.best_epoch = epoch + 1
                result.best_metric = val_loss if cfg.monitor == "loss" else m[cfg.monitor]
            epochs.set_postfix(loss=f"{row['train_loss']:.3f}", val_f1=f"{m['macro_f1']:.3f}")
        else:
            row["seconds"] = round(time.perf_counter() - te, 3)
            result.refit_history.append(row)
            epochs.set_postfix(loss=f"{row['train_loss']:.3f}")
        run.epoch = epoch + 1
        save_checkpoint(run, fit, device, on_checkpoint)
        if on_epoch is not None:
            on_epoch(row if select else refit_row(row, len(result.history)))
    else:
        if select:
            result.stopped_early = selection.exhausted(cfg.patience) and len(result.history) < cfg.epochs


def _validate(model: nn.Module, *, features: Features, rows: np.ndarray, targets: torch.Tensor,
              label_pos: dict[str, int], device: torch.device) -> tuple[float, dict]:
    """The validation pass over the (sorted) val windows: the window-level loss and the
    per-recording metrics."""
    logits = predict_rows(model, features.array, rows, device)
    val_loss = float(F.cross_entropy(torch.from_numpy(logits), targets[rows]))
    per_file = aggregate_files(features, rows, logits)
    m = classification_metrics(per_file["actual"].map(label_pos).to_numpy(),
                               per_file["predicted"].map(label_pos).to_numpy(), features.labels)
    return val_loss, m


def _step_loss(fit: PassState, rows: np.ndarray, targets: torch.Tensor, cfg, device: torch.device,
               frozen: bool) -> torch.Tensor:
    """One step's forward and backward, leaving clipped gradients for the optimizer: replayed
    as a CUDA graph where it may be (a full batch, the backbone not frozen), else eagerly."""
    draws, white = step_draws(fit, rows, targets, cfg)
    if fit.graphable and not frozen and len(rows) == cfg.batch_size:
        if fit.graph is None:
            try:
                fit.graph = GraphedStep(fit, cfg, device, draws, white)
            except NotCapturable as exc:  # e.g. a registered model that reads a value on the host
                fit.graphable = False
                warnings.warn(f"train: the training step waits for the GPU, so it cannot be replayed as a CUDA "
                              f"graph and runs eagerly ({exc}). Set train.cuda_graph: false to silence this.",
                              stacklevel=2)
        if fit.graph is not None:
            return fit.graph(draws, white)
    loss = step_loss(fit, fit.batches.place(draws), white, cfg, device)
    # A graph's gradients stay where it writes them: zeroed, not dropped, between its replays.
    fit.optimizer.zero_grad(set_to_none=fit.graph is None)
    fit.scaler.scale(loss).backward()
    fit.scaler.unscale_(fit.optimizer)
    nn.utils.clip_grad_norm_(fit.model.parameters(), cfg.grad_clip)
    return loss


def _epoch(fit: PassState, targets: torch.Tensor, epoch: int, cfg, device: torch.device) -> dict:
    """One epoch over ``fit.rows``, augmented: the mean training loss and the time it took."""
    model = fit.model
    model.train()
    frozen = epoch < cfg.freeze_epochs
    set_backbone_frozen(model, frozen)
    if frozen:  # its gradients are for every parameter
        fit.graph = None
    order = epoch_order(fit.rows, targets[fit.rows], cfg.sampler, fit.gen)
    # Summed on the device: a float() per batch would wait for the GPU at every step.
    loss_sum, seen = torch.zeros((), dtype=torch.float64, device=device), 0
    te = time.perf_counter()
    for i in range(0, len(order), cfg.batch_size):
        rows = order[i : i + cfg.batch_size]
        if len(rows) < 2:  # batch norm cannot train on a single example
            continue
        loss = _step_loss(fit, np.sort(rows), targets, cfg, device, frozen)
        fit.scaler.step(fit.optimizer)
        fit.scaler.update()
        fit.scheduler.step()
        loss_sum += loss.detach().double() * len(rows)
        seen += len(rows)
    train_loss = float(loss_sum) / max(seen, 1)  # waits for the device's last batch
    return {"train_loss": train_loss, "backbone_frozen": frozen,
            "train_seconds": round(time.perf_counter() - te, 3), "lr": fit.optimizer.param_groups[-1]["lr"]}


def _save_state(meta: ModelMeta, state: dict[str, torch.Tensor], folder: Path) -> None:
    model = meta.build()
    model.load_state_dict(state)
    save_model(model, meta, folder)
