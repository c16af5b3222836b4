"""What each stage costs: once per run (fixed) and per recording, against a bare decode.

For every collection (``--data``, repeatable; default: every folder of ../shared/data with a
manifest.csv), the stages run in-process (``audioflow.stages``, what every front calls) on
stratified subsets of two or more sizes (``--sizes``: fractions of the collection or counts),
interleaved (size by size, stage by stage, ``--repeats`` rounds) after one untimed warm-up
round. A line through the median times at each size splits a stage's time into its fixed cost
(the intercept: what it spends however few recordings there are) and its cost per recording
(the slope), the figure to extrapolate from. The baseline, timed the same way, is a bare decode
of every recording (soundfile + soxr, the seam every stage reads through); each stage's cost per
recording is also given as a multiple of the decode's.

What a user waits for on top, in a fresh process: ``start`` is importing audioflow and reading
params (what every front does before any stage); ``imports`` is a stage's first run less its
second in that fresh process (the libraries it imports and their first-call set-up), measured
on the smallest subset in a subprocess per stage. ``great_expectations`` is importing it after
everything else validate imports.

``--memory N ...`` generates N recordings (made here, never committed: short noisy tones in
four classes, 0.2 to 2 s at 16 kHz) and runs validate and featurize on them, each in its own
process after importing its libraries: the anonymous memory then, its peak while the stage ran
(what the process holds: the pages of the memory-mapped feature store are file-backed and not
counted there) and the peak resident set of the whole process.

    uv run python -m benchmarks.stage_costs [--data DIR ...] [--sizes 0.25 1] [--limit N]
        [--repeats 3] [--stages data|all|NAME,...] [--memory N ...] [--set section.key=value ...]
        [--json PATH]
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import platform
import random
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data"
DATA_STAGES = ("ingest", "validate", "featurize", "split")
ALL_STAGES = (*DATA_STAGES, "train", "evaluate", "export")
DECODE = "decode (baseline)"
MILLION = 1_000_000


def stratified(rows: list[dict[str, str]], n: int, seed: int = 0) -> list[dict[str, str]]:
    """``n`` rows in the labels' proportions (largest remainders), each label's in a seeded
    shuffle, in manifest order: a smaller ``n`` gives a subset of a larger one's rows."""
    by_label: dict[str, list[int]] = {}
    for i, row in enumerate(rows):
        by_label.setdefault(row["label"], []).append(i)
    share = {lab: n * len(idx) / len(rows) for lab, idx in by_label.items()}
    take = {lab: int(s) for lab, s in share.items()}
    for lab in sorted(share, key=lambda lab: (take[lab] - share[lab], lab))[: n - sum(take.values())]:
        take[lab] += 1
    kept = []
    for lab, idx in by_label.items():
        order = idx[:]
        random.Random(f"{seed}:{lab}").shuffle(order)
        kept += order[: take[lab]]
    return [rows[i] for i in sorted(kept)]


def subset_folder(data: Path, rows: list[dict[str, str]], out: Path) -> Path:
    """A folder holding ``rows``'s recordings (a link each, in the collection's own tree) and
    their manifest: a stage lists, opens and reads it as it would the collection."""
    for row in rows:
        (out / row["path"]).parent.mkdir(parents=True, exist_ok=True)
        os.symlink((data / row["path"]).resolve(), out / row["path"])
    with open(out / "manifest.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    return out


def sizes_of(total: int, sizes: list[float]) -> list[int]:
    out = sorted({min(total, round(s * total) if s <= 1 else int(s)) for s in sizes})
    if len(out) < 2:
        raise SystemExit(f"--sizes {sizes}: need two or more different sizes (the collection has {total})")
    return out


def fit(ns: list[int], seconds: list[float]) -> tuple[float, float]:
    """Least squares ``seconds = fixed + per * n``: (fixed s, per-recording s)."""
    mean_n, mean_s = statistics.fmean(ns), statistics.fmean(seconds)
    per = (sum((n - mean_n) * (s - mean_s) for n, s in zip(ns, seconds))
           / sum((n - mean_n) ** 2 for n in ns))
    return mean_s - per * mean_n, per


def overrides_for(root: Path, sets: dict) -> dict:
    return {"data.root": str(root), "data.manifest": "manifest.csv", "data.group_column": None,
            "data.fold_column": None} | sets


def decode_all(root: Path, paths: list[str], sample_rate: int | None) -> int:
    """Decode every recording, mixed to mono and resampled to ``sample_rate`` (None: native)."""
    from audioflow import audio

    if sample_rate is None:
        return sum(len(audio.to_mono(audio.read(root / p)[0])) for p in paths)
    return sum(len(audio.load(root / p, sample_rate)) for p in paths)


def cold(stage: str, root: str, artifacts: str, sets: str) -> None:
    """In a fresh interpreter: start-up, then the stage twice, noting when each run reached its
    first recording (its first decode, or ingest's first hash); prints JSON."""
    t0 = time.perf_counter()
    from audioflow import stages
    from audioflow.config import load_params

    params = load_params(REPO / "params.yaml", overrides_for(Path(root), json.loads(sets)))
    lay = stages.Layout(Path(artifacts), Path(artifacts) / "outputs")
    t1 = time.perf_counter()
    from audioflow import audio, manifest  # (soundfile, pandas: the stage's imports, counted as such)

    first: list[float] = []

    def noting(fn):
        def wrapped(*a, **k):
            first.append(time.perf_counter())
            return fn(*a, **k)
        return wrapped

    audio.read = noting(audio.read)
    hashing = "_sha256" if hasattr(manifest, "_sha256") else "sha256_stream"  # (before 2026-12-07: the latter)
    setattr(manifest, hashing, noting(getattr(manifest, hashing)))
    stages.run_stage(stage, params, lay, progress=False)
    t2, reached_cold = time.perf_counter(), first[:1]
    first.clear()
    stages.run_stage(stage, params, lay, progress=False)
    t3, reached_warm = time.perf_counter(), first[:1]
    print(json.dumps({"start_s": t1 - t0, "first_s": t2 - t1, "second_s": t3 - t2,
                      "before_first_cold_s": reached_cold[0] - t1 if reached_cold else None,
                      "before_first_warm_s": reached_warm[0] - t2 if reached_warm else None}))


def in_fresh_process(code: str) -> dict:
    p = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=False)
    if p.returncode:
        raise SystemExit(f"a measurement in a fresh process failed:\n{p.stdout}{p.stderr}"[-4000:])
    return json.loads(p.stdout.strip().splitlines()[-1])


def gx_import_s() -> float:
    """Importing Great Expectations after what validate imports anyway (pandas, numpy, audio),
    the way validate imports it (``validation_gx._import_gx``)."""
    code = ("import time, json, pandas, numpy, soundfile, soxr, audioflow.validation\n"
            "from audioflow.validation_gx import _import_gx\n"
            "t = time.perf_counter(); _import_gx()\n"
            "print(json.dumps({'s': time.perf_counter() - t}))")
    return in_fresh_process(code)["s"]


def measure(data: Path, args, sets: dict, scratch: Path) -> dict:
    from audioflow import stages
    from audioflow.config import load_params

    with open(data / "manifest.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    if args.limit:
        rows = stratified(rows, min(args.limit, len(rows)))
    ns = sizes_of(len(rows), args.sizes)
    runs = []  # per size: its root, params, layout, recordings' paths
    for n in ns:
        sub = stratified(rows, n)
        root = subset_folder(data, sub, scratch / data.name / f"n{n}" / "data")
        params = load_params(REPO / "params.yaml", overrides_for(root, sets))
        lay = stages.Layout(scratch / data.name / f"n{n}" / "artifacts", scratch / data.name / f"n{n}" / "outputs")
        runs.append((root, params, lay, [r["path"] for r in sub]))
    times: dict[str, list[list[float]]] = {s: [[] for _ in ns] for s in (*args.stages, DECODE)}
    windows, rates = [], [None] * len(ns)
    for rnd in range(args.repeats + 1):  # round 0: the warm-up, which also makes every input
        for k, (root, params, lay, paths) in enumerate(runs):
            for stage in (*args.stages, DECODE):  # the baseline right after the stages, at featurize's rate
                t = time.perf_counter()
                if stage == DECODE:
                    decode_all(root, paths, rates[k])
                else:
                    result = stages.run_stage(stage, params, lay, progress=False)
                    if stage == "featurize" and not rnd:
                        rates[k] = result.spec.sample_rate
                        windows.append(len(result.index))
                if rnd:
                    times[stage][k].append(time.perf_counter() - t)
    median = {s: [statistics.median(v) for v in per_size] for s, per_size in times.items()}
    lines = {s: fit(ns, m) for s, m in median.items()}
    decode_per = lines[DECODE][1]  # a line through tiny sizes can tilt the wrong way: no ratio then
    out = {"sizes": ns, "windows": windows, "stages": {}}
    smallest = runs[0]
    for s, (fixed, per) in lines.items():
        entry = {"median_s": median[s], "fixed_s": fixed, "ms_per_recording": 1000 * per,
                 "x_decode": per / decode_per if decode_per > 0 and per > 0 else math.nan}
        if s != DECODE and not args.no_cold:
            code = (f"from benchmarks.stage_costs import cold; cold({s!r}, {str(smallest[0])!r}, "
                    f"{str(smallest[2].artifacts)!r}, {json.dumps(sets)!r})")
            c = in_fresh_process(code)
            entry |= {"start_s": c["start_s"], "imports_s": c["first_s"] - c["second_s"],
                      "before_first_cold_s": c["before_first_cold_s"], "before_first_warm_s": c["before_first_warm_s"]}
        out["stages"][s] = entry
    return out


def print_collection(name: str, r: dict) -> None:
    ns = r["sizes"]
    print(f"\n{name}: {' and '.join(map(str, ns))} recordings (stratified), "
          f"{' and '.join(map(str, r['windows'])) or '?'} windows")
    print(f"{'stage':<18} " + " ".join(f"{f'{n} rec s':>10}" for n in ns)
          + f" {'fixed s':>8} {'ms/rec':>8} {'x decode':>8} {'imports s':>9} {'to 1st s':>8} {'1M rec h':>9}")
    for s, e in r["stages"].items():
        imports = f"{e['imports_s']:9.2f}" if "imports_s" in e else f"{'':>9}"
        first = e.get("before_first_warm_s")
        first = f"{first:8.3f}" if first is not None else f"{'':>8}"
        million = e["ms_per_recording"] * MILLION / 1000 / 3600
        print(f"{s:<18} " + " ".join(f"{m:10.3f}" for m in e["median_s"])
              + f" {e['fixed_s']:8.3f} {e['ms_per_recording']:8.4f} {e['x_decode']:8.2f} {imports} {first}"
              f" {million:9.2f}")


# --- memory: peak RSS of validate and featurize on generated recordings --------------------------

def generate(out: Path, n: int, seed: int = 0) -> Path:
    """``n`` recordings in four classes (tones and noise bands, 0.2 to 2 s, 16 kHz), a manifest."""
    import numpy as np
    import soundfile as sf

    rng = np.random.default_rng(seed)
    sr, labels = 16000, ("low", "mid", "high", "noise")
    rows = []
    for i in range(n):
        label = labels[i % 4]
        t = np.arange(int(sr * rng.uniform(0.2, 2.0))) / sr
        x = 0.05 * rng.standard_normal(len(t))
        if label != "noise":
            x += 0.3 * np.sin(2 * np.pi * {"low": 220, "mid": 880, "high": 3000}[label] * rng.uniform(0.9, 1.1) * t)
        rel = f"{label}/{i // 1000:03d}/{i:06d}.wav"
        (out / rel).parent.mkdir(parents=True, exist_ok=True)
        sf.write(out / rel, x.astype(np.float32), sr, subtype="PCM_16")
        rows.append({"path": rel, "label": label})
    with open(out / "manifest.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["path", "label"])
        w.writeheader()
        w.writerows(rows)
    return out


STAGE_LIBRARIES = {  # what each stage imports, loaded before its memory is counted
    "validate": ("audioflow.validation", "great_expectations", "matplotlib.figure"),
    "featurize": ("audioflow.features",),
}


def peak_memory(stage: str, root: Path, artifacts: Path, sets: dict) -> dict:
    """Run ``stage`` in its own process (``stage_memory``): its memory after importing its
    libraries, and the peaks while it ran."""
    code = (f"from benchmarks.stage_costs import stage_memory; stage_memory({stage!r}, {str(root)!r}, "
            f"{str(artifacts)!r}, {json.dumps(sets)!r})")
    p = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=False)
    if p.returncode:
        raise SystemExit(f"{stage} on {root} failed:\n{p.stdout}{p.stderr}"[-4000:])
    return json.loads(p.stdout.strip().splitlines()[-1])


def _status_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def stage_memory(stage: str, root: str, artifacts: str, sets: str) -> None:
    """In its own process: import the stage's libraries, then run it once while a thread samples
    the anonymous memory (what the process holds; the memory-mapped feature store's pages are
    file-backed and not counted there) every 10 ms; prints JSON."""
    import importlib

    from audioflow import stages
    from audioflow.config import load_params

    for module in STAGE_LIBRARIES.get(stage, ()):
        importlib.import_module(module)
    params = load_params(REPO / "params.yaml", overrides_for(Path(root), json.loads(sets)))
    before, peak, done = _status_kb("RssAnon"), [0], threading.Event()

    def sample() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], _status_kb("RssAnon"))
            done.wait(0.01)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    t = time.perf_counter()
    stages.run_stage(stage, params, stages.Layout(Path(artifacts), Path(artifacts) / "outputs"), progress=False)
    seconds = time.perf_counter() - t
    done.set()
    sampler.join()
    peak[0] = max(peak[0], _status_kb("RssAnon"))
    print(json.dumps({"after_imports_anon_mb": before / 1024, "peak_anon_mb": peak[0] / 1024,
                      "growth_anon_mb": (peak[0] - before) / 1024, "seconds": seconds,
                      "peak_rss_mb": _status_kb("VmHWM") / 1024}))  # (ru_maxrss keeps the parent's across exec)


def memory(ns: list[int], sets: dict, scratch: Path) -> dict:
    from audioflow import stages
    from audioflow.config import load_params

    result = {}
    for n in ns:
        root = generate(scratch / f"gen{n}" / "data", n)
        artifacts = scratch / f"gen{n}" / "artifacts"
        params = load_params(REPO / "params.yaml", overrides_for(root, sets))
        stages.run_stage("ingest", params, stages.Layout(artifacts, artifacts / "outputs"), progress=False)
        result[n] = {s: peak_memory(s, root, artifacts, sets) for s in ("validate", "featurize")}
        store = artifacts / "features" / "features.npy"
        result[n]["feature_store_mb"] = store.stat().st_size / 2**20 if store.exists() else 0.0
        print(f"{n} generated recordings: " + "; ".join(
            f"{s} peak anonymous {m['peak_anon_mb']:.0f} MB ({m['growth_anon_mb']:+.0f} MB over its "
            f"{m['after_imports_anon_mb']:.0f} MB after imports), peak resident {m['peak_rss_mb']:.0f} MB, "
            f"{m['seconds']:.1f} s"
            for s, m in result[n].items() if isinstance(m, dict))
            + f"; feature store {result[n]['feature_store_mb']:.0f} MB")
    return result


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, action="append",
                    help="a folder with manifest.csv (repeatable; default: every one in ../shared/data)")
    ap.add_argument("--sizes", type=float, nargs="+", default=[0.25, 1.0],
                    help="subset sizes: fractions of the collection (<= 1) or counts (default: 0.25 1)")
    ap.add_argument("--limit", type=int, help="first take a stratified subset of N recordings (a quick run)")
    ap.add_argument("--repeats", type=int, default=3, help="timed rounds after the warm-up (default 3)")
    ap.add_argument("--stages", default="data",
                    help="data (ingest, validate, featurize, split: the default), all (+ train, evaluate, "
                         "export), or names separated by commas")
    ap.add_argument("--memory", type=int, nargs="*", default=[], metavar="N",
                    help="also the peak memory of validate and featurize on N generated recordings")
    ap.add_argument("--no-cold", action="store_true", help="skip the fresh-process start-up measurements")
    ap.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                    help="parameter override (repeatable), e.g. --set features.window_s=1.0")
    ap.add_argument("--json", type=Path, help="write every figure here")
    args = ap.parse_args(argv)
    args.stages = {"data": DATA_STAGES, "all": ALL_STAGES}.get(args.stages) or tuple(args.stages.split(","))
    if unknown := [s for s in args.stages if s not in ALL_STAGES]:
        ap.error(f"--stages: unknown {unknown}; one of {', '.join(ALL_STAGES)}")
    if "featurize" not in args.stages and any(s in args.stages for s in ALL_STAGES[3:]):
        ap.error("--stages: split and later stages need featurize (and ingest, validate) before them")
    args.stages = tuple(s for s in ALL_STAGES if s in args.stages)  # pipeline order
    datas = args.data or sorted(p for p in SHARED.glob("*") if (p / "manifest.csv").is_file())
    if missing := [d for d in datas if not (d / "manifest.csv").is_file()]:
        print(f"SKIP: no manifest.csv in {', '.join(map(str, missing))}; nothing to measure.")
        return 0
    if not datas and not args.memory:
        print(f"SKIP: no collection with a manifest.csv in {SHARED}; nothing to measure.")
        return 0

    import signal

    import yaml

    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # a stopped run still removes its folder
    sets = {}
    for item in args.set:
        key, _, value = item.partition("=")
        sets[key] = yaml.safe_load(value)
    result = {"benchmark": "stage_costs", "overrides": sets, "repeats": args.repeats, "stages": list(args.stages),
              "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                          "loadavg_start": os.getloadavg()}, "collections": {}}
    print(f"stage costs: {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f}; medians of "
          f"{args.repeats} interleaved rounds after a warm-up")
    with tempfile.TemporaryDirectory(prefix="audioflow-stage-costs-") as scratch:
        for data in datas:
            r = result["collections"][data.name] = measure(data.resolve(), args, sets, Path(scratch))
            print_collection(data.name, r)
        if datas and not args.no_cold:
            result["great_expectations_import_s"] = gx_import_s()
            start = next(iter(next(iter(result["collections"].values()))["stages"].values())).get("start_s")
            print(f"\nstart (import audioflow, read params): {start:.2f} s; importing Great Expectations "
                  f"after the rest of validate's imports: {result['great_expectations_import_s']:.2f} s")
        print("(fixed and per recording: a line through the medians at each size; imports: a fresh process's "
              "first run less its second; to 1st: from a warm stage's start to its first recording read; "
              "1M rec h: the per-recording cost times a million, one process)")
        if args.memory:
            result["memory"] = memory(args.memory, sets, Path(scratch))
    result["machine"]["loadavg_end"] = os.getloadavg()
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
