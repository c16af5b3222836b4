"""What every stage module uses: the ``Stage`` declaration, its params keys, its folder's
``params.json`` and the files it publishes.

Standard library only (and ``audioflow.atomic``): a stage's code dependencies are its own module
plus what it imports, so this module stays small and imports nothing heavy.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

from audioflow import atomic
from audioflow.atomic import atomic_dir  # noqa: F401  (every stage writes its folder with it)

if TYPE_CHECKING:
    from audioflow.config import Params

# A view's kind: HTML, Markdown, flat numeric metrics, a confusion matrix ``(html, labels,
# counts)`` (ZenML shows the HTML, KFP the counts) and one ROC curve ``(fpr, tpr, threshold,
# what)`` (KFP only).
VIEW_KINDS = ("html", "markdown", "metrics", "confusion", "roc")
FOLDS = "folds"  # under artifacts/: one folder per cross-validation fold
SERVING = "serving.json"  # evaluate -> export: the temperature and operating point the model carries


def expand(reads: tuple[str, ...]) -> tuple[str, ...]:
    """Dotted params.yaml keys from a declaration's ``reads``: ``section.*`` stands for every key
    of that section, in order, and ``!section.key`` leaves one out. Unknown keys raise."""
    from audioflow.config import Params  # here, not at import: declarations load without pydantic

    sections = {f.alias or n: f.annotation for n, f in Params.model_fields.items()}
    out: list[str] = []
    for name in (r for r in reads if not r.startswith("!")):
        section, _, key = name.partition(".")
        if section not in sections:
            raise ValueError(f"{name}: params.yaml has no section {section!r}")
        fields = list(sections[section].model_fields)
        if key == "*":
            out.extend(f"{section}.{k}" for k in fields)
        elif key.split(".")[0] in fields:
            out.append(name)
        else:
            raise ValueError(f"{name}: params.yaml's {section} has no key {key.split('.')[0]!r}")
    left_out = {r[1:] for r in reads if r.startswith("!")}
    if unknown := left_out - set(out):
        raise ValueError(f"{sorted(unknown)}: left out but not read")
    return tuple(k for k in out if k not in left_out)


def pick(d: dict[str, Any], dotted: tuple[str, ...]) -> dict[str, Any]:
    """The nested dict of just these dotted keys of ``d`` (a ``Params.to_dict()``)."""
    out: dict[str, Any] = {}
    for key in dotted:
        *parents, last = key.split(".")
        src, dst = d, out
        for p in parents:
            src, dst = src[p], dst.setdefault(p, {})
        dst[last] = src[last]
    return out


@dataclass(frozen=True)
class Stage:
    """One stage, declared once, in its own module beside its function. Every front follows it:

    - the CLI makes ``audioflow <name>``: the inputs' folders under ``artifacts/``, the
      function, the files it publishes to ``outputs/``;
    - ``dvc.yaml`` is generated from it (``python -m audioflow.stages.generate``): ``params``
      (``reads``, expanded) as the stage's exact keys, ``inputs`` as data dependencies, ``code`` (its
      module and what it imports) as code dependencies, ``folder`` and ``publishes`` as outputs
      (``dvc`` holds what DVC needs besides: files read from a folder, outputs kept across runs);
    - the ZenML steps (``steps/stages.py``) and the KFP components
      (``pipelines/kubeflow_components.py``) are generated from it too (``python -m
      audioflow.stages.generate``): their inputs, outputs and dashboard views; both pipelines
      wire them from ``stages.plan`` and hand each exactly ``params``.

    The function is ``fn(params, *inputs, out, *, progress, publish_to)``: its input arguments
    are named after the artifacts it reads, in this order.
    """

    name: str  # the command, the dvc.yaml stage, the ZenML step, the KFP component
    help: str
    fn: Callable = field(repr=False)
    output: str  # the artifact it writes (a folder): its name in ZenML and KFP
    folder: str  # that folder under artifacts/ for the CLI and DVC
    # The params.yaml keys it reads (``section.*``: all of a section; ``!section.key``: but that
    # one); exactly these reach it (``params``). Kept as written so that a declaration loads in
    # the torch-free core install (no pydantic, which expanding them needs).
    reads: tuple[str, ...]
    inputs: tuple[str, ...] = ()  # the artifacts it reads (featurize and split: validation, the gate)
    publishes: tuple[tuple[str, str], ...] = ()  # (file in its folder, file in outputs/)
    # split.strategy kfold only: one instance per fold (split.folds), each cached on its own;
    # ``folder`` has a ``{fold}`` field and the function takes ``fold=``.
    per_fold: bool = False
    # Under kfold, also reads this per-fold artifact of every fold (keyword ``<artifact>s=``).
    reads_folds: str | None = None
    dvc: dict[str, Any] = field(default_factory=dict, repr=False)  # dvc.yaml extras (see dvcyaml.py)
    # What an orchestrator's dashboard shows beside the folder: ``(name, kind)``, each one output
    # of the ZenML step and the KFP component (``VIEW_KINDS``), filled by ``dashboard``.
    views: tuple[tuple[str, str], ...] = ()
    # ``dashboard(out, result, fold) -> (metadata, {view: content})``: the figures the fronts record
    # as metadata and the views' contents, from the stage's folder (``result`` is None when the
    # stage raised after writing it: evaluate's quality gate).
    dashboard: Callable | None = field(default=None, repr=False)
    headline: bool = False  # its metadata is the run's headline (ZenML: also on the run and the model version)
    model: bool = False  # its output is a model (KFP's Model artifact type; else Dataset)
    resumable: bool = False  # the function takes ``mirror=`` and ``on_epoch=`` (train)
    sharded: bool = False  # the function takes ``shard=(i, n)`` (featurize under KFP's fan-out)
    scratch: tuple[str, ...] = ()  # folders in its output an orchestrator does not store (emptied checkpoints)

    @cached_property
    def params(self) -> tuple[str, ...]:
        """Its exact params.yaml keys, in order (``expand(reads)``)."""
        return expand(self.reads)

    @property
    def sections(self) -> tuple[str, ...]:
        """The params.yaml sections its keys are in, in order (ZenML's ``<section>_cfg`` parameters)."""
        return tuple(dict.fromkeys(k.split(".")[0] for k in self.reads if not k.startswith("!")))

    @property
    def module(self) -> str:
        return self.fn.__module__

    def picked(self, params: Params) -> dict[str, Any]:
        """Its keys of ``params``, nested by section: what a front hands it."""
        return pick(params.to_dict(), self.params)


def write_params(params: Params, stage: Stage, out: Path, **resolved) -> None:
    """``out/params.json``: the stage's keys of ``params`` (and what it resolved, e.g. the
    feature spec ``auto`` became), so every front records the same parameters."""
    out.mkdir(parents=True, exist_ok=True)
    body = stage.picked(params) | ({"resolved": resolved} if resolved else {})
    (out / "params.json").write_text(json.dumps(body, indent=2, sort_keys=True) + "\n")


def publish(stage: Stage, folder: Path, outputs: Path | None) -> None:
    """Copy the files people look at (``Stage.publishes``) from a stage's folder to ``outputs``."""
    if outputs is None:
        return
    outputs.mkdir(parents=True, exist_ok=True)
    for src, dst in stage.publishes:
        atomic.copy_file(folder / src, outputs / dst)


def png_page(path: Path, title: str) -> str:
    """A PNG embedded in a small HTML page, for dashboards that show HTML artifacts."""
    import base64
    import html

    data = base64.b64encode(path.read_bytes()).decode()
    t = html.escape(title)
    return f'<h3>{t}</h3><img alt="{t}" src="data:image/png;base64,{data}"/>'
