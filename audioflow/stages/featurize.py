"""featurize: decode, resample, window and compute log-mel features of what validation passed."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from audioflow.stages.base import Stage, atomic_dir, write_params
from audioflow.stages.validated import FACTS, QUARANTINE, headers, validated

if TYPE_CHECKING:
    from audioflow.config import Params


def featurize(params: Params, dataset: Path, validation: Path, out: Path, *, progress: bool = True,
              publish_to: Path | None = None, shard: tuple[int, int] = (0, 1)):
    """Log-mel windows of every usable recording, or of one contiguous shard of them (``merge_features``)."""
    from audioflow.features import Features
    from audioflow.features import featurize as _featurize

    with atomic_dir(out) as tmp:
        feats = _featurize(validated(dataset, validation), params.features, tmp, progress=progress, shard=shard,
                           headers=headers(validation))
        extra = {"shard": list(shard)} if shard != (0, 1) else {}
        write_params(params, STAGE, tmp, spec=feats.spec.to_dict(), **extra)
    return Features.load(out)


def merge_features(params: Params, parts: list[Path], out: Path):
    """Featurize shards joined in order: the same folder, byte for byte, as one featurize."""
    from audioflow.features import Features
    from audioflow.features import merge_features as _merge

    with atomic_dir(out) as tmp:
        feats = _merge(parts, tmp)
        write_params(params, STAGE, tmp, spec=feats.spec.to_dict())
    return Features.load(out)


def dashboard(out: Path, feats, fold: str | None):
    return {"n_windows": len(feats.index), "spec": feats.spec.to_dict()}, {}


# features.shards is not one of its keys: how many tasks featurize on Kubeflow changes no byte.
STAGE = Stage("featurize", "decode, resample, window and compute log-mel features", featurize,
              output="features", folder="features",
              reads=("features.*", "!features.shards"),
              inputs=("dataset", "validation"), dvc={"files": {"validation": (QUARANTINE, FACTS)}},
              dashboard=dashboard, sharded=True)
