"""``audioflow``: one command line, two halves.

- ``audioflow.cli.deploy``: ``predict`` and ``serve``, on the torch-free core (ONNX Runtime).
- ``audioflow.cli.pipeline``: ``demo-data``, one command per stage, ``run`` (the training extras).

The pipeline half is imported only when the parser is built, and its commands import the
pipeline's modules only when they run, so a core install runs ``audioflow predict``.
"""

from __future__ import annotations

import argparse
import sys

from audioflow.cli.common import run_command

DESCRIPTION = """\
audioflow: labelled recordings in, a validated, evaluated ONNX classifier out.

Stages (each reads params.yaml and the previous stage's folder under artifacts/):
  ingest -> validate -> featurize -> split -> train -> evaluate -> export
With split.strategy kfold, train_fold and evaluate_fold run once per fold (--fold) before
train, and evaluate reports the folds' mean and std.
`audioflow run` runs them all; `audioflow predict` serves the exported model.
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="audioflow", description=DESCRIPTION,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    from audioflow import __version__

    parser.add_argument("--version", action="version", version=f"audioflow {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    from audioflow.cli import deploy, pipeline

    pipeline.add_commands(sub)
    deploy.add_commands(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return run_command(args.fn, args)


if __name__ == "__main__":
    sys.exit(main())
