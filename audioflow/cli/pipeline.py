"""``audioflow demo-data``, ``audioflow <stage>``, ``audioflow run``: the pipeline commands that
make, dvc.yaml and the containers call.

The pipeline's modules (audioflow.stages and what it runs) are imported inside the commands, so
that building the ``audioflow`` parser needs neither torch nor the other training extras.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from audioflow.cli.common import say
from audioflow.cli.summary import DONE, print_summary


def overrides_of(args) -> dict:
    """``--set`` (and ``--int8``) as load_params overrides: {"section.key": value}."""
    import yaml

    out = {"export.int8": True} if getattr(args, "int8", False) else {}
    for item in getattr(args, "set", None) or []:
        key, sep, value = item.partition("=")
        if not sep or "." not in key:
            raise SystemExit(f"--set expects section.key=value, got {item!r}")
        out[key] = yaml.safe_load(value)
    return out


def params_of(args):
    """params.yaml (``--params``) with the command's overrides."""
    from audioflow.config import load_params

    return load_params(args.params, overrides_of(args))


def layout_of(args):
    """The folders of ``--artifacts`` and ``--outputs``."""
    from audioflow.stages import Layout

    return Layout(Path(args.artifacts), Path(args.outputs))


def cmd_demo_data(args) -> int:
    from audioflow.demo import write_demo_dataset

    t0 = time.perf_counter()
    manifest = write_demo_dataset(args.dir, n_recordings=args.n_recordings, seed=args.seed,
                                  progress=not args.quiet)
    say(f"demo-data: wrote {args.n_recordings} recordings and {manifest} in {time.perf_counter() - t0:.1f}s")
    return 0


def cmd_stage(args) -> int:
    """``audioflow <stage>``: the stage on the folders of ``--artifacts``, published to ``--outputs``."""
    from audioflow import stages

    lay = layout_of(args)
    fold = getattr(args, "fold", None)
    result = stages.run_stage(args.command, params_of(args), lay, progress=not args.quiet, fold=fold)
    done = DONE.get(args.command)
    folder = lay.path(stages.STAGES[args.command].output, fold)
    which = f"{args.command} (fold {fold})" if fold is not None else args.command
    say(f"{which}: {done(result, lay) if done else f'wrote {folder}'}")
    return 0


def cmd_validate(args) -> int:
    from audioflow import stages

    params, lay = params_of(args), layout_of(args)
    verbose = getattr(args, "verbose", False)  # `audioflow run` validates without the option
    if not args.dir:
        out = Path(args.out) if args.out else lay.path("validation")
        return _validate(params, lay.path("dataset"), out, lay.outputs, args.quiet, verbose)
    # Any folder, checked directly: ingest it into a scratch folder that goes afterwards, and
    # use its group and fold columns only where its manifest has them.
    import tempfile

    from audioflow.manifest import columns_for_folder

    data, notes = columns_for_folder(params.data.model_copy(update={"root": args.dir}))
    for note in notes:
        say(f"validate: {note}")
    params = params.model_copy(update={"data": data})
    with tempfile.TemporaryDirectory(prefix="audioflow-validate-") as scratch:
        stages.ingest(params, Path(scratch) / "ingest", progress=not args.quiet)
        out = Path(args.out) if args.out else Path(scratch) / "validate"
        return _validate(params, Path(scratch) / "ingest", out, lay.outputs, args.quiet, verbose)


def _print_problems(problems, report_html: Path, verbose: bool, left_out: set[str] = frozenset()) -> None:
    """Each error as ``path: reason`` (quarantined ones say so), then a line per kind of warning
    or note naming where every one is (``verbose``: every one here)."""
    from audioflow.validation import console_lines

    where = f"{report_html} and {report_html.with_suffix('.json')}"
    for line in console_lines(problems, left_out, verbose=verbose, where=where):
        print(line)


def _validate(params, dataset: Path, out: Path, outputs: Path, quiet: bool, verbose: bool = False) -> int:
    """Every problem as ``path: reason`` on stdout (errors, then warnings), a per-class summary
    table and the verdict on stderr; exit 1 when an error stands."""
    from audioflow import stages
    from audioflow.validation import DataValidationError, summary_table

    report_html = outputs / "validation_report.html"
    try:
        report = stages.validate(params, dataset, out, publish_to=outputs, progress=not quiet)
    except DataValidationError as exc:
        _print_problems(exc.problems, report_html, verbose)
        if not quiet:
            say(summary_table(exc.report))
        errors = sum(p.severity == "error" for p in exc.problems)
        warns = sum(p.severity == "warning" for p in exc.problems)
        say(f"validate: FAILED, {errors} error(s), {warns} warning(s); report: {report_html}")
        return 1
    _print_problems(report.problems, report_html, verbose, left_out=set(report.quarantined))
    if not quiet:
        say(summary_table(report))
    s = report.summary
    dropped = f", {s['n_quarantined']} left out (quarantine.csv)" if s["n_quarantined"] else ""
    say(f"validate: passed: {s['n_used']} of {s['n_listed']} listed recordings used{dropped}, "
        f"{s['n_warnings']} warning(s); report: {report_html}")
    for note in s.get("notes", []):
        say(f"validate: note: {note}")
    return 0


def _command(stage: str):
    return cmd_validate if stage == "validate" else cmd_stage


def ensure_demo_data(root: str | Path, progress: bool = True) -> None:
    """Write the built-in demo dataset into ``root`` unless that folder already exists.

    An object-store root (``s3://...``) is left alone: upload the data there yourself.
    """
    from audioflow.storage import is_url

    if is_url(root) or Path(root).exists():
        return
    from audioflow.demo import write_demo_dataset

    say(f"{root} is absent: writing the built-in demo dataset there")
    write_demo_dataset(root, progress=progress)


def cmd_run(args) -> int:
    """Every stage in order, then a summary."""
    params = params_of(args)
    if args.demo_data:
        ensure_demo_data(params.data.root, progress=not args.quiet)
    t0 = time.perf_counter()
    from audioflow.stages import plan

    args.dir, args.out = None, None
    for task in plan(params.split.fold_names):  # no folds: no per-fold stage
        args.command, args.fold = task.stage.name, task.fold
        rc = _command(task.stage.name)(args)
        if rc:
            return rc
    lay = layout_of(args)
    print_summary(lay.path("dataset") / "dataset.json", lay.outputs, time.perf_counter() - t0)
    return 0


def _stage_description(stage) -> str:
    from audioflow.stages import PRODUCER

    def where(folder: str) -> str:
        return "artifacts/" + folder.format(fold="FOLD")

    reads = ", ".join(f"{a} ({where(PRODUCER[a].folder)})" for a in stage.inputs) or "data.root"
    if stage.reads_folds:
        folder = where(PRODUCER[stage.reads_folds].folder)
        reads += f" and, under split.strategy kfold, every fold's {stage.reads_folds} ({folder})"
    text = (f"{stage.help}. Reads {reads}; params.yaml sections {', '.join(stage.sections)}; "
            f"writes {stage.output} ({where(stage.folder)})")
    if stage.publishes:
        text += "; publishes " + ", ".join(f"OUTPUTS/{dst}" for _, dst in stage.publishes)
    return text + "."


def pipeline_options() -> argparse.ArgumentParser:
    """The options every pipeline command takes: --params, --set, --artifacts, --outputs, -q."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--params", default="params.yaml", help="parameters file (default: params.yaml)")
    common.add_argument("--set", action="append", metavar="SECTION.KEY=VALUE",
                        help="override one parameter, e.g. --set train.epochs=5 (repeatable)")
    common.add_argument("--artifacts", default="artifacts",
                        help="folder for intermediate stage outputs (default: artifacts)")
    common.add_argument("--outputs", default="outputs",
                        help="folder for the files people look at (default: outputs)")
    common.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    return common


def add_commands(sub: argparse._SubParsersAction) -> None:
    """demo-data, one command per stage, and run, on the ``audioflow`` parser's subcommands."""
    common = pipeline_options()
    p = sub.add_parser("demo-data", help="write the built-in synthetic heart-sound dataset")
    p.add_argument("dir", help="folder to write (recordings/ and manifest.csv)")
    p.add_argument("--n-recordings", type=int, default=300, help="how many recordings (default: 300)")
    p.add_argument("--seed", type=int, default=0, help="same seed, byte-identical files (default: 0)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    p.set_defaults(fn=cmd_demo_data)

    from audioflow.stages import STAGES

    for name, stage in STAGES.items():
        if name == "validate":
            p = sub.add_parser(name, parents=[common], help=stage.help,
                               description="Check every recording; print each error as 'path: reason', one "
                                           "line per kind of warning (-v: every file), and exit 1 when the "
                                           "data fails.")
            p.add_argument("-v", "--verbose", action="store_true",
                           help="print every warning and note as 'path: reason', not one line per check")
            p.add_argument("dir", nargs="?", help="validate this folder directly instead of the ingest output")
            p.add_argument("--out", help="keep the stage folder (report, per-file facts) here (default: "
                                         "artifacts/validate; with DIR, a temporary folder); the report "
                                         "is always published to OUTPUTS/validation_report.html")
        else:
            p = sub.add_parser(name, parents=[common], help=stage.help, description=_stage_description(stage))
        if stage.per_fold:
            p.add_argument("--fold", required=True, help="which of split.folds (split.strategy: kfold)")
        if name == "export":
            p.add_argument("--int8", action="store_true",
                           help="also write model.int8.onnx (INT8 classifier, float front-end, calibrated on the "
                                "val split) and compare test macro-F1 with FP32 (= --set export.int8=true)")
        p.set_defaults(fn=_command(name))

    p = sub.add_parser("run", parents=[common], help="run every stage and print a summary")
    p.add_argument("--demo-data", action="store_true",
                   help="write the demo dataset into data.root first if that folder is absent")
    p.set_defaults(fn=cmd_run)
