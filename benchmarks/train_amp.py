"""Training speed on a GPU: mixed precision (AMP) against fp32 eager, with the real training loop.

Every side is ``audioflow.training.train`` with the same data, model, batch size and
augmentation on the same device. The baseline is fp32 eager (``train.amp: false``,
``train.cuda_graph: false``); the other sides are AMP eager (bf16 autocast where the GPU has
it, else fp16 with a GradScaler), fp32 with the step replayed as a CUDA graph, and AMP with
the CUDA graph, which are the defaults; ``--compile`` adds AMP with ``train.compile`` (eager
otherwise). Telling the sides apart tells what bf16 buys and what the graph buys. They
alternate, ``--repeats`` times each. Each run's first epoch is left out (cuDNN's
autotuning, the allocator warming up, compiling); the figure is training windows per second
from the median ``train_seconds`` of the other epochs (the batches alone, not validation).
Issue 11's target: the GPU path (AMP with the defaults) at least 2x fp32 eager.

The data is the demo dataset (``--n-recordings``), or ``--data DIR``: a folder with a
``manifest.csv`` (path, label), e.g. ../shared/data/fsdd. Without CUDA it runs on the CPU,
where AMP is off by design, so the ratio only says the script works (the tests' smoke run).

    python -m benchmarks.train_amp [--data DIR] [--epochs 4] [--repeats 2] [--compile]
        [--set section.key=value ...] [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TARGET = 2.0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.train_amp", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, help="folder with manifest.csv (path, label); default: demo data")
    ap.add_argument("--n-recordings", type=int, default=600, help="demo recordings without --data (default: 600)")
    ap.add_argument("--epochs", type=int, default=4, help="epochs per run, the first not counted (default: 4)")
    ap.add_argument("--repeats", type=int, default=2, help="alternating runs of each side (default: 2)")
    ap.add_argument("--compile", action="store_true", help="also time AMP with train.compile (eager)")
    ap.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                    help="parameter override (repeatable), e.g. --set train.batch_size=256")
    ap.add_argument("--json", type=Path, help="write the figures here")
    args = ap.parse_args(argv)
    if args.epochs < 2:
        ap.error("--epochs must be at least 2 (the first is not counted)")

    import torch
    import yaml

    from audioflow import split as split_mod
    from audioflow.config import load_params
    from audioflow.demo import write_demo_dataset
    from audioflow.evaluation import rows_for
    from audioflow.features import featurize, pick_device
    from audioflow.manifest import ingest
    from audioflow.training import train

    overrides = {k: yaml.safe_load(v) for k, _, v in (s.partition("=") for s in args.set)}
    sides = {"fp32 eager": {"train.amp": False, "train.cuda_graph": False},
             "amp eager": {"train.amp": True, "train.cuda_graph": False},
             "fp32 graph": {"train.amp": False, "train.cuda_graph": True},
             "amp graph": {"train.amp": True, "train.cuda_graph": True}}
    if args.compile:
        sides["amp compile"] = {"train.amp": True, "train.cuda_graph": False, "train.compile": True}
    with tempfile.TemporaryDirectory(prefix="audioflow-train-amp-") as scratch:
        work = Path(scratch)
        data = {"data.root": str(args.data), "data.manifest": "manifest.csv", "data.group_column": None,
                "data.fold_column": None}
        if args.data is None:
            write_demo_dataset(work / "data", n_recordings=args.n_recordings, progress=False)
            data = {"data.root": str(work / "data")}
        # No refit: it is not timed, and would double each run.
        base = {**data, **overrides, "train.epochs": args.epochs, "train.patience": 10**6, "train.refit": False}
        params = load_params(REPO / "params.yaml", base)
        device = pick_device(params.train.device)
        ds = ingest(params.data, progress=False)
        feats = featurize(ds, params.features, work / "features", progress=False)
        table = split_mod.split_files(ds.files, params.split)
        n_train = len(rows_for(feats, table, "train"))
        seconds: dict[str, list[float]] = {name: [] for name in sides}
        for r in range(args.repeats):
            for name, change in sides.items():
                p = load_params(REPO / "params.yaml", {**base, **change})
                t0 = time.perf_counter()
                result = train(feats, table, p, work / f"train-{name}-{r}", progress=False, resume=False)
                seconds[name] += [row["train_seconds"] for row in result.history[1:]]
                print(f"  {name} run {r + 1}: {time.perf_counter() - t0:.1f} s (first epoch "
                      f"{result.history[0]['train_seconds']:.1f} s)", file=sys.stderr, flush=True)

    rate = {name: n_train / statistics.median(s) for name, s in seconds.items()}
    ratio = {name: rate[name] / rate["fp32 eager"] for name in sides}
    gpu = torch.cuda.get_device_name(device) if device.type == "cuda" else "none (CPU: AMP is off)"
    shape = f"{feats.spec.n_mels}x{feats.spec.n_frames}"
    print(f"train AMP vs fp32: {params.model.name}, {n_train} training windows of {shape}, "
          f"batch {params.train.batch_size}, device {device} ({gpu})")
    for name in sides:
        print(f"  {name:12s} {statistics.median(seconds[name]):.3f} s/epoch  {rate[name]:8.0f} windows/s  "
              f"{ratio[name]:.2f}x fp32 eager")
    verdict = "meets" if ratio["amp graph"] >= TARGET else "MISSES"
    print(f"  the defaults (AMP, CUDA graph) / fp32 eager: {ratio['amp graph']:.2f}x ({verdict} the >= {TARGET}x "
          f"target); AMP alone: {ratio['amp eager']:.2f}x")
    if args.json:
        args.json.write_text(json.dumps({
            "benchmark": "train_amp", "model": params.model.name, "overrides": overrides,
            "device": str(device), "gpu": gpu, "torch": torch.__version__,
            "n_train_windows": n_train, "shape": shape, "batch_size": params.train.batch_size,
            "seconds_per_epoch": seconds, "windows_per_s": {k: round(v, 1) for k, v in rate.items()},
            "ratio_vs_fp32": {k: round(v, 3) for k, v in ratio.items()}, "target": TARGET}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
