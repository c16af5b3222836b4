"""Accuracy on real recordings: the Free Spoken Digit Dataset, with the product's defaults.

Each protocol is one `audioflow run` with params.yaml as it is; only the data and split
parameters are set, as the README tells a user with their own collection:

- official: recordings 0-4 of each speaker and digit are the test set (the manifest's `split`
  column; `split.strategy: predefined`);
- loso: leave one speaker out: `split.strategy: kfold` over `data.fold_column: speaker`, one
  fold per speaker, each fold's model never hearing that speaker (plus the final model).

It prints the official split's test accuracy, each speaker's accuracy and their mean ± std, and
the wall time of each run; --json writes the figures. Everything a run writes lives in one
temporary folder, removed at the end.

    uv run python -m benchmarks.fsdd_accuracy [--data ../shared/data/fsdd] [--protocol both]
        [--set section.key=value ...] [--json PATH]
"""

from __future__ import annotations

import argparse
import csv
import json
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
AUDIOFLOW = Path(sys.executable).parent / "audioflow"
DEFAULT_DATA = REPO.parent / "shared" / "data" / "fsdd"
TARGETS = {"official": 0.99, "loso": 0.90}  # issue 11: test accuracy, and mean accuracy over speakers


def speakers(data: Path) -> list[str]:
    with open(data / "manifest.csv", newline="") as f:
        return sorted({row["speaker"] for row in csv.DictReader(f)})


def protocol_overrides(name: str, data: Path) -> list[str]:
    common = [f"data.root={data}", "data.manifest=manifest.csv", "data.group_column=speaker"]
    if name == "official":
        return common + ["data.fold_column=split", "split.strategy=predefined"]
    folds = ",".join(speakers(data))
    return common + ["data.fold_column=speaker", "split.strategy=kfold", f"split.folds=[{folds}]"]


def run(name: str, data: Path, work: Path, extra: list[str]) -> dict:
    sets = [a for kv in protocol_overrides(name, data) + extra for a in ("--set", kv)]
    t0 = time.perf_counter()
    p = subprocess.run([str(AUDIOFLOW), "run", "-q", "--params", str(REPO / "params.yaml"),
                        "--artifacts", str(work / name / "artifacts"), "--outputs", str(work / name / "outputs"),
                        *sets], cwd=work, capture_output=True, text=True)
    seconds = time.perf_counter() - t0
    if p.returncode != 0:
        sys.exit(f"fsdd_accuracy: the {name} run failed:\n{p.stdout[-3000:]}\n{p.stderr[-5000:]}")
    m = json.loads((work / name / "outputs" / "metrics.json").read_text())
    spec = json.loads((work / name / "artifacts" / "features" / "features.json").read_text())["spec"]
    out = {"seconds": round(seconds, 1), "accuracy": m["accuracy"], "macro_f1": m["macro_f1"],
           "window_s": spec["window_samples"] / spec["sample_rate"], "n": m["n"]}
    if "folds" in m:
        out |= {"accuracy_std": m["std"]["accuracy"],
                "folds": {f: round(v["accuracy"], 4) for f, v in m["folds"].items()}}
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.fsdd_accuracy", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA,
                    help="FSDD-like folder: manifest.csv with path, label, speaker, split (default: %(default)s)")
    ap.add_argument("--protocol", choices=["official", "loso", "both"], default="both")
    ap.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                    help="also override a parameter (the benchmark's figures use none)")
    ap.add_argument("--json", type=Path, help="write the figures here")
    args = ap.parse_args(argv)
    if not (args.data / "manifest.csv").is_file():
        print(f"fsdd_accuracy: {args.data}/manifest.csv not found: nothing to measure", file=sys.stderr)
        return 0
    names = ["official", "loso"] if args.protocol == "both" else [args.protocol]
    result = {"benchmark": "fsdd_accuracy", "data": str(args.data), "overrides": args.set,
              "machine": f"{platform.machine()}, {platform.python_version()}"}
    with tempfile.TemporaryDirectory(prefix="audioflow-fsdd-") as work:
        for name in names:
            r = result[name] = run(name, args.data, Path(work), args.set)
            verdict = "meets" if r["accuracy"] >= TARGETS[name] else "MISSES"
            if name == "official":
                print(f"official split: test accuracy {r['accuracy']:.4f}, macro-F1 {r['macro_f1']:.4f} on {r['n']} "
                      f"recordings ({verdict} the {TARGETS[name]} target); window {r['window_s']:g} s; "
                      f"{r['seconds']:.0f} s")
            else:
                folds = ", ".join(f"{k} {v:.3f}" for k, v in r["folds"].items())
                print(f"leave one speaker out: mean accuracy {r['accuracy']:.4f} ± {r['accuracy_std']:.4f} "
                      f"({verdict} the {TARGETS[name]} target); {folds}; window {r['window_s']:g} s; "
                      f"{r['seconds']:.0f} s")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
