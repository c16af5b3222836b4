"""Accuracy on every collection in ../shared/data, each under its own protocol: the product's
defaults against a plain baseline on the same splits, and what each default adds.

For each collection (a folder with manifest.csv), the protocols follow from its columns, never
from its name:

- a ``split`` column (train/test): that split (``split.strategy: predefined``) -- "official";
- a ``fold`` column: cross-validation over its folds (``kfold``), a ``source`` column's groups
  kept together -- "folds";
- a ``speaker`` column: leave one speaker out (``kfold`` over the speakers) -- "loso".

Each protocol is one ``audioflow run`` with params.yaml as it is and only the data and split
settings given (what the README tells a user), then the plain baseline
(``benchmarks/_baseline.py``) trained and tested on exactly the splits that run made, then, with
``--ablate``, one run per default turned off. It prints, per protocol, the accuracy's mean over
folds, its spread (std over folds) and a 95 % interval (t over folds; the bootstrap interval of
evaluate on a single test split), the baseline's, their ratio and each side's wall time;
An ablation's effect is paired: the defaults' accuracy minus the ablated run's, fold by fold (the
same splits and seeds), with the mean and the spread of those differences. ``--json`` writes
every figure. Everything a run writes lives in one temporary folder, removed at the end.

The whole benchmark takes hours on a CPU (each protocol's run trains every fold's model). With
``--keep DIR`` each measured unit (a protocol's defaults and baseline, each ablation) is kept in
DIR as it finishes, and a rerun measures only what is missing or stale: a unit is reused only
for the same collection manifest, settings, params.yaml and code (audioflow/, benchmarks/).

    uv run python -m benchmarks.accuracy [--data DIR ...] [--protocol NAME ...] [--ablate all|NAME,...]
        [--limit N] [--set section.key=value ...] [--baseline-epochs 20] [--keep DIR] [--json PATH]
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import math
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
AUDIOFLOW = Path(sys.executable).parent / "audioflow"
SHARED = REPO.parent / "shared" / "data"
# Each default turned off in turn (--ablate): what it is, and the overrides that turn it off.
ABLATIONS = {
    "specaugment": ["train.freq_mask=0", "train.time_mask=0"],
    "gain": ["train.gain_db=0"],
    "shift": ["train.shift=0"],
    "speed": ["train.speed=0"],
    "noise": ["train.noise_prob=0"],
    "label_smoothing": ["train.label_smoothing=0"],
    "level_peak": ["features.level=absolute"],
    "refit": ["train.refit=false"],
}
T975 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262}  # t(0.975, df)


def manifest_rows(data: Path) -> list[dict[str, str]]:
    with open(data / "manifest.csv", newline="") as f:
        return list(csv.DictReader(f))


def group_column(cols: list[str]) -> str | None:
    """The column whose recordings must stay together (a speaker, a source clip, a patient)."""
    return next((c for c in ("speaker", "source", "patient", "group") if c in cols), None)


def values(rows: list[dict[str, str]], column: str) -> list[str]:
    return sorted({row[column] for row in rows}, key=lambda v: (len(v), v))


def protocols(data: Path) -> dict[str, list[str]]:
    """The protocols a collection's manifest columns define, as overrides."""
    rows = manifest_rows(data)
    cols = list(rows[0]) if rows else []
    group = group_column(cols)
    common = [f"data.root={data}", "data.manifest=manifest.csv", f"data.group_column={group}" if group
              else "data.group_column=null"]
    out = {}
    if "split" in cols:
        out["official"] = common + ["data.fold_column=split", "split.strategy=predefined"]
    if "fold" in cols:
        out["folds"] = common + ["data.fold_column=fold", "split.strategy=kfold",
                                 f"split.folds=[{','.join(values(rows, 'fold'))}]"]
    if "speaker" in cols:
        out["loso"] = common + ["data.fold_column=speaker", "split.strategy=kfold",
                                f"split.folds=[{','.join(values(rows, 'speaker'))}]"]
    return out or {"stratified": common + ["data.fold_column=null"]}


def subset(data: Path, limit: int, out: Path) -> Path:
    """A copy of at most ``limit`` recordings per label and fold (or split, or speaker), taken
    from as many groups (speaker, source, ...) as there are: a stratified subset, for a smoke run."""
    rows = manifest_rows(data)
    key = next((c for c in ("fold", "split", "speaker") if c in rows[0]), None)
    group = group_column(list(rows[0]))
    groups = {g: n for n, g in enumerate(dict.fromkeys(row.get(group) for row in rows))}
    cells = {c: n for n, c in enumerate(dict.fromkeys((row["label"], row.get(key)) for row in rows))}
    seen: dict = {}
    ranked = []  # the row's turn in its group and cell, then the groups in an order each cell rotates
    for i, row in enumerate(rows):
        cell = (row["label"], row.get(key))
        turn = seen[cell, row.get(group)] = seen.get((cell, row.get(group)), -1) + 1
        ranked.append((turn, (groups[row.get(group)] + cells[cell]) % len(groups), i))
    taken, kept = {}, []
    for *_, i in sorted(ranked):
        row, cell = rows[i], (rows[i]["label"], rows[i].get(key))
        if taken.get(cell, 0) < limit:
            taken[cell] = taken.get(cell, 0) + 1
            kept.append(i)
    kept = [rows[i] for i in sorted(kept)]
    for row in kept:
        (out / row["path"]).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(data / row["path"], out / row["path"])
    with open(out / "manifest.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(kept)
    return out


def summarize(accuracies: list[float], interval: tuple[float, float] | None = None) -> dict:
    """Mean, std over folds and a 95 % interval (t over folds, or the given one)."""
    k = len(accuracies)
    mean = sum(accuracies) / k
    std = math.sqrt(sum((a - mean) ** 2 for a in accuracies) / (k - 1)) if k > 1 else 0.0
    if interval is None and k > 1:
        half = T975.get(k - 1, 1.96) * std / math.sqrt(k)
        interval = (mean - half, mean + half)
    return {"accuracy": round(mean, 4), "std": round(std, 4), "folds": [round(a, 4) for a in accuracies],
            "interval": [round(v, 4) for v in interval] if interval else None}


def audioflow_run(overrides: list[str], work: Path) -> dict:
    sets = [a for kv in overrides for a in ("--set", kv)]
    work.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    p = subprocess.run([str(AUDIOFLOW), "run", "-q", "--params", str(REPO / "params.yaml"),
                        "--artifacts", str(work / "artifacts"), "--outputs", str(work / "outputs"), *sets],
                       cwd=work.parent, capture_output=True, text=True)
    seconds = time.perf_counter() - t0
    if p.returncode != 0:
        sys.exit(f"accuracy: audioflow run {' '.join(overrides)} failed:\n{p.stdout[-3000:]}\n{p.stderr[-5000:]}")
    m = json.loads((work / "outputs" / "metrics.json").read_text())
    if "folds" in m:
        out = summarize([v["accuracy"] for v in m["folds"].values()])
    else:
        iv = (m.get("intervals") or {}).get("accuracy") or {}
        out = summarize([m["accuracy"]], (iv["low"], iv["high"]) if iv.get("low") is not None else None)
    return out | {"seconds": round(seconds, 1)}


def baseline(artifacts: Path, epochs: int, work: Path) -> dict:
    """The plain baseline on the splits the defaults' run made (each fold's, or the one split)."""
    from audioflow import split as split_lib
    from audioflow.features import scratch_compiler_cache
    from benchmarks import _baseline as plain

    t0 = time.perf_counter()
    with scratch_compiler_cache():  # torch's compiler cache goes with the run, as in audioflow's stages
        feats = plain.load(plain.features(artifacts / "ingest", artifacts / "validate", work / "baseline-features"))
        folds = split_lib.fold_names(artifacts / "split")
        tables = [split_lib.load(artifacts / "split", f) for f in folds] or [split_lib.load(artifacts / "split")]
        scores = [plain.train_and_test(feats, t, epochs=epochs)["accuracy"] for t in tables]
    return summarize(scores) | {"seconds": round(time.perf_counter() - t0, 1)}


def code_version() -> str:
    """What a kept figure depends on besides its settings: params.yaml and the code that made it."""
    h = hashlib.sha256()
    for p in [REPO / "params.yaml", *sorted((REPO / "audioflow").rglob("*.py")),
              *sorted((REPO / "benchmarks").glob("*.py"))]:
        h.update(p.relative_to(REPO).as_posix().encode() + b"\0" + p.read_bytes())
    return h.hexdigest()[:16]


class Kept:
    """``--keep``: each measured unit's figures in ``folder/<name>.json``, reused while its key
    (settings, collection manifest, code version) is the same. No folder: everything is measured."""

    def __init__(self, folder: Path | None):
        self.folder, self.version = folder, code_version() if folder else ""
        if folder:
            folder.mkdir(parents=True, exist_ok=True)

    def get(self, name: str, settings: dict, compute: Callable[[], dict]) -> dict:
        if self.folder is None:
            return compute()
        from audioflow.atomic import write_text

        key = hashlib.sha256(json.dumps({"settings": settings, "code": self.version}, sort_keys=True).encode())
        path = self.folder / f"{name}.json"
        if path.exists() and (kept := json.loads(path.read_text())).get("key") == key.hexdigest():
            print(f"  {name}: kept in {path}", flush=True)
            return kept["figures"]
        figures = compute()
        write_text(path, json.dumps({"key": key.hexdigest(), "settings": settings, "code": self.version,
                                     "figures": figures}, indent=2) + "\n")
        return figures


def paired_effect(defaults: dict, off: dict) -> dict:
    """What a default adds: the defaults' accuracy minus the ablated run's, fold by fold."""
    diffs = [d - o for d, o in zip(defaults["folds"], off["folds"], strict=True)]
    mean = sum(diffs) / len(diffs)
    std = math.sqrt(sum((x - mean) ** 2 for x in diffs) / (len(diffs) - 1)) if len(diffs) > 1 else 0.0
    return {"effect": round(mean, 4), "effect_std": round(std, 4), "effect_folds": [round(x, 4) for x in diffs]}


def measure(overrides: list[str], ablate: list[str], epochs: int, work: Path, kept: Kept, name: str,
            manifest: str) -> dict:
    # The key names the collection by its manifest's content, not by where it lies (--limit's
    # subset is written to a new temporary folder each time).
    settings = {"overrides": [o for o in overrides if not o.startswith("data.root=")], "manifest": manifest}

    def defaults_and_baseline() -> dict:
        run = audioflow_run(overrides, work / "defaults")
        return {"defaults": run, "baseline": baseline(work / "defaults" / "artifacts", epochs, work)}

    r = dict(kept.get(f"{name}-defaults", settings | {"baseline_epochs": epochs}, defaults_and_baseline))
    r["ratio"] = round(r["defaults"]["accuracy"] / max(r["baseline"]["accuracy"], 1e-9), 3)
    r["time_ratio"] = round(r["defaults"]["seconds"] / max(r["baseline"]["seconds"], 1e-9), 2)
    for a in ablate:
        sets = overrides + ABLATIONS[a]
        off = kept.get(f"{name}-no-{a}", settings | {"overrides": settings["overrides"] + ABLATIONS[a]},
                       lambda sets=sets, a=a: audioflow_run(sets, work / f"no-{a}"))
        r.setdefault("ablations", {})[a] = off | paired_effect(r["defaults"], off)
    shutil.rmtree(work, ignore_errors=True)  # a protocol's folders go once measured
    return r


def _line(label: str, s: dict) -> str:
    iv = f" [{s['interval'][0]:.3f}, {s['interval'][1]:.3f}]" if s.get("interval") else ""
    spread = f" ± {s['std']:.4f}" if len(s["folds"]) > 1 else " (one test split)"
    return f"  {label:<22} {s['accuracy']:.4f}{spread}{iv}  {s['seconds']:.0f} s"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.accuracy", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, action="append",
                    help="a collection folder with manifest.csv; repeat for several (default: every folder of "
                         f"{SHARED} that has one)")
    ap.add_argument("--protocol", action="append", help="only these protocols (official, folds, loso, stratified)")
    ap.add_argument("--ablate", default="", help=f"'all' or a comma-separated subset of {', '.join(ABLATIONS)}")
    ap.add_argument("--limit", type=int, help="at most N recordings per label and fold: a smoke run")
    ap.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                    help="also override a parameter in every audioflow run (the benchmark's figures use none)")
    ap.add_argument("--baseline-epochs", type=int, default=20)
    ap.add_argument("--keep", type=Path, metavar="DIR",
                    help="keep each measured unit's figures in DIR and reuse them in a rerun (same manifest, "
                         "settings, params.yaml and code): a long benchmark continues where it stopped")
    ap.add_argument("--json", type=Path, help="write the figures here")
    args = ap.parse_args(argv)
    ablate = list(ABLATIONS) if args.ablate == "all" else [a for a in args.ablate.split(",") if a]
    if unknown := set(ablate) - set(ABLATIONS):
        ap.error(f"--ablate: unknown {sorted(unknown)}; known: {', '.join(ABLATIONS)}")
    collections = args.data or sorted(p.parent for p in SHARED.glob("*/manifest.csv"))
    collections = [c for c in collections if (c / "manifest.csv").is_file()]
    if not collections:
        print(f"accuracy: no collection with a manifest.csv ({SHARED}): nothing to measure", file=sys.stderr)
        return 0
    result = {"benchmark": "accuracy", "overrides": args.set, "limit": args.limit, "baseline_epochs":
              args.baseline_epochs, "machine": f"{platform.machine()}, {platform.python_version()}", "results": {}}
    kept = Kept(args.keep)
    with tempfile.TemporaryDirectory(prefix="audioflow-accuracy-") as tmp:
        for data in collections:
            if args.limit:
                data = subset(data.resolve(), args.limit, Path(tmp) / f"{data.name}-subset")
            manifest = hashlib.sha256((data / "manifest.csv").read_bytes()).hexdigest()[:16]
            for name, overrides in protocols(data.resolve()).items():
                if args.protocol and name not in args.protocol:
                    continue
                label = f"{data.name.removesuffix('-subset')}-{name}"
                r = measure(overrides + args.set, ablate, args.baseline_epochs, Path(tmp) / label, kept, label,
                            manifest)
                result["results"][f"{data.name.removesuffix('-subset')}/{name}"] = r
                print(f"{data.name.removesuffix('-subset')} / {name}: defaults/baseline accuracy {r['ratio']:.3f}, "
                      f"time {r['time_ratio']:.2f}x")
                print(_line("audioflow defaults", r["defaults"]))
                print(_line("plain baseline", r["baseline"]))
                for a, off in r.get("ablations", {}).items():
                    print(_line(f"without {a}", off) + f"  (the default adds {off['effect']:+.4f} "
                          f"± {off['effect_std']:.4f} over folds)")
                sys.stdout.flush()
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
