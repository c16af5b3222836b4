"""``audioflow predict`` and ``audioflow serve``: the deployment commands.

They run an exported ONNX model on ONNX Runtime and import only the torch-free core
(``audioflow.inference``, ``audioflow.serve``, ``audioflow.errors``), never the pipeline
(pyproject.toml's import-linter contracts check it).
"""

from __future__ import annotations

import argparse
import sys

from audioflow.cli.common import say


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


def add_commands(sub: argparse._SubParsersAction) -> None:
    """``predict`` and ``serve`` on the ``audioflow`` parser's subcommands."""
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

    from audioflow.limits import DEFAULT_MAX_DURATION_S, DEFAULT_MAX_UPLOAD_MB

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
