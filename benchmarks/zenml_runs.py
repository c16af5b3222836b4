"""Wall time of ZenML pipeline runs side by side: full, fully cached, only training rerun.

In a fresh temporary project (`zenml init`, its own ZENML_CONFIG_PATH, the repo's steps,
pipelines, configs and params.yaml, the default demo dataset), it times the documented command
`zenml pipeline run pipelines.training.training_pipeline -c configs/local.yaml` three ways:

1. full run (empty cache),
2. the same again (every step from the cache; the uncached publish step refreshes outputs/),
3. after changing train.lr (train, evaluate, export rerun).

Each time is the whole command as a user sees it, interpreter start and imports included.
Everything the runs write (project, ZenML store, the steps' temporary folders) lives in one
temporary folder that is removed at the end, also when a run fails.

    uv run python -m benchmarks.zenml_runs [--repeats 1] [--json PATH]
    # a quick smoke run on a small project:
    uv run python -m benchmarks.zenml_runs --repeats 1 --n-recordings 60 \\
        --set train.epochs=1 --set features.window_s=1.5 --set model.cnn.channels=[8,16] \\
        --set validate.min_per_class=3
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[1]
ZENML = Path(sys.executable).parent / "zenml"
CACHED_TARGET_S = 10.0


def timed(cmd: list[str], cwd: Path, env: dict) -> float:
    t0 = time.perf_counter()
    p = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    if p.returncode:
        sys.exit(f"{' '.join(cmd)} failed:\n{p.stdout[-3000:]}\n{p.stderr[-3000:]}")
    return time.perf_counter() - t0


def parse_override(text: str) -> tuple[str, Any]:
    """'section.key=value' -> ('section.key', value), the value read as YAML ([8,16] is a list)."""
    dotted, sep, value = text.partition("=")
    section, dot, key = dotted.strip().partition(".")
    if not (sep and dot and section and key):
        raise argparse.ArgumentTypeError(f"expected section.key=value, got {text!r}")
    return f"{section}.{key}", yaml.safe_load(value)


def project_params(src: Path, overrides: list[tuple[str, Any]]) -> str:
    """The text of src with the overrides applied, validated as every stage validates it."""
    from audioflow.config import ParamsError, params_from_dict, set_key

    if not overrides:
        return src.read_text()
    params = yaml.safe_load(src.read_text())
    for dotted, value in overrides:
        try:
            set_key(params, dotted, value, existing=True)
        except KeyError:
            sys.exit(f"--set {dotted}: {src.name} has no such key")
    try:  # fail here, before minutes of runs, not in a step
        params_from_dict(params, source=f"{src.name} with --set overrides")
    except ParamsError as exc:
        sys.exit(str(exc))
    return yaml.safe_dump(params, sort_keys=False)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.zenml_runs", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=1,
                    help="cached / train-only measurements to take; 0 = the full run only (default: %(default)s)")
    ap.add_argument("--n-recordings", type=int, default=300,
                    help="size of the demo dataset (default: %(default)s, the default demo data)")
    ap.add_argument("--set", dest="overrides", metavar="SECTION.KEY=VALUE", type=parse_override,
                    action="append", default=[],
                    help="override a params.yaml value in the temporary project (repeatable; the value "
                         "is YAML: train.epochs=1, model.cnn.channels=[8,16])")
    ap.add_argument("--json", type=Path, help="write the figures here")
    args = ap.parse_args(argv)
    if args.repeats < 0:
        ap.error("--repeats must be >= 0")
    if args.n_recordings < 1:
        ap.error("--n-recordings must be >= 1")

    from audioflow.demo import write_demo_dataset

    params_text = project_params(REPO / "params.yaml", args.overrides)
    cached: list[float] = []
    train_only: list[float] = []
    with tempfile.TemporaryDirectory(prefix="bench-zenml-runs-", ignore_cleanup_errors=True) as tmp:
        root = Path(tmp) / "project"
        for d in ("steps", "pipelines", "configs"):
            shutil.copytree(REPO / d, root / d, ignore=shutil.ignore_patterns("__pycache__"))
        (root / "params.yaml").write_text(params_text)
        write_demo_dataset(root / "data", n_recordings=args.n_recordings, progress=False)
        # The steps' own temporary folders (stage outputs before ZenML archives them) go here
        # too, so nothing of the runs outlives the benchmark.
        (Path(tmp) / "tmp").mkdir()
        env = os.environ | {
            "ZENML_CONFIG_PATH": str(Path(tmp) / "zenml-config"),
            "ZENML_ANALYTICS_OPT_IN": "false",
            "ZENML_ENABLE_RICH_TRACEBACK": "false",
            "AUDIOFLOW_PARAMS": str(root / "params.yaml"),
            "TMPDIR": str(Path(tmp) / "tmp"),
        }
        subprocess.run([str(ZENML), "init"], cwd=root, env=env, check=True, capture_output=True)
        run = [str(ZENML), "pipeline", "run", "pipelines.training.training_pipeline", "-c", "configs/local.yaml"]

        full = timed(run, root, env)
        for i in range(args.repeats):
            cached.append(timed(run, root, env))
            params = yaml.safe_load((root / "params.yaml").read_text())
            params["train"]["lr"] = params["train"]["lr"] * (0.9 - 0.1 * i)
            (root / "params.yaml").write_text(yaml.safe_dump(params))
            train_only.append(timed(run, root, env))

    rows = [("full run (empty cache)", full)]
    if args.repeats:
        rows += [("fully cached rerun", min(cached)),
                 ("train.lr changed: train, evaluate, export rerun", min(train_only))]
    print(f"{'run':<50} {'wall s':>8} {'vs full':>8}")
    for name, t in rows:
        print(f"{name:<50} {t:8.1f} {t / full:8.2f}")
    if args.repeats:
        verdict = "met" if min(cached) <= CACHED_TARGET_S else "NOT met"
        print(f"cached rerun target <= {CACHED_TARGET_S:.0f} s: {verdict}")
    setup = f"{args.n_recordings} demo recordings"
    if args.overrides:
        setup += ", " + ", ".join(f"{k}={json.dumps(v)}" for k, v in args.overrides)
    print(f"{setup}; load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({
            "benchmark": "zenml_runs",
            "n_recordings": args.n_recordings,
            "overrides": dict(args.overrides),
            "repeats": args.repeats,
            "full_s": full, "cached_s": cached, "train_only_s": train_only,
            "cached_over_full": min(cached) / full if cached else None,
            "train_only_over_full": min(train_only) / full if train_only else None,
            "cached_target_s": CACHED_TARGET_S,
            "cpu_count": os.cpu_count(), "python": platform.python_version(),
            "date": time.strftime("%Y-%m-%d"), "loadavg": os.getloadavg(),
        }, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
