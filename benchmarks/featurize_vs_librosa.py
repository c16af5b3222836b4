"""Featurize throughput: audioflow ``featurize()`` vs a hand-written per-file librosa script.

Both sides turn every FSDD recording into one log-mel window of the same shape
(n_files x n_mels x n_frames) with the same STFT / mel settings, in the same process,
after a warm-up, with the runs interleaved (a, b, a, b, ...). Reported: median wall seconds,
files/s and the ratio baseline_time / audioflow_time. Machines are noisy, so read the ratio,
not the absolute seconds.

    uv run python -m benchmarks.featurize_vs_librosa [--repeats 3] [--limit N] [--threads T]
                                                     [--blas-threads 1] [--json results.json]

Skips (exit 0, with a line saying why) when the FSDD folder or librosa is missing.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO.parent / "shared" / "data" / "fsdd"
TARGET_RATIO = 5.0  # the goal: audioflow >= 5x faster than per-file librosa

DESCRIPTION = """\
Featurize throughput benchmark: audioflow featurize() vs a per-file librosa script.

audioflow : featurize() over the FSDD dataset (ingested once, before timing; its hashing is
            not timed) into a fresh temp dir. Timed: decode (soundfile), resample (soxr; a
            no-op at 8 kHz), windowing, batched torchaudio log-mel, writing the .npy memmap,
            index.csv and features.json.
baseline  : for each file librosa.load(path, sr=RATE), pad/crop to the window,
            librosa.feature.melspectrogram(... same n_fft/win/hop/n_mels/fmin/fmax, htk=True,
            norm=None, power=2, center=True, pad_mode="constant"), librosa.power_to_db
            as audioflow levels it (features.level): peak, the default, is ref=np.max,
            top_db=features.top_db; absolute is ref=1, amin=1e-6, top_db=None (its -60 dB
            floor); append to a list, np.stack at the end (kept in memory, not written).

window_s defaults to 2.5 s so every FSDD file (max 2.28 s) is one window on both sides; the
shapes are asserted equal, the max |difference| of the two arrays (dB) is reported, not
asserted. Each method runs once on a warm-up subset first (numba JIT, torch init), then
--repeats times interleaved; medians are reported.
"""


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.featurize_vs_librosa",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--data",
        type=Path,
        default=DEFAULT_DATA,
        help="folder with manifest.csv (columns path,label; FSDD by default: %(default)s)",
    )
    p.add_argument(
        "--repeats",
        type=int,
        default=3,
        help="timed runs per method, interleaved a,b,a,b,... (default: %(default)s)",
    )
    p.add_argument(
        "--limit",
        type=int,
        default=None,
        help="use only N files, evenly spaced over the sorted manifest (quick run)",
    )
    p.add_argument(
        "--warmup",
        type=int,
        default=100,
        help="files in the untimed warm-up run of each method (default: %(default)s)",
    )
    p.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch.set_num_threads(T) (default: torch's default)",
    )
    p.add_argument(
        "--blas-threads",
        type=int,
        default=1,
        help="BLAS (OpenBLAS) threads for the librosa baseline, via threadpoolctl; "
        "0 = the library default. Default 1: a per-file script gains nothing "
        "from threading its small matmuls, and on a loaded machine 2 spinning "
        "BLAS threads made it ~8x slower, which would flatter audioflow "
        "(default: %(default)s)",
    )
    p.add_argument(
        "--window-s",
        type=float,
        default=2.5,
        help="window length in s; must hold the longest file (default: %(default)s)",
    )
    p.add_argument(
        "--sample-rate", type=int, default=8000, help="target rate (default: %(default)s)"
    )
    p.add_argument("--n-mels", type=int, default=64, help="mel bands (default: %(default)s)")
    p.add_argument(
        "--device",
        choices=["auto", "cpu", "cuda"],
        default="auto",
        help="audioflow features.device (default: %(default)s)",
    )
    p.add_argument("--json", type=Path, default=None, help="write the results to this JSON file")
    args = p.parse_args(argv)
    if args.repeats < 1:
        p.error("--repeats must be >= 1")
    if args.limit is not None and args.limit < 1:
        p.error("--limit must be >= 1")
    if args.threads is not None and args.threads < 1:
        p.error("--threads must be >= 1")
    if args.blas_threads < 0:
        p.error("--blas-threads must be >= 0")
    return args


def subset(ds, n: int | None):
    """The Dataset with only n files, evenly spaced over the sorted file table."""
    from audioflow.manifest import Dataset

    if n is None or n >= len(ds.files):
        return ds
    idx = np.unique(np.linspace(0, len(ds.files) - 1, n).round().astype(int))
    return Dataset(ds.root, ds.files.iloc[idx].reset_index(drop=True), ds.fingerprint)


def run_audioflow(ds, cfg, tmp_root: Path, tag: str) -> tuple[float, float, np.ndarray]:
    """(wall s, process CPU s, features memmap) of one featurize() run."""
    from audioflow.features import featurize

    out = Path(tempfile.mkdtemp(prefix=f"af-{tag}-", dir=tmp_root))
    c0, t0 = time.process_time(), time.perf_counter()
    feats = featurize(ds, cfg, out, progress=False)
    seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
    return seconds, cpu, feats.array


def run_librosa(paths: list[Path], spec, blas_threads: int = 1) -> tuple[float, float, np.ndarray]:
    """(wall s, process CPU s, features) of the hand-written script: one file at a time."""
    from contextlib import nullcontext

    from threadpoolctl import threadpool_limits

    limit = threadpool_limits(blas_threads, user_api="blas") if blas_threads else nullcontext()
    with limit:
        return _librosa_script(paths, spec)


def _librosa_script(paths: list[Path], spec) -> tuple[float, float, np.ndarray]:
    import librosa

    c0, t0 = time.process_time(), time.perf_counter()
    feats = []
    for path in paths:
        y, sr = librosa.load(path, sr=spec.sample_rate)
        y = librosa.util.fix_length(y, size=spec.window_samples)  # zero-pad / crop at the end
        S = librosa.feature.melspectrogram(
            y=y,
            sr=sr,
            n_fft=spec.n_fft,
            win_length=spec.win_length,
            hop_length=spec.hop_length,
            n_mels=spec.n_mels,
            fmin=spec.f_min,
            fmax=spec.f_max,
            power=2.0,
            center=True,
            pad_mode="constant",
            htk=True,
            norm=None,
        )
        if spec.level == "peak":  # amin far below any real cell: padding falls to the top_db floor
            feats.append(librosa.power_to_db(S, ref=np.max, amin=1e-20, top_db=spec.top_db))
        else:
            feats.append(librosa.power_to_db(S, ref=1.0, amin=1e-6, top_db=None))
    arr = np.stack(feats)
    return time.perf_counter() - t0, time.process_time() - c0, arr


def _loadavg() -> float | None:
    try:
        return os.getloadavg()[0]
    except (AttributeError, OSError):
        return None


def machine_info(threads: int) -> dict:
    import librosa
    import torch

    try:
        affinity = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        affinity = None
    cpu_model = None
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu_model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpu_model": cpu_model,
        "cpu_count": os.cpu_count(),
        "cpu_affinity": affinity,
        "cuda_available": torch.cuda.is_available(),
        "torch": torch.__version__,
        "torch_threads": threads,
        "librosa": librosa.__version__,
        "numpy": np.__version__,
    }


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    data = args.data
    if not (data / "manifest.csv").is_file():
        print(f"SKIP: FSDD not found ({data / 'manifest.csv'} is missing); nothing to benchmark.")
        return 0
    try:
        import librosa  # noqa: F401
    except ImportError:
        print("SKIP: librosa is not installed (it is in the dev group: uv sync --group dev).")
        return 0

    import torch

    from audioflow.config import DataConfig, FeaturesConfig
    from audioflow.features import FeatureSpec, pick_device
    from audioflow.manifest import ingest

    if args.threads is not None:
        torch.set_num_threads(args.threads)
    threads = torch.get_num_threads()

    # Ingest once, untimed (it hashes every file, which also warms the OS page cache for both).
    # Only path and label are read: groups matter to splitting, not to featurizing.
    full = ingest(DataConfig(root=str(data), manifest="manifest.csv"), progress=False)
    ds = subset(full, args.limit)
    warm = subset(full, min(args.warmup, len(full.files)))
    cfg = FeaturesConfig(
        sample_rate=args.sample_rate, window_s=args.window_s, n_mels=args.n_mels, device=args.device
    )
    spec = FeatureSpec.resolve(cfg, args.sample_rate)
    device = str(pick_device(cfg.device))  # what featurize() runs on, decided the same way
    paths = [ds.location(p) for p in ds.files["path"]]
    n = len(paths)

    print(f"featurize vs librosa: {n} files from {data}")
    print(
        f"  sample_rate={spec.sample_rate} window={spec.window_samples} samples "
        f"({args.window_s} s) n_fft={spec.n_fft} win_length={spec.win_length} "
        f"hop_length={spec.hop_length} n_mels={spec.n_mels} -> {spec.n_frames} frames"
    )
    blas = args.blas_threads or "default"
    print(
        f"  torch threads={threads}, baseline BLAS threads={blas}, cpu_count={os.cpu_count()}, "
        f"repeats={args.repeats}, warm-up={len(warm.files)} files",
        flush=True,
    )

    times: dict[str, list[float]] = {"af_wall": [], "af_cpu": [], "lr_wall": [], "lr_cpu": []}
    load_before = _loadavg()
    with tempfile.TemporaryDirectory(prefix="bench-featurize-") as tmp:
        tmp_root = Path(tmp)
        # Warm-up: numba JIT in librosa, torch/torchaudio init, mel filterbank construction.
        run_audioflow(warm, cfg, tmp_root, "warm")
        run_librosa([warm.location(p) for p in warm.files["path"]], spec, args.blas_threads)

        af_arr = lr_arr = None
        for r in range(args.repeats):
            wall, cpu, arr = run_audioflow(ds, cfg, tmp_root, f"r{r}")
            times["af_wall"].append(wall)
            times["af_cpu"].append(cpu)
            af_arr = arr  # the last run's memmap, read back for the comparison
            wall, cpu, lr_arr = run_librosa(paths, spec, args.blas_threads)
            times["lr_wall"].append(wall)
            times["lr_cpu"].append(cpu)
            print(
                f"  repeat {r + 1}/{args.repeats}: audioflow {times['af_wall'][-1]:.3f} s "
                f"(cpu {times['af_cpu'][-1]:.3f}), librosa {times['lr_wall'][-1]:.3f} s "
                f"(cpu {times['lr_cpu'][-1]:.3f})",
                flush=True,
            )

        expected = (n, spec.n_mels, spec.n_frames)
        assert af_arr.shape == lr_arr.shape == expected, (
            f"shape mismatch: audioflow {af_arr.shape}, librosa {lr_arr.shape}, "
            f"expected {expected} (is window_s long enough for every file?)"
        )
        diff = np.abs(np.asarray(af_arr, dtype=np.float64) - lr_arr.astype(np.float64))
        max_diff, mean_diff = float(diff.max()), float(diff.mean())
        del af_arr, arr, diff  # release the memmap before the temp dir goes
    load_after = _loadavg()

    med = {k: statistics.median(v) for k, v in times.items()}
    ratio = med["lr_wall"] / med["af_wall"]
    cpu_ratio = med["lr_cpu"] / med["af_cpu"]
    print()
    print(f"{'method':<26}{'median s':>10}{'files/s':>10}{'ratio':>8}{'median cpu s':>14}")
    print(
        f"{'audioflow featurize()':<26}{med['af_wall']:>10.3f}{n / med['af_wall']:>10.0f}"
        f"{1.0:>7.2f}x{med['af_cpu']:>14.3f}"
    )
    print(
        f"{'librosa per-file script':<26}{med['lr_wall']:>10.3f}{n / med['lr_wall']:>10.0f}"
        f"{ratio:>7.2f}x{med['lr_cpu']:>14.3f}"
    )
    print()
    print(
        f"speed-up (librosa median wall / audioflow median wall): {ratio:.2f}x "
        f"(target >= {TARGET_RATIO:.0f}x: {'met' if ratio >= TARGET_RATIO else 'NOT met'}); "
        f"in process CPU time: {cpu_ratio:.2f}x"
    )
    print(
        f"output shape {expected} on both sides; |audioflow - librosa| in dB: "
        f"max {max_diff:.4g}, mean {mean_diff:.4g}; audioflow device: {device}"
    )
    if load_before is not None:
        print(
            f"1-min load average: {load_before:.2f} before, {load_after:.2f} after "
            f"({os.cpu_count()} CPUs; above that, other processes competed for the cores)"
        )

    if args.json:
        result = {
            "benchmark": "featurize_vs_librosa",
            "command": "uv run python -m benchmarks.featurize_vs_librosa "
            + " ".join(sys.argv[1:] if argv is None else argv),
            "machine": machine_info(threads)
            | {
                "device": device,
                "baseline_blas_threads": blas,
                "loadavg_1min_before": load_before,
                "loadavg_1min_after": load_after,
            },
            "data": str(data),
            "n_files": n,
            "shape": list(expected),
            "spec": spec.to_dict(),
            "repeats": args.repeats,
            "warmup_files": len(warm.files),
            "audioflow_seconds": times["af_wall"],
            "librosa_seconds": times["lr_wall"],
            "audioflow_cpu_seconds": times["af_cpu"],
            "librosa_cpu_seconds": times["lr_cpu"],
            "audioflow_median_s": med["af_wall"],
            "librosa_median_s": med["lr_wall"],
            "audioflow_files_per_s": n / med["af_wall"],
            "librosa_files_per_s": n / med["lr_wall"],
            "ratio_librosa_over_audioflow": ratio,
            "cpu_ratio_librosa_over_audioflow": cpu_ratio,
            "target_ratio": TARGET_RATIO,
            "target_met": ratio >= TARGET_RATIO,
            "max_abs_diff_db": max_diff,
            "mean_abs_diff_db": mean_diff,
        }
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2) + "\n")
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
