"""One stage as an orchestrator's task: what the generated ZenML steps (``steps/stages.py``) and
KFP components (``pipelines/kubeflow_components.py``) call.

``run_task`` runs a stage into a folder with the arguments its declaration says it takes and
returns its dashboard's views; ``kfp_task`` is the whole body of a KFP component. Neither
imports an orchestrator: a KFP component runs this inside the steps image, where only
``audioflow`` is installed, and the artifacts it gets are duck-typed (``path``, ``metadata``,
``log_metric``, ...).
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from audioflow.stages import STAGES, params_from_json
from audioflow.stages.evaluate import QualityGateError
from audioflow.stages.train import Mirror, folder_mirror

if TYPE_CHECKING:
    from audioflow.config import Params


def run_task(name: str, params: Params, inputs: Sequence[Path], out: Path, *, fold: str | None = None,
             folds: Sequence[Path] = (), mirror: Mirror | None = None,
             on_epoch: Callable[[dict], None] | None = None, shard: tuple[int, int] = (0, 1),
             record: Callable[[dict], None] = lambda metadata: None) -> dict[str, Any]:
    """Run stage ``name`` on its input folders into ``out`` and return its views' contents
    (``Stage.views``; ``view(content)`` makes one). ``record`` gets the stage's metadata, also when
    the stage failed after writing its folder (evaluate's quality gate)."""
    stage = STAGES[name]
    dashboard = stage.dashboard or (lambda out, result, fold: ({}, {}))
    kwargs: dict[str, Any] = {}
    if stage.per_fold:
        kwargs["fold"] = fold
    if stage.reads_folds:
        kwargs[f"{stage.reads_folds}s"] = list(folds)
    if stage.resumable:
        kwargs |= {"mirror": mirror, "on_epoch": on_epoch}
    if stage.sharded:
        kwargs["shard"] = shard
    try:
        result = stage.fn(params, *inputs, out, progress=False, **kwargs)
    except QualityGateError:
        record(plain(dashboard(out, None, fold)[0]))  # what it measured, though the run stops
        raise
    for folder in stage.scratch:
        shutil.rmtree(out / folder, ignore_errors=True)
    metadata, views = dashboard(out, result, fold)
    record(plain(metadata))
    return views


def view(content: Any) -> Any:
    """A view's content (a dashboard may give a function that makes it, when it costs something)."""
    return content() if callable(content) else content


def plain(metadata: dict) -> dict:
    """JSON-plain metadata (numpy scalars as numbers) for the fronts' metadata stores."""
    return json.loads(json.dumps(metadata, default=lambda o: o.item() if hasattr(o, "item") else str(o)))


def kfp_task(name: str, args: dict[str, Any]) -> None:
    """The body of a KFP component: ``args`` are its arguments (artifacts, ``sections``, and
    ``checkpoint_root``/``run_id``/``checkpoint_run`` or ``shard``/``n_shards`` where the
    stage takes them). Metadata goes on the output artifact; each view into its own artifact."""
    stage = STAGES[name]
    out = args[stage.output]
    mirror = folder_mirror(args["checkpoint_root"], args["checkpoint_run"] or args["run_id"]) \
        if stage.resumable else None
    shard = (args["shard"], args["n_shards"]) if stage.sharded else (0, 1)
    views = run_task(name, params_from_json(args["sections"]), [Path(args[a].path) for a in stage.inputs],
                     Path(out.path), mirror=mirror, shard=shard, record=out.metadata.update)
    for view_name, kind in stage.views:
        content, artifact = view(views[view_name]), args[view_name]
        if kind in ("html", "markdown"):
            Path(artifact.path).write_text(content)
        elif kind == "metrics":
            for key, value in content.items():
                artifact.log_metric(key, value)
        elif kind == "confusion":
            artifact.log_confusion_matrix(content[1], content[2])
        elif kind == "roc":
            fpr, tpr, threshold, what = content
            artifact.log_roc_curve(fpr, tpr, threshold)
            artifact.metadata["curve"] = what


def kfp_sections(params_yaml: str, overrides: dict, data_root: str):
    """KFP's configure task: for each stage that is not per fold, ``sections_json`` of the run's
    params (params.yaml with the overrides and the data root), with the digest of its code."""
    from collections import namedtuple

    from audioflow.config import params_from_yaml
    from audioflow.stages import sections_json

    params = params_from_yaml(params_yaml, dict(overrides or {}, **{"data.root": data_root}))
    names = [name for name, stage in STAGES.items() if not stage.per_fold]
    return namedtuple("Sections", names)(*(sections_json(params, s, code=True) for s in names))
