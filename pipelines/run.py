"""Run the ZenML training pipeline and print a summary: what ``make demo`` calls.

    python -m pipelines.run [--config configs/local.yaml] [--params params.yaml] [--demo-data]

Same as ``zenml pipeline run pipelines.training.training_pipeline -c configs/local.yaml``, plus
``zenml init`` when needed, the demo dataset when asked, quieter logs and the closing summary.
"""

from __future__ import annotations

import argparse
import logging
import os
import re
import shutil
import sys
import time
from pathlib import Path

# ZenML's own lines worth showing: step progress, cache hits, the end of the run, problems.
_KEEP = re.compile(r"Step .* has (started|finished|failed)|Using cached version|Pipeline run|"
                   r"All steps|[Ff]ailed|[Ee]rror|Resuming|quality gate")


class _StepProgressOnly(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= logging.WARNING or bool(_KEEP.search(record.getMessage()))


def _quiet_zenml() -> None:
    for handler in logging.getLogger().handlers:
        if type(handler).__name__ == "ZenMLConsoleHandler":
            handler.addFilter(_StepProgressOnly())


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m pipelines.run", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="configs/local.yaml", help="ZenML run configuration")
    parser.add_argument("--params", default="params.yaml", help="hyperparameters (default: params.yaml)")
    parser.add_argument("--outputs", default="outputs", help="where the files people look at go")
    parser.add_argument("--demo-data", action="store_true",
                        help="write the demo dataset into data.root first if that folder is absent")
    parser.add_argument("--verbose", action="store_true", help="show all of ZenML's log lines")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)

    os.environ.setdefault("ZENML_ANALYTICS_OPT_IN", "false")  # offline by default
    os.environ.setdefault("ZENML_ENABLE_RICH_TRACEBACK", "false")
    from audioflow.cli.common import quiet_libraries
    from audioflow.cli.pipeline import ensure_demo_data
    from audioflow.cli.summary import print_summary
    from audioflow.config import load_params

    quiet_libraries()
    params = load_params(args.params)
    if args.demo_data:
        ensure_demo_data(params.data.root)

    from zenml.client import Client

    if not (Path.cwd() / ".zen").exists():
        Client.initialize(root=Path.cwd())  # `zenml init`: makes this folder the source root
    if not args.verbose:
        _quiet_zenml()
    from pipelines.training import training_pipeline

    t0 = time.perf_counter()
    run = training_pipeline.with_options(config_path=args.config)(
        params_path=str(Path(args.params).resolve()), outputs=args.outputs)
    run = Client().get_pipeline_run(run.id)
    # Loading an artifact outside a step extracts a copy that ZenML leaves to the caller.
    dataset = Path(run.steps["ingest"].outputs["dataset"][0].load())
    try:
        print_summary(dataset / "dataset.json", Path(args.outputs), time.perf_counter() - t0)
    finally:
        shutil.rmtree(dataset, ignore_errors=True)
    cached = sum(1 for s in run.steps.values() if s.status.value == "cached")
    print(f"zenml run    {run.name} ({cached} of {len(run.steps)} steps from the cache)")
    if run.model_version is not None:
        print(f"zenml model  {run.model_version.model.name} version {run.model_version.name}")
        decision = Path(args.outputs) / "promotion.json"
        if decision.is_file():
            import json

            d = json.loads(decision.read_text())
            print(f"promotion    {'promoted to production' if d['promoted'] else 'NOT promoted'}: {d['reason']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
