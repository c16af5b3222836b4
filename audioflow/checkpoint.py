"""Model files that carry their own config: safetensors weights + a JSON description.

Nothing here unpickles: weights load through safetensors, resume state through
``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from audioflow.atomic import atomic_path, write_bytes
from audioflow.features import FeatureSpec
from audioflow.models import create_model

WEIGHTS = "model.safetensors"
META = "model.json"
# Inside a trained model folder: the epoch chosen on val, trained on the train split alone (with
# train.refit the folder's own weights trained again on train + val; without, the same weights).
SELECTED = "selected"


@dataclass(frozen=True)
class ModelMeta:
    """What it takes to rebuild a trained model and to feed it."""

    model_name: str
    model_kwargs: dict[str, Any]
    labels: list[str]
    spec: FeatureSpec
    params_hash: str
    dataset_fingerprint: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "model_name": self.model_name,
            "model_kwargs": self.model_kwargs,
            "labels": self.labels,
            "spec": self.spec.to_dict(),
            "params_hash": self.params_hash,
            "dataset_fingerprint": self.dataset_fingerprint,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ModelMeta:
        return cls(d["model_name"], d["model_kwargs"], list(d["labels"]), FeatureSpec(**d["spec"]),
                   d["params_hash"], d["dataset_fingerprint"])

    def build(self) -> nn.Module:
        return create_model(self.model_name, **self.model_kwargs)


def save_model(model: nn.Module, meta: ModelMeta, out_dir: str | Path) -> Path:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    with atomic_path(out / WEIGHTS) as tmp:
        save_file(state, str(tmp), metadata={"params_hash": meta.params_hash})
    write_bytes(out / META, (json.dumps(meta.to_dict(), indent=2) + "\n").encode())
    return out


def load_model(model_dir: str | Path, device: str | torch.device = "cpu") -> tuple[nn.Module, ModelMeta]:
    d = Path(model_dir)
    if not (d / WEIGHTS).exists() or not (d / META).exists():
        raise FileNotFoundError(f"{d}: expected {WEIGHTS} and {META} (a trained model folder)")
    meta = ModelMeta.from_dict(json.loads((d / META).read_text()))
    model = meta.build()
    model.load_state_dict(load_file(str(d / WEIGHTS), device=str(device)))
    return model.to(device).eval(), meta
