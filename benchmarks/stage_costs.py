"""What each stage costs per recording, against the floor of decoding every recording once.

Runs the stages in-process (``audioflow.stages``, as every front does) on a dataset, timing
each: wall seconds, process CPU seconds, and per-recording cost. The baseline, timed in the
same run and interleaved with featurize, is a bare decode of every recording (soundfile +
soxr, the seam every stage reads through): each stage's cost is also given as a multiple of
it. docs/SCALING.md extrapolates these figures to a million recordings.

    uv run python -m benchmarks.stage_costs [--data ../shared/data/fsdd] [--limit N]
        [--set section.key=value ...] [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO.parent / "shared" / "data" / "fsdd"
MILLION = 1_000_000
CONSTANT = {"export"}  # exports one model, checked on a bounded number of held-out windows


def timed(fn, *args, **kwargs):
    c0, t0 = time.process_time(), time.perf_counter()
    result = fn(*args, **kwargs)
    return result, time.perf_counter() - t0, time.process_time() - c0


def decode_all(ds, sample_rate: int) -> int:
    from audioflow import audio

    return sum(len(audio.load(ds.location(p), sample_rate)) for p in ds.files["path"])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA, help="folder with manifest.csv (default: FSDD)")
    ap.add_argument("--limit", type=int, help="use only the first N recordings of the manifest")
    ap.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                    help="parameter override (repeatable), e.g. --set train.epochs=3")
    ap.add_argument("--json", type=Path, help="write the figures here")
    args = ap.parse_args(argv)
    if not (args.data / "manifest.csv").is_file():
        print(f"SKIP: {args.data / 'manifest.csv'} not found; nothing to measure.")
        return 0

    import pandas as pd
    import yaml

    from audioflow import stages
    from audioflow.config import load_params

    overrides = {"data.root": str(args.data), "data.group_column": None, "data.fold_column": None}
    for item in args.set:
        key, _, value = item.partition("=")
        overrides[key] = yaml.safe_load(value)
    with tempfile.TemporaryDirectory(prefix="audioflow-stage-costs-") as scratch:
        work = Path(scratch)
        data = args.data
        if args.limit:  # a smaller manifest beside the recordings' folder, paths made relative
            rows = pd.read_csv(args.data / "manifest.csv", dtype=str, keep_default_na=False).head(args.limit)
            (work / "subset").mkdir()
            os.symlink(args.data.resolve(), work / "subset" / "recordings", target_is_directory=True)
            data = work / "subset"
            rows["path"] = "recordings/" + rows["path"]
            (data / "manifest.csv").write_text(rows.to_csv(index=False))
            overrides["data.root"] = str(data)
        params = load_params(REPO / "params.yaml", overrides)
        lay = stages.Layout(work / "artifacts", work / "outputs")
        costs: dict[str, tuple[float, float]] = {}
        results = {}
        for name in (n for n, s in stages.STAGES.items() if not s.per_fold):  # one split, one model
            if name == "split":  # the baseline, between featurize and split as before
                sample_rate = results["featurize"].spec.sample_rate
                _, *costs["decode (baseline)"] = timed(decode_all, results["ingest"], sample_rate)
            results[name], *costs[name] = timed(stages.run_stage, name, params, lay, progress=False)
        ds, feats, result, metrics = (results[k] for k in ("ingest", "featurize", "train", "evaluate"))

    n, windows, epochs = len(ds.files), len(feats.index), len(result.history)
    base = costs["decode (baseline)"][0]
    print(f"stage costs: {n} recordings, {windows} windows, {epochs} epochs, test macro-F1 "
          f"{metrics['macro_f1']:.3f}; {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f}")
    print(f"{'stage':<20} {'wall s':>8} {'CPU s':>8} {'ms/recording':>13} {'x decode':>9} {'1M recordings':>14}")
    for stage, (wall, cpu) in costs.items():
        million = "constant" if stage in CONSTANT else f"{wall / n * MILLION / 3600:12.1f} h"
        print(f"{stage:<20} {wall:8.2f} {cpu:8.2f} {1000 * wall / n:13.3f} {wall / base:9.2f} {million:>14}")
    print("(train: for this many epochs; the 1M column scales linearly in one process; export is one model)")
    if args.json:
        args.json.write_text(json.dumps({
            "benchmark": "stage_costs", "n_recordings": n, "n_windows": windows, "epochs": epochs,
            "macro_f1": metrics["macro_f1"], "cpu_count": os.cpu_count(), "loadavg": os.getloadavg(),
            "stages": {k: {"wall_s": w, "cpu_s": c, "ms_per_recording": 1000 * w / n, "x_decode": w / base}
                       for k, (w, c) in costs.items()},
            "overrides": {k: v for k, v in overrides.items() if k != "data.root"},
        }, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
