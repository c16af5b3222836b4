"""``audioflow <stage>``: the command line that make, dvc.yaml and the containers call."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

DESCRIPTION = """\
audioflow: labelled recordings in, a validated, evaluated ONNX classifier out.

Stages (each reads params.yaml and the previous stage's folder under artifacts/):
  ingest -> validate -> featurize -> split -> train -> evaluate -> export
With split.strategy kfold, train_fold and evaluate_fold run once per fold (--fold) before
train, and evaluate reports the folds' mean and std.
`audioflow run` runs them all; `audioflow predict` serves the exported model.
"""


def _quiet_libraries() -> None:
    # Import-time chatter from third-party libraries would drown our progress and summary.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import logging
    import warnings

    for name in ("great_expectations", "torch.onnx", "onnxscript", "matplotlib", "PIL"):
        logging.getLogger(name).setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", category=DeprecationWarning)


# Modules of the extras (pyproject.toml): their absence means a core install, not a bug.
PIPELINE_MODULES = frozenset({"torch", "torchaudio", "pandas", "yaml", "pydantic", "sklearn", "matplotlib",
                              "safetensors", "onnx", "onnxscript", "great_expectations", "s3fs", "boto3",
                              "zenml", "dvc", "kfp"})


def say(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _overrides(args) -> dict:
    import yaml

    overrides = {"export.int8": True} if getattr(args, "int8", False) else {}
    for item in getattr(args, "set", None) or []:
        key, sep, value = item.partition("=")
        if not sep or "." not in key:
            raise SystemExit(f"--set expects section.key=value, got {item!r}")
        overrides[key] = yaml.safe_load(value)
    return overrides


def _params(args):
    from audioflow.config import load_params

    return load_params(args.params, _overrides(args))


def _layout(args):
    from audioflow.stages import Layout

    return Layout(Path(args.artifacts), Path(args.outputs))


def cmd_demo_data(args) -> int:
    from audioflow.demo import write_demo_dataset

    t0 = time.perf_counter()
    manifest = write_demo_dataset(args.dir, n_recordings=args.n_recordings, seed=args.seed,
                                  progress=not args.quiet)
    say(f"demo-data: wrote {args.n_recordings} recordings and {manifest} in {time.perf_counter() - t0:.1f}s")
    return 0


def _split_counts(table) -> dict:
    from audioflow.split import summary

    return summary(table)["counts"]


# What `audioflow <stage>` says when it is done; a stage not listed says where its folder is.
DONE = {
    "ingest": lambda ds, _: f"{len(ds.files)} recordings, {len(ds.labels)} classes, fingerprint {ds.fingerprint[:12]}",
    "featurize": lambda f, _: (f"{len(f.index)} windows of {f.spec.window_samples / f.spec.sample_rate:g} s "
                               f"({f.spec.n_mels}x{f.spec.n_frames} log-mel) at {f.spec.sample_rate} Hz"),
    "split": lambda table, lay: str(_split_counts(table)) if not _kfold(lay) else _folds_line(table),
    "train": lambda r, _: (f"best epoch {r.best_epoch}, val {r.monitor} {r.best_metric:.4f}, "
                        f"{len(r.history)} epochs"
                        + (f", then {len(r.refit_history)} on train + val" if r.refit_history else "")
                        + f" in {r.seconds:.1f}s on {r.device}"
                        + (f" (resumed after epoch {r.resumed_from_epoch})" if r.resumed_from_epoch else "")),
    "evaluate": lambda m, _: (f"test accuracy {m['accuracy']:.4f}{_ci(m, 'accuracy')}, macro-F1 "
                              f"{m['macro_f1']:.4f}{_ci(m, 'macro_f1')} on {m['n']} recordings"
                              if "std" not in m else f"{_cv_line(m)} (mean ± std over folds)"),
    "export": lambda r, lay: (f"{lay.onnx} ({r.get('size_bytes', 0) / 1e6:.2f} MB), ONNX Runtime vs PyTorch "
                         f"max |diff| {r.get('max_abs_diff', float('nan')):.2e}" + _int8_line(r.get("int8"), lay)),
}


def _iv(ci: dict | None) -> str:
    """`` [low, high]`` of an interval in metrics.json (nothing if there is none)."""
    return f" [{ci['low']:.3f}, {ci['high']:.3f}]" if ci and None not in (ci["low"], ci["high"]) else ""


def _ci(m: dict, key: str) -> str:
    """The bootstrap interval of ``key`` in metrics ``m``."""
    return _iv((m.get("intervals") or {}).get(key))


def _kfold(lay) -> bool:
    from audioflow.split import fold_names

    return bool(fold_names(lay.path("split")))


def _folds_line(table) -> str:
    counts = _split_counts(table)
    per_fold = table["fold"].value_counts().to_dict()
    per_fold = dict(sorted(per_fold.items(), key=lambda kv: (len(kv[0]), kv[0])))  # 1, 2, ..., 10
    return (f"folds {per_fold} (recordings each fold tests); "
            f"final model train {counts['train']} / val {counts['val']}")


DONE["train_fold"] = DONE["train"]
DONE["evaluate_fold"] = DONE["evaluate"]


def _cv_line(m: dict) -> str:
    """Cross-validated figures as mean ± std, e.g. ``accuracy 0.953 ± 0.012, ...``."""
    return ", ".join(f"{name} {m[key]:.3f} ± {m['std'][key]:.3f}" for key, name in
                     (("accuracy", "accuracy"), ("macro_f1", "macro-F1"), ("balanced_accuracy", "balanced accuracy")))


def _int8_line(q: dict | None, lay) -> str:
    if not q:
        return ""
    verdict = "within" if q["within_target"] else "MISSES"
    return (f"\nexport: INT8 {lay.path('onnx_model') / 'model.int8.onnx'} ({q['size_bytes'] / 1e6:.2f} MB): "
            f"{q.get('scored_on', 'test')} macro-F1 {q['test_macro_f1_fp32']:.4f} FP32 vs "
            f"{q['test_macro_f1_int8']:.4f} INT8, drop "
            f"{q['macro_f1_drop']:+.4f} ({verdict} the {q['max_drop']} target)")


def cmd_stage(args) -> int:
    """``audioflow <stage>``: the stage on the folders of ``--artifacts``, published to ``--outputs``."""
    from audioflow import stages

    lay = _layout(args)
    fold = getattr(args, "fold", None)
    result = stages.run_stage(args.command, _params(args), lay, progress=not args.quiet, fold=fold)
    done = DONE.get(args.command)
    folder = lay.path(stages.STAGES[args.command].output, fold)
    which = f"{args.command} (fold {fold})" if fold is not None else args.command
    say(f"{which}: {done(result, lay) if done else f'wrote {folder}'}")
    return 0


def cmd_validate(args) -> int:
    from audioflow import stages

    params, lay = _params(args), _layout(args)
    if not args.dir:
        out = Path(args.out) if args.out else lay.path("validation")
        return _validate(params, lay.path("dataset"), out, lay.outputs, args.quiet)
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
        return _validate(params, Path(scratch) / "ingest", out, lay.outputs, args.quiet)


def _print_problems(problems, left_out: set[str] = frozenset()) -> None:
    """``path: reason``, one per line; warnings and quarantined errors say so at the end."""
    for p in problems:
        print(f"{p.line()} (warning)" if p.severity != "error" else
              f"{p.line()} (left out)" if p.path in left_out else p.line())


def _validate(params, dataset: Path, out: Path, outputs: Path, quiet: bool) -> int:
    """Every problem as ``path: reason`` on stdout (errors, then warnings), a per-class summary
    table and the verdict on stderr; exit 1 when an error stands."""
    from audioflow import stages
    from audioflow.validation import DataValidationError, summary_table

    report_html = outputs / "validation_report.html"
    try:
        report = stages.validate(params, dataset, out, publish_to=outputs, progress=not quiet)
    except DataValidationError as exc:
        _print_problems(exc.problems)
        if not quiet:
            say(summary_table(exc.report))
        errors = sum(p.severity == "error" for p in exc.problems)
        say(f"validate: FAILED, {errors} error(s), {len(exc.problems) - errors} warning(s); report: {report_html}")
        return 1
    _print_problems(report.problems, left_out=set(report.quarantined))
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
    params = _params(args)
    if args.demo_data:
        ensure_demo_data(params.data.root, progress=not args.quiet)
    t0 = time.perf_counter()
    from audioflow.stages import STAGES

    args.dir, args.out = None, None
    for name, stage in STAGES.items():
        args.command = name
        for fold in params.split.fold_names if stage.per_fold else [None]:  # no folds: no per-fold stage
            args.fold = fold
            rc = _command(name)(args)
            if rc:
                return rc
    lay = _layout(args)
    print_summary(lay.path("dataset") / "dataset.json", lay.outputs, time.perf_counter() - t0)
    return 0


def print_summary(dataset_json: Path, outputs: Path, seconds: float) -> None:
    """The closing lines of a run: data, split, test figures, where the results are."""
    ds = json.loads(dataset_json.read_text())
    metrics = json.loads((outputs / "metrics.json").read_text())
    s = metrics["split"]
    print()
    groups = {0: "no groups", 1: "1 group"}.get(ds["n_groups"], f"{ds['n_groups']} groups")
    print(f"dataset      {ds['root']}: {ds['n_files']} recordings, {len(ds['labels'])} classes "
          f"({', '.join(ds['labels'])}), {groups}")
    for warning in ds.get("warnings", []):
        print(f"warning      {warning}")
    if (report := outputs / "validation_report.json").is_file():
        v = json.loads(report.read_text())["summary"]
        left_out = f", {v['n_quarantined']} left out (quarantine.csv)" if v.get("n_quarantined") else ""
        print(f"validation   {v['n_used']} of {v['n_listed']} listed recordings used{left_out}, "
              f"{v['n_warnings']} warning(s): {report.with_suffix('.html')}")
    if "cross_validation" in metrics:
        cv = metrics["cross_validation"]
        print(f"split        {cv['k']} folds ({', '.join(cv['folds'])}): each model tested on its own fold; "
              f"final model: train {s['train']} / val {s['val']} recordings")
        print(f"cross-val    {_cv_line(metrics)} (mean ± std over {cv['k']} folds, "
              f"{metrics['n']} recordings each tested once)")
        for fold, m in metrics["folds"].items():
            print(f"  fold {fold:<6} accuracy {m['accuracy']:.3f}, macro-F1 {m['macro_f1']:.3f} on {m['n']} recordings")
        if pooled := metrics.get("pooled"):
            print(f"pooled       accuracy {pooled['accuracy']:.3f}{_ci(metrics, 'accuracy')}, macro-F1 "
                  f"{pooled['macro_f1']:.3f}{_ci(metrics, 'macro_f1')}, balanced accuracy "
                  f"{pooled['balanced_accuracy']:.3f}{_ci(metrics, 'balanced_accuracy')}{_interval_note(metrics)}")
    else:
        print(f"split        train {s['train']} / val {s['val']} / test {s['test']} recordings")
        print(f"test         accuracy {metrics['accuracy']:.3f}{_ci(metrics, 'accuracy')}, macro-F1 "
              f"{metrics['macro_f1']:.3f}{_ci(metrics, 'macro_f1')}, balanced accuracy "
              f"{metrics['balanced_accuracy']:.3f}{_ci(metrics, 'balanced_accuracy')}{_interval_note(metrics)}")
    print(f"confusion    {outputs / 'confusion_matrix.png'}")
    for line in _reliability_lines(metrics, outputs):
        print(line)
    print(f"model        {outputs / 'model.onnx'}")
    print(f"took         {seconds:.0f}s")


def _interval_note(metrics: dict) -> str:
    iv = metrics.get("intervals")
    if not iv:
        return ""
    return f" ({iv['confidence']:.0%} bootstrap intervals over {iv['n_units']} {iv['unit']}s)"


def _reliability_lines(metrics: dict, outputs: Path) -> list[str]:
    """Curves, calibration, operating point and model card lines of the summary (when measured)."""
    lines = []
    if (auc := metrics.get("auc")) and auc.get("macro") is not None:
        ap = metrics["average_precision"]["macro"]
        lines.append(f"curves       macro ROC AUC {auc['macro']:.3f}, macro average precision {ap:.3f}: "
                     f"{outputs / 'curves.png'}")
    if cal := metrics.get("calibration"):
        how = f"temperature {cal['temperature']:g} fitted on val" if cal["temperature"] != 1.0 else "not calibrated"
        if "fold_temperatures" in cal:  # kfold: each fold's model with its own
            how = f"each fold's temperature; the exported model's {cal['temperature']:g}"
        lines.append(f"calibration  ECE {cal['ece_uncalibrated']:.3f} -> {cal['ece']:.3f} ({how}): "
                     f"{outputs / 'reliability.png'}")
    if op := metrics.get("operating_point"):
        t = op["test"]
        spec = "n/a" if t["specificity"] is None else f"{t['specificity']:.3f}"
        rec = "n/a" if t["recall"] is None else f"{t['recall']:.3f}"
        lines.append(f"operating pt {'+'.join(op['positive_labels'])} vs rest at {op['threshold']:.4g} (recall "
                     f"{op['target_recall']:g} on val): test recall {rec}{_iv(t.get('recall_interval'))}, "
                     f"specificity {spec}{_iv(t.get('specificity_interval'))}")
    if (outputs / "model_card.md").is_file():
        lines.append(f"model card   {outputs / 'model_card.md'}")
    return lines


def _kubeflow_front():
    """pipelines/kubeflow.py of the project in the working directory (like ZenML's source root)."""
    if str(Path.cwd()) not in sys.path:
        sys.path.insert(0, str(Path.cwd()))
    try:
        from pipelines import kubeflow
    except ImportError as exc:
        raise SystemExit(f"error: cannot import pipelines.kubeflow ({exc}); run this from the project "
                         "root, the folder with pipelines/ and configs/") from None
    return kubeflow


def cmd_kubeflow_compile(args) -> int:
    kubeflow = _kubeflow_front()
    overrides = _overrides(args)
    out = kubeflow.compile_pipeline(args.out, args.params, overrides, args.config, args.image)
    shards = _params(args).features.shards
    say(f"kubeflow: wrote {out} (pipeline {kubeflow.PIPELINE_NAME!r}, featurize in {shards} task(s)); "
        "upload it in the Kubeflow Pipelines UI or with kfp.Client().create_run_from_pipeline_package")
    return 0


def cmd_kubeflow_run_local(args) -> int:
    kubeflow = _kubeflow_front()
    params = _params(args)
    outputs = kubeflow.run_local(args.pipeline_root, args.data_root or params.data.root, args.params,
                                 _overrides(args), args.config, image=args.image,
                                 checkpoint_root=args.checkpoint_root, checkpoint_run=args.checkpoint_run)
    lay = _layout(args)
    from audioflow import stages

    stages.publish("evaluate", outputs["evaluation"], lay.outputs)
    stages.publish("export", outputs["onnx_model"], lay.outputs)
    m = json.loads((lay.outputs / "metrics.json").read_text())
    say(f"kubeflow (local): test accuracy {m['accuracy']:.4f}, macro-F1 {m['macro_f1']:.4f}; "
        f"results in {lay.outputs}; artifacts: {json.dumps({k: str(v) for k, v in outputs.items()})}")
    return 0


def cmd_predict(args) -> int:
    import csv

    from tqdm import tqdm

    from audioflow.inference import PredictionError, Predictor, expand_paths

    predictor = Predictor(args.model)
    op = predictor.operating_point if args.operating_point else None
    if args.operating_point and op is None:
        say(f"error: {args.model} has no operating point (it was exported with evaluate.positive_labels empty)")
        return 2
    items = list(expand_paths(args.paths))  # each gives exactly one line (or one error)
    out = open(args.output, "w", newline="") if args.output else sys.stdout  # noqa: SIM115
    labels = predictor.labels
    writer = None
    if args.format == "csv":
        writer = csv.writer(out, lineterminator="\n")
        head = ["path", "start_s", "end_s", "label", "probability"] if args.timeline else \
            ["path", "label", "n_windows", "error"] + (["top"] if args.top_k else []) \
            + (["positive", "positive_score"] if op else [])
        writer.writerow(head + [f"p_{lab}" for lab in labels])
    failed = 0
    bar = tqdm(total=len(items), unit="file", desc="predict", file=sys.stderr, leave=False,
               disable=args.quiet or not sys.stderr.isatty() or len(items) < 2)
    try:
        for item in predictor.predict_paths(items, batch_windows=args.batch_windows, keep_windows=args.timeline):
            if isinstance(item, PredictionError):
                failed += 1
                bar.write(f"{item.path}: {item.reason}", file=sys.stderr)
                if writer is None:
                    out.write(item.to_json() + "\n")
                elif not args.timeline:
                    writer.writerow([item.path, "", "", item.reason]
                                    + [""] * (len(labels) + bool(args.top_k) + 2 * bool(op)))
            elif writer is None:
                out.write(item.to_json(top_k=args.top_k, timeline=args.timeline, operating_point=op) + "\n")
            elif args.timeline:
                for row in item.timeline():
                    writer.writerow([item.path, row["start_s"], row["end_s"], row["label"], f"{row['probability']:.6f}"]
                                    + [f"{row['probabilities'][lab]:.6f}" for lab in labels])
            else:
                top = ["|".join(f"{lab}:{p:.6f}" for lab, p in item.top(args.top_k))] if args.top_k else []
                screen = op.apply(item.probabilities) if op else None
                flag = [str(screen["positive"]).lower(), f"{screen['score']:.6f}"] if screen else []
                writer.writerow([item.path, item.label, item.n_windows, ""] + top + flag
                                + [f"{item.probabilities[lab]:.6f}" for lab in labels])
            out.flush()
            bar.update(1)
    finally:
        bar.close()
        if out is not sys.stdout:
            out.close()
    if failed:
        say(f"predict: {failed} of {len(items)} input(s) could not be scored")
    return 1 if failed else 0


def cmd_serve(args) -> int:
    from audioflow.inference import Predictor
    from audioflow.serve import serve

    if args.operating_point and Predictor(args.model).operating_point is None:
        say(f"error: {args.model} has no operating point (it was exported with evaluate.positive_labels empty)")
        return 2
    if args.host not in ("127.0.0.1", "localhost", "::1"):
        say(f"serve: listening on {args.host}, reachable from other machines; there is no authentication")
    serve(args.model, host=args.host, port=args.port, max_upload_mb=args.max_upload_mb,
          max_duration_s=args.max_duration_s, log_level="warning" if args.quiet else "info",
          operating_point=args.operating_point)
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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="audioflow", description=DESCRIPTION,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    from audioflow import __version__

    parser.add_argument("--version", action="version", version=f"audioflow {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--params", default="params.yaml", help="parameters file (default: params.yaml)")
    common.add_argument("--set", action="append", metavar="SECTION.KEY=VALUE",
                        help="override one parameter, e.g. --set train.epochs=5 (repeatable)")
    common.add_argument("--artifacts", default="artifacts",
                        help="folder for intermediate stage outputs (default: artifacts)")
    common.add_argument("--outputs", default="outputs",
                        help="folder for the files people look at (default: outputs)")
    common.add_argument("-q", "--quiet", action="store_true", help="no progress bars")

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
                               description="Check every recording; print each problem as 'path: reason' "
                                           "and exit 1 when the data fails.")
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

    p = sub.add_parser("kubeflow", help="the Kubeflow Pipelines front: compile, or run locally",
                       description="The same stages as a Kubeflow pipeline (pipelines/kubeflow.py), one "
                                   "containerized component per stage. Run from the project root.")
    kf = p.add_subparsers(dest="kubeflow_command", required=True, metavar="ACTION")
    kf_common = argparse.ArgumentParser(add_help=False, parents=[common])
    kf_common.add_argument("--config", default="configs/kfp.yaml",
                           help="image, secret, resources, retries (default: configs/kfp.yaml)")
    q = kf.add_parser("compile", parents=[kf_common], help="write the pipeline IR YAML to upload to a cluster",
                      description="Write the pipeline's IR YAML. params.yaml becomes the default of the "
                                  "params_yaml run parameter; features.shards sets the featurize fan-out.")
    q.add_argument("out", help="the YAML file to write, e.g. audioflow-pipeline.yaml")
    q.add_argument("--image", help="steps image (overrides `image` in --config)")
    q.set_defaults(fn=cmd_kubeflow_compile)
    q = kf.add_parser("run-local", parents=[kf_common], help="run the pipeline here under kfp.local",
                      description="Run the Kubeflow pipeline on this machine (kfp.local, one subprocess per "
                                  "component, no cluster), then copy its metrics and model to OUTPUTS.")
    q.add_argument("--pipeline-root", default=".kfp-local", help="where KFP writes artifacts (default: .kfp-local)")
    q.add_argument("--data-root", help="data folder or URL (default: data.root from params)")
    q.add_argument("--image", help="run every component in a container of this steps image (kfp.local's "
                                   "DockerRunner: Docker, or podman's Docker API through DOCKER_HOST) instead "
                                   "of a subprocess, e.g. localhost/audioflow-steps:dev from `make images`")
    q.add_argument("--checkpoint-root", help="where train keeps its resumable checkpoint, e.g. an s3:// URL "
                                             "(default: checkpoints in --config)")
    q.add_argument("--checkpoint-run", default="", help="resume the training of an earlier run that stopped "
                                                        "(its checkpoint is under --checkpoint-root/RUN): "
                                                        "that run's id, or any name both runs are given")
    q.set_defaults(fn=cmd_kubeflow_run_local)

    p = sub.add_parser("predict", help="classify audio files, folders or globs with an exported ONNX model",
                       description="One JSON line (or CSV row) per recording: path, label, probabilities, "
                                   "number of windows. Any sample rate and channel count is converted as in "
                                   "training; long recordings are scored by sliding windows, averaged. A file "
                                   "that cannot be read gets an error line and the others go on; the exit "
                                   "code is 1 if any failed. Runs on ONNX Runtime only (no torch).")
    p.add_argument("model", help="model.onnx written by `audioflow export`")
    p.add_argument("paths", nargs="+", help="audio files, folders (searched recursively) or quoted glob patterns "
                                           "such as 'data/**/*.wav'")
    p.add_argument("--format", choices=("jsonl", "csv"), default="jsonl", help="output format (default: jsonl)")
    p.add_argument("--top-k", type=int, default=0, metavar="K", help="also list the K most probable labels")
    p.add_argument("--timeline", action="store_true",
                   help="per-window labels with start and end times (JSON: a `timeline` list; CSV: one row "
                        "per window), for long recordings")
    p.add_argument("--batch-windows", type=int, default=64, metavar="N",
                   help="windows per ONNX Runtime run; short recordings share a run (default: 64)")
    p.add_argument("--operating-point", action="store_true",
                   help="apply the model's operating point (set by evaluate on validation for "
                        "evaluate.positive_labels): JSON gets `operating_point` {positive, score, threshold}, CSV "
                        "the columns positive and positive_score")
    p.add_argument("-o", "--output", help="write to this file instead of stdout")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    p.set_defaults(fn=cmd_predict)

    from audioflow.serve import DEFAULT_MAX_DURATION_S, DEFAULT_MAX_UPLOAD_MB

    p = sub.add_parser("serve", help="serve an exported ONNX model over HTTP (FastAPI + uvicorn)",
                       description="POST /predict (multipart field `file`) returns label, probabilities and "
                                   "the model version; GET /health, GET /metadata, GET /docs (OpenAPI). "
                                   "SIGTERM or Ctrl-C finishes the requests in flight, then stops.")
    p.add_argument("model", help="model.onnx written by `audioflow export`")
    p.add_argument("--host", default="127.0.0.1",
                   help="address to bind (default: 127.0.0.1, this machine only; 0.0.0.0 for every interface)")
    p.add_argument("--port", type=int, default=8000, help="port (default: 8000)")
    p.add_argument("--max-upload-mb", type=float, default=DEFAULT_MAX_UPLOAD_MB,
                   help=f"larger uploads get 413 (default: {DEFAULT_MAX_UPLOAD_MB:g})")
    p.add_argument("--max-duration-s", type=float, default=DEFAULT_MAX_DURATION_S,
                   help=f"longer recordings get 413 (default: {DEFAULT_MAX_DURATION_S:g})")
    p.add_argument("--operating-point", action="store_true",
                   help="every answer says whether the recording is positive at the model's operating point "
                        "(a request's ?operating_point=false|true overrides)")
    p.add_argument("-q", "--quiet", action="store_true", help="log warnings only, not every request")
    p.set_defaults(fn=cmd_serve)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    _quiet_libraries()
    from audioflow.errors import AudioflowError

    try:
        return args.fn(args)
    except (AudioflowError, FileNotFoundError) as exc:
        say(f"error: {exc}")
        return 2
    except ModuleNotFoundError as exc:  # a core (deployment) install running a pipeline command
        if exc.name and exc.name.split(".")[0] in PIPELINE_MODULES:
            say(f"error: `audioflow {args.command}` needs the pipeline's dependencies ({exc.name} is not "
                "installed): pip install 'audioflow[train]' (or [all] for ZenML, DVC and Kubeflow too)")
            return 2
        raise
    except KeyboardInterrupt:
        say("interrupted")
        return 130
    except BrokenPipeError:  # `audioflow predict ... | head`: the reader has all it wanted
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141


if __name__ == "__main__":
    sys.exit(main())
