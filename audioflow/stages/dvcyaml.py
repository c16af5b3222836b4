"""dvc.yaml, generated from the stage declarations: ``python -m audioflow.stages.generate --write``.

Each stage becomes a DVC stage calling its CLI command with the default folders (``Layout``):
``params`` are its exact keys, ``deps`` the folders (or the one file) of the artifacts it reads
and the audioflow files it runs (``code_files``), ``outs`` its folder and what it publishes.
tests/test_stage_contract.py fails when the committed dvc.yaml is not what this writes.
"""

from __future__ import annotations

from audioflow.code_deps import ROOT
from audioflow.stages import PRODUCER, STAGES, Layout, Stage, code_files
from audioflow.stages.base import FOLDS

ITEM = "${item}"  # a per-fold stage's fold (``foreach: ${split.folds}``)

HEADER = """\
# Generated from the stage declarations (audioflow/stages/): do not edit by hand. After a change
# to a stage's declaration or to the code it imports, run
#     uv run python -m audioflow.stages.generate --write
# (tests/test_stage_contract.py fails while the committed file differs from what that writes).
#
# The audioflow pipeline for DVC: `dvc repro` runs what changed, `dvc exp run -S key=value`
# tries a parameter. Every stage calls the same CLI (and so the same stage function) as
# `audioflow run`, with params.yaml and the default folders. What reruns a stage, and only that:
#   params  the exact params.yaml keys the stage reads (its declaration; tests/test_stage_params.py
#           runs every stage and checks it reads nothing else), recorded in its params.json;
#   deps    the previous stages' outputs it reads, and the audioflow files it runs: its module
#           in audioflow/stages/ and, transitively, every module that imports (audioflow.code_deps).
#           The command-line wrapper is not one of them: a new help text retrains nothing.
#
# Cross-validation (split.strategy: kfold): train_fold and evaluate_fold exist once per entry of
# split.folds (`foreach`; none with the default []), each cached on its own as
# train_fold@<fold> / evaluate_fold@<fold>; evaluate then reads every fold's folder under
# artifacts/folds and reports their mean and std. split writes artifacts/folds/folds.json (the
# folds, none by default) so that folder exists for evaluate whether or not there are folds.
#
# Validation gates the rest: featurize and split read artifacts/validate/quarantine.csv (what
# validation left out; empty unless validate.on_error: quarantine), so they run only after
# `audioflow validate` passed on this data, and a threshold change that leaves out the same
# recordings reruns validate alone. featurize also reads its facts.csv (each recording's rate
# and duration, for features.sample_rate and window_s: auto), measured from the data alone.
"""

PLOTS = """\
plots:
  # Rows of predictions.csv are test recordings; DVC counts (actual, predicted) pairs.
  # DVC's confusion template puts x on the horizontal axis: columns are the true class here,
  # the transpose of outputs/confusion_matrix.png (rows = actual there).
  - outputs/predictions.csv:
      template: confusion
      x: actual
      y: predicted
      title: Test-set confusion matrix (recordings)
      x_label: actual
      y_label: predicted
  - Loss:
      template: linear
      x: epoch
      y:
        artifacts/train/history.csv: [train_loss, val_loss]
      x_label: epoch
      y_label: cross-entropy
  - Validation metrics:
      template: linear
      x: epoch
      y:
        artifacts/train/history.csv: [val_macro_f1, val_accuracy, val_balanced_accuracy]
      x_label: epoch
      y_label: per-recording score on val
  # One line per class (one class against the rest) on the test recordings: a `class` column
  # that DVC's own templates cannot colour by, hence the two templates in dvc_plots/.
  - artifacts/evaluate/plots/roc.csv:
      template: dvc_plots/per_class.json
      x: fpr
      y: tpr
      title: Test ROC, one class vs rest (AUC in metrics.json)
      x_label: false positive rate (1 - specificity)
      y_label: true positive rate (recall)
  - artifacts/evaluate/plots/pr.csv:
      template: dvc_plots/per_class.json
      x: recall
      y: precision
      title: Test precision-recall, one class vs rest (average precision in metrics.json)
      x_label: recall
      y_label: precision
  - artifacts/evaluate/plots/reliability.csv:
      template: dvc_plots/reliability.json
      x: confidence
      y: accuracy
      title: Test reliability, before and after temperature scaling (ECE in metrics.json)
      x_label: confidence (top probability)
      y_label: accuracy
"""


def _folder(stage: Stage, layout: Layout) -> str:
    return (layout.artifacts / stage.folder.format(fold=ITEM)).as_posix()


def data_deps(stage: Stage, layout: Layout) -> list[str]:
    """What of the earlier stages' outputs it reads: the folder, or the one file of it it reads
    (``dvc["files"]``: a name or a tuple of them), or the part of it the producer hands on
    (``dvc["consumed"]``)."""
    out = list(stage.dvc.get("deps", ()))
    for artifact in stage.inputs:
        producer = PRODUCER[artifact]
        folder = _folder(producer, layout)
        if artifact in stage.dvc.get("files", {}):
            files = stage.dvc["files"][artifact]
            out += [f"{folder}/{f}" for f in ((files,) if isinstance(files, str) else files)]
        elif producer.dvc.get("consumed"):
            out.append(f"{folder}/{producer.dvc['consumed']}")
        else:
            out.append(folder)
    if stage.reads_folds:
        out.append((layout.artifacts / FOLDS).as_posix())
    return out


def outs(stage: Stage, layout: Layout) -> tuple[list[str | dict], list[str]]:
    """(outs, metrics): its folder (or the files of it DVC caches), what it publishes."""
    folder = _folder(stage, layout)
    listed: list[str | dict] = [f"{folder}/{f}" for f in stage.dvc["outs"]] if "outs" in stage.dvc else [folder]
    listed += [(layout.artifacts / f).as_posix() for f in stage.dvc.get("extra_outs", ())]
    if "persist" in stage.dvc:  # kept across runs, uncached: a crashed `dvc repro` resumes from it
        listed.append({f"{folder}/{stage.dvc['persist']}": {"persist": True, "cache": False}})
    metrics = [f"{folder}/{stage.dvc['metrics']}"] if "metrics" in stage.dvc else []
    for _, dst in stage.publishes:
        path = (layout.outputs / dst).as_posix()
        (metrics if dst == "metrics.json" else listed).append(path)
    return listed, metrics


def _list(name: str, items, indent: str) -> list[str]:
    lines = [f"{indent}{name}:"]
    for item in items:
        if isinstance(item, dict):
            [(path, opts)] = item.items()
            lines.append(f"{indent}  - {path}:")
            lines += [f"{indent}      {k}: {str(v).lower()}" for k, v in opts.items()]
        else:
            lines.append(f"{indent}  - {item}")
    return lines


def stage_lines(stage: Stage, layout: Layout) -> list[str]:
    lines = [f"  # {stage.help}", f"  {stage.name}:"]
    indent = "    "
    if stage.per_fold:
        lines += [f"{indent}foreach: ${{split.folds}}", f"{indent}do:"]
        indent += "  "
    fold = f" --fold {ITEM}" if stage.per_fold else ""
    lines.append(f"{indent}cmd: audioflow {stage.name}{fold} -q")
    lines += _list("params", stage.params, indent)
    code = sorted(p.relative_to(ROOT).as_posix() for p in code_files(stage.name))
    lines += _list("deps", data_deps(stage, layout) + code, indent)
    listed, metrics = outs(stage, layout)
    lines += _list("outs", listed, indent)
    if metrics:
        lines += _list("metrics", metrics, indent)
    return lines


def render(layout: Layout | None = None) -> str:
    """The text of dvc.yaml."""
    layout = layout or Layout()
    lines = [HEADER, "stages:"]
    for stage in STAGES.values():
        lines += stage_lines(stage, layout) + [""]
    return "\n".join(lines) + PLOTS
