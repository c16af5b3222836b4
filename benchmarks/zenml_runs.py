"""Wall time of ZenML pipeline runs side by side: full, fully cached, only training rerun.

In a fresh temporary project (`zenml init`, its own ZENML_CONFIG_PATH, the repo's steps,
pipelines, configs and params.yaml, the default demo dataset), it times the documented command
`zenml pipeline run pipelines.training.training_pipeline -c configs/local.yaml` three ways:

1. full run (empty cache),
2. the same again (every step from the cache; the uncached publish step refreshes outputs/),
3. after changing train.lr (train, evaluate, export rerun).

Each time is the whole command as a user sees it, interpreter start and imports included.

    uv run python -m benchmarks.zenml_runs [--repeats 1] [--json PATH]
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


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=1, help="cached / train-only measurements to take")
    ap.add_argument("--json", type=Path, help="write the figures here")
    args = ap.parse_args(argv)

    from audioflow.demo import write_demo_dataset

    root = Path(tempfile.mkdtemp(prefix="audioflow-zenml-bench-"))
    for d in ("steps", "pipelines", "configs"):
        shutil.copytree(REPO / d, root / d, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copyfile(REPO / "params.yaml", root / "params.yaml")
    write_demo_dataset(root / "data", progress=False)
    env = os.environ | {"ZENML_CONFIG_PATH": str(root / ".zenml-config"), "ZENML_ANALYTICS_OPT_IN": "false"}
    subprocess.run([str(ZENML), "init"], cwd=root, env=env, check=True, capture_output=True)
    run = [str(ZENML), "pipeline", "run", "pipelines.training.training_pipeline", "-c", "configs/local.yaml"]

    full = timed(run, root, env)
    cached, train_only = [], []
    for i in range(args.repeats):
        cached.append(timed(run, root, env))
        params = yaml.safe_load((root / "params.yaml").read_text())
        params["train"]["lr"] = params["train"]["lr"] * (0.9 - 0.1 * i)
        (root / "params.yaml").write_text(yaml.safe_dump(params))
        train_only.append(timed(run, root, env))
    shutil.rmtree(root, ignore_errors=True)

    rows = [("full run (empty cache)", full), ("fully cached rerun", min(cached)),
            ("train.lr changed: train, evaluate, export rerun", min(train_only))]
    print(f"{'run':<50} {'wall s':>8} {'vs full':>8}")
    for name, t in rows:
        print(f"{name:<50} {t:8.1f} {t / full:8.2f}")
    verdict = "met" if min(cached) <= CACHED_TARGET_S else "NOT met"
    print(f"cached rerun target <= {CACHED_TARGET_S:.0f} s: {verdict}; "
          f"load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs")
    if args.json:
        args.json.write_text(json.dumps({
            "full_s": full, "cached_s": cached, "train_only_s": train_only,
            "cpu_count": os.cpu_count(), "python": platform.python_version(),
            "date": time.strftime("%Y-%m-%d"), "loadavg": os.getloadavg(),
        }, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
