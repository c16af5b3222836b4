"""The files every front is derived into from the stage declarations, written by one command:

    uv run python -m audioflow.stages.generate --write    # or --check: exit 1 when one is stale

- ``dvc.yaml``: a DVC stage per stage (``dvcyaml.render``);
- ``steps/stages.py``: a ZenML step per stage (inputs as artifacts, one ``<section>_cfg`` parameter
  per params section, the output folder and the dashboard views as named outputs);
- ``pipelines/kubeflow_components.py``: a KFP lightweight component per stage that is not per
  fold (KFP ships a component's source text to the pod, so each must be real source, not made
  at run time).

The generated steps and components hold no logic: each calls ``audioflow.stages.orchestrated``.
tests/test_stage_contract.py fails while a committed file differs from what this writes.
"""

from __future__ import annotations

import argparse
import sys
import textwrap
from pathlib import Path

from audioflow.stages import PRODUCER, STAGES, Stage

COMMAND = "uv run python -m audioflow.stages.generate --write"
ZENML = Path("steps/stages.py")
KFP = Path("pipelines/kubeflow_components.py")
ZENML_VIEW = {"html": "HTMLString", "markdown": "MarkdownString", "metrics": "dict", "confusion": "HTMLString"}
KFP_VIEW = {"html": "HTML", "markdown": "Markdown", "metrics": "Metrics", "confusion": "ClassificationMetrics",
            "roc": "ClassificationMetrics"}


def _header(what: str) -> str:
    return (f'"""{what}.\n\nGenerated from the stage declarations (audioflow/stages/) by\n\n'
            f"    {COMMAND}\n\n"
            "Do not edit by hand: change a stage's declaration, then run that (tests/test_stage_contract.py\n"
            'fails while this file differs from what it writes).\n"""\n')


def _def(name: str, params: list[str], returns: list[str] | None, doc: str, body: list[str]) -> list[str]:
    lines = [f"def {name}("] + [f"    {p}," if "#" not in p else f"    {p.replace('  #', ',  #', 1)}"
                                 for p in params]
    if returns is None:
        lines.append("):")
    elif len(returns) == 1:
        lines.append(f") -> {returns[0]}:")
    else:
        lines += [") -> tuple["] + [f"    {r}," for r in returns] + ["]:"]
    doc = textwrap.fill(f'"""{doc}."""', width=112, initial_indent="    ",
                        subsequent_indent="    ")
    return lines + [doc] + [f"    {b}" if b else "" for b in body]


def _names(stages) -> str:
    return ", ".join(f'"{s.name}"' for s in stages)


def _call(head: str, args: list[str]) -> list[str]:
    """``head(args)`` on one line, or one argument a line where that is too long."""
    one = f"{head}({', '.join(args)})"
    return [one] if len(one) <= 112 else [f"{head}("] + [f"    {a}," for a in args] + [")"]


def zenml_step(stage: Stage) -> list[str]:
    params = [f"{a}: Path" for a in stage.inputs] + [f"{s}_cfg: dict[str, Any]" for s in stage.sections]
    call = [f'"{stage.name}"'] + list(stage.inputs)
    if stage.per_fold:
        params.append("fold: str")
        call.append("fold=fold")
    if stage.reads_folds:
        many = f"{stage.reads_folds}s"
        params.append(f"{many}: list[Path] = []  # noqa: B006 (ZenML: a list of artifacts, or none)")
        call.append(f"folds={many}")
    call += [f"{s}_cfg={s}_cfg" for s in stage.sections]
    returns = [f'Annotated[Path, "{stage.output}"]'] + [f'Annotated[{ZENML_VIEW[kind]}, "{name}"]'
                                                         for name, kind in stage.views if kind in ZENML_VIEW]
    body = _call("return run_step", call)
    if len(returns) > 1:  # ZenML reads several outputs only from a `return a, b` in the source
        names = ", ".join([stage.output] + [name for name, kind in stage.views if kind in ZENML_VIEW])
        body = _call(f"{names} = run_step", call) + [f"return {names}"]
    return ["", "", f"@step(cache_policy=code_policy(\"{stage.name}\"))"] + \
        _def(stage.name, params, returns, stage.help, body)


def render_zenml() -> str:
    body = [line for stage in STAGES.values() for line in zenml_step(stage)]
    kinds = {ZENML_VIEW[k] for s in STAGES.values() for _, k in s.views if k in ZENML_VIEW} - {"dict"}
    head = [_header("The ZenML steps, one per stage"), "from pathlib import Path", "from typing import Annotated, Any",
            "", "from zenml import step"]
    if kinds:
        head.append(f"from zenml.types import {', '.join(sorted(kinds))}")
    head += ["", "from steps._common import code_policy, run_step", "", f"__all__ = [{_names(STAGES.values())}]"]
    return "\n".join(head + body) + "\n"


def kfp_component(stage: Stage) -> list[str]:
    def kind(artifact: str) -> str:
        return "Model" if PRODUCER[artifact].model else "Dataset"

    params = [f"{a}: Input[{kind(a)}]" for a in stage.inputs] + ["sections: str"]
    params.append(f"{stage.output}: Output[{kind(stage.output)}]")
    params += [f"{name}: Output[{KFP_VIEW[k]}]" for name, k in stage.views]
    if stage.resumable:
        params += ['checkpoint_root: str = ""', 'run_id: str = ""', 'checkpoint_run: str = ""']
    if stage.sharded:
        params += ["shard: int = 0", "n_shards: int = 1"]
    body = ["args = dict(locals())  # first: only the arguments", "from audioflow.stages.orchestrated import kfp_task",
            "", f'kfp_task("{stage.name}", args)']
    return ["", ""] + _def(stage.name, params, None, stage.help, body)


def render_kfp() -> str:
    stages = [s for s in STAGES.values() if not s.per_fold]
    sections = "".join(f'    ("{s.name}", str),\n' for s in stages)
    doc = ("the params.yaml keys each stage reads, with the run's overrides and data root, and the digest of the "
           "code each stage runs in this image (never cached, so a rebuilt image under the same tag reruns exactly "
           "the stages whose code changed)")
    configure = ["", "", "# Its outputs are spelled out: KFP runs this source text alone in the pod."] + _def(
        "configure", ["params_yaml: str", "overrides: dict", "data_root: str"],
        [f'NamedTuple("Sections", [\n{sections}])'], doc,
        ["from audioflow.stages.orchestrated import kfp_sections", "",
         "return kfp_sections(params_yaml, overrides, data_root)"])
    body = configure + [line for stage in stages for line in kfp_component(stage)]
    types = {"Input", "Output", "Dataset"} | {"Model" for s in stages if s.model} | \
        {KFP_VIEW[k] for s in stages for _, k in s.views}
    head = [_header("The Kubeflow Pipelines components, one per stage (not the per-fold ones)"),
            "# Lightweight components: KFP runs each function's source text alone in the steps image,",
            "# so each imports what it uses inside its body.",
            "from typing import NamedTuple", "",
            f"from kfp.dsl import {', '.join(sorted(types, key=lambda t: (not t.isupper(), t)))}", "",
            f'__all__ = ["configure", {_names(stages)}]']
    return "\n".join(head + body) + "\n"


def files() -> dict[Path, str]:
    """Each generated file and its text."""
    from audioflow.stages.dvcyaml import render

    return {Path("dvc.yaml"): render(), ZENML: render_zenml(), KFP: render_kfp()}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m audioflow.stages.generate",
                                 description="Write dvc.yaml, the ZenML steps and the KFP components from the stage "
                                             "declarations (audioflow/stages/), in the current folder.")
    ap.add_argument("--write", action="store_true", help="write the files (default: list them)")
    ap.add_argument("--check", action="store_true", help="exit 1 if a file differs from what it would write")
    args = ap.parse_args(argv)
    texts = files()
    if args.check:
        stale = [str(p) for p, text in texts.items() if not (p.is_file() and p.read_text() == text)]
        print(f"stale: {', '.join(stale)}: run {COMMAND}" if stale else "generated files are up to date")
        return 1 if stale else 0
    for path, text in texts.items():
        if args.write:
            from audioflow import atomic

            atomic.write_text(path, text)
        print(f"{'wrote' if args.write else 'would write'} {path} ({len(text.splitlines())} lines)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
