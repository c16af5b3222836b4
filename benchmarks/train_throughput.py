"""Training throughput on CPU: the real training loop against bare forward/backward passes.

The loop (``audioflow.training.train``) with the defaults cuts each batch's windows afresh
from the decoded audio memmap (random shift, speed, noise), runs the log-mel front-end on the
batch, augments the log-mel (random gain, SpecAugment, mixup when on), runs forward and backward,
clips gradients and steps AdamW and the schedule. The baseline does only forward, backward
and the optimizer step, on tensors already in memory, for the same model, batch size and
number of batches. Both run in this process, interleaved, on the demo dataset's features; the
figure is the ratio of their median times per epoch (issue 11's target: at most 1.25).

    uv run python -m benchmarks.train_throughput [--n-recordings 300] [--epochs 3] [--repeats 3]
        [--set section.key=value ...] [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TARGET = 1.25


def batch_sizes(n_train: int, batch: int) -> list[int]:
    """The batches of one training epoch (the loop skips a last batch of one)."""
    return [min(batch, n_train - i) for i in range(0, n_train, batch) if n_train - i >= 2]


def bare_epoch(model, shape: tuple[int, ...], sizes: list[int], n_classes: int, cfg) -> float:
    """Seconds for batches of these sizes: forward + backward + clip + AdamW on in-memory tensors."""
    import torch
    import torch.nn.functional as F

    gen = torch.Generator().manual_seed(0)
    xs = [torch.randn(b, *shape, generator=gen) * 10 - 40 for b in sizes]
    ys = [torch.randint(0, n_classes, (b,), generator=gen) for b in sizes]
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    model.train()
    t0 = time.perf_counter()
    for x, y in zip(xs, ys):
        loss = F.cross_entropy(model(x), y, label_smoothing=cfg.label_smoothing)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        optimizer.step()
    return time.perf_counter() - t0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.train_throughput", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n-recordings", type=int, default=300, help="demo recordings (default: 300)")
    ap.add_argument("--epochs", type=int, default=3, help="epochs per measurement of the loop (default: 3)")
    ap.add_argument("--repeats", type=int, default=3, help="interleaved repeats of both (default: 3)")
    ap.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                    help="parameter override (repeatable), e.g. --set model.name=bcresnet")
    ap.add_argument("--json", type=Path, help="write the figures here")
    args = ap.parse_args(argv)

    import torch
    import yaml

    from audioflow import split as split_mod
    from audioflow.config import load_params
    from audioflow.demo import write_demo_dataset
    from audioflow.evaluation import rows_for
    from audioflow.features import featurize
    from audioflow.manifest import ingest
    from audioflow.models import create_model
    from audioflow.training import train

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", os.cpu_count() or 1)))
    overrides = {k: yaml.safe_load(v) for k, _, v in (s.partition("=") for s in args.set)}
    with tempfile.TemporaryDirectory(prefix="audioflow-train-throughput-") as scratch:
        work = Path(scratch)
        write_demo_dataset(work / "data", n_recordings=args.n_recordings, progress=False)
        params = load_params(REPO / "params.yaml", {"data.root": str(work / "data"), **overrides,
                                                    "train.epochs": args.epochs, "train.patience": 10**6})
        ds = ingest(params.data, progress=False)
        feats = featurize(ds, params.features, work / "features", progress=False)
        table = split_mod.split_files(ds.files, params.split)
        n_train = len(rows_for(feats, table, "train"))
        batch = params.train.batch_size
        sizes = batch_sizes(n_train, batch)
        n_batches = len(sizes)
        model = create_model(params.model.name, n_mels=feats.spec.n_mels, n_classes=len(feats.labels),
                             **params.model.options)
        loop, bare = [], []
        for r in range(args.repeats):
            result = train(feats, table, params, work / f"train-{r}", progress=False)
            loop += [row["train_seconds"] for row in result.history]
            bare += [bare_epoch(model, (feats.spec.n_mels, feats.spec.n_frames), sizes, len(feats.labels),
                                params.train) for _ in range(args.epochs)]
    ratio = statistics.median(loop) / statistics.median(bare)
    verdict = "meets" if ratio <= TARGET else "MISSES"
    shape = f"{feats.spec.n_mels}x{feats.spec.n_frames}"
    print(f"train throughput: {params.model.name}, {n_train} training windows of {shape}, batch {batch}, "
          f"{n_batches} batches per epoch, {torch.get_num_threads()} threads")
    source = "audio memmap, waveform augmentation, front-end" if params.train.waveform_augmentation else "memmap"
    print(f"  training loop ({source}, augmentation, forward/backward, step): {statistics.median(loop):.3f} s/epoch, "
          f"{n_train / statistics.median(loop):.0f} windows/s")
    print(f"  bare forward/backward/step on in-memory tensors:              {statistics.median(bare):.3f} s/epoch, "
          f"{sum(sizes) / statistics.median(bare):.0f} windows/s")
    print(f"  loop / bare: {ratio:.3f} ({verdict} the <= {TARGET} target)")
    if args.json:
        args.json.write_text(json.dumps({
            "benchmark": "train_throughput", "model": params.model.name, "overrides": overrides,
            "waveform_augmentation": params.train.waveform_augmentation,
            "n_train_windows": n_train, "batch_size": batch, "n_batches": n_batches, "threads": torch.get_num_threads(),
            "loop_s": loop, "bare_s": bare, "ratio": round(ratio, 4), "target": TARGET,
            "within_target": ratio <= TARGET}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
