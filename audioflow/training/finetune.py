"""Fine-tuning (``train.init_from``): the earlier model folder it names, the weights a run
starts from (all but the input statistics, and the classifier for another label set), their
hash for the run's identity, and freezing the backbone for ``train.freeze_epochs``."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch
from torch import nn

from audioflow.checkpoint import META, WEIGHTS, ModelMeta
from audioflow.errors import AudioflowError


class FineTuneError(AudioflowError, ValueError):
    pass


def _init_dir(init_from: str) -> Path:
    """The model folder ``train.init_from`` names: a model/ folder, or a train stage folder."""
    d = Path(init_from)
    if (d / "model" / META).is_file():
        d = d / "model"
    if not (d / META).is_file() or not (d / WEIGHTS).is_file():
        raise FineTuneError(f"train.init_from={init_from}: no audioflow model here (expected {META} and "
                            f"{WEIGHTS}, in it or in its model/ folder)")
    return d


def _init_weights_hash(init_from: str) -> str:
    # The weights' content, not the path: a retrained base model is another run.
    return hashlib.sha256((_init_dir(init_from) / WEIGHTS).read_bytes()).hexdigest()[:16]


def init_state(init_from: str, meta: ModelMeta, model: nn.Module) -> tuple[dict[str, torch.Tensor], bool]:
    """The weights to start from: everything of the earlier model but its input statistics (this
    data's are used) and, for another label set, its classifier. Returns (state, same labels)."""
    from safetensors.torch import load_file

    d = _init_dir(init_from)
    base = ModelMeta.from_dict(json.loads((d / META).read_text()))
    theirs = {k: v for k, v in base.model_kwargs.items() if k != "n_classes"}
    ours = {k: v for k, v in meta.model_kwargs.items() if k != "n_classes"}
    if base.model_name != meta.model_name or theirs != ours:
        raise FineTuneError(
            f"train.init_from={init_from} is a {base.model_name} {theirs}; this run trains a "
            f"{meta.model_name} {ours}: set model.name and model.{base.model_name} (and features.n_mels) "
            "to the earlier model's")
    if (base.spec.level, base.spec.top_db) != (meta.spec.level, meta.spec.top_db):
        raise FineTuneError(
            f"train.init_from={init_from} was trained on features.level={base.spec.level} (top_db "
            f"{base.spec.top_db:g}); this run's features are level={meta.spec.level} (top_db {meta.spec.top_db:g}): "
            "set features.level and features.top_db to the earlier model's")
    same_labels = base.labels == meta.labels
    state = {k: v for k, v in load_file(str(d / WEIGHTS)).items()
             if k not in ("mel_mean", "mel_std") and (same_labels or not model.is_classifier(k))}
    return state, same_labels



def set_backbone_frozen(model: nn.Module, frozen: bool) -> None:
    """Freeze (or free) every parameter outside the classifier; a frozen backbone's batch norms
    keep their statistics (eval mode) too. Call after ``model.train()``."""
    for name, p in model.named_parameters():
        if not model.is_classifier(name):
            p.requires_grad_(not frozen)
    if frozen:
        for name, module in model.named_modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm) and not model.is_classifier(name):
                module.eval()

