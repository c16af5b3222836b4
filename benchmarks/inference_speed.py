"""Inference speed on CPU: PyTorch eager vs ONNX Runtime FP32 vs ONNX Runtime INT8, and the service.

One model (the default LogMelCNN of params.yaml, on 1-second clips at --sample-rate, weights
initialised with a fixed seed: speed does not depend on what the weights learned) is exported
the way `audioflow export` does it (waveform in, logits out) and quantized the way
`audioflow export --int8` does it (calibrated on seeded noise and tones here). Then, at one
thread and at the default thread count, interleaved (eager, fp32, int8, eager, ...):

- batch-1 latency: median ms per call;
- batch-64 throughput: clips per second (median over repeats);
- `audioflow serve` (FP32 and INT8 models, default threads): requests per second for
  --requests POSTs of a 1-s WAV from 8 client threads.

The ORT profiler then splits an FP32 and an INT8 batch-64 run into the front-end (STFT, mel,
log: every node before the first Conv) and the classifier. Ratios are against eager in the
same run; machines here are noisy, so read the ratios, not the absolute times.

    uv run python -m benchmarks.inference_speed [--repeats 30] [--requests 500] [--json PATH]
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
TARGETS = {"fp32_over_eager_b1": 2.0, "fp32_over_eager_b64": 2.0, "int8_over_eager_b1": 3.0,
           "int8_over_eager_b64": 3.0}  # the goals, at one thread


def build_models(work: Path, sample_rate: int, channels: list[int] | None) -> tuple[object, Path, Path, dict]:
    import torch

    from audioflow.checkpoint import ModelMeta, save_model
    from audioflow.config import load_params
    from audioflow.export import WaveformClassifier, export_onnx
    from audioflow.features import FeatureSpec
    from audioflow.models import create_model
    from audioflow.quantize import quantize_int8

    params = load_params(REPO / "params.yaml", {"features.window_s": 1.0})
    spec = FeatureSpec.resolve(params.features, sample_rate)
    torch.manual_seed(0)
    kwargs = {"n_mels": spec.n_mels, "n_classes": 10, "channels": channels or params.model.cnn.channels,
              "dropout": 0.0}
    model = create_model(params.model.name, **kwargs).eval()
    model.set_normalization(-40 + 5 * torch.randn(spec.n_mels), 8 + torch.rand(spec.n_mels))
    meta = ModelMeta(params.model.name, kwargs, [f"c{i}" for i in range(10)], spec, params_hash="b" * 16,
                     dataset_fingerprint="b" * 16)
    model_dir = save_model(model, meta, work / "model")
    clips = calibration_clips(spec.window_samples, sample_rate, 64)
    fp32 = work / "model.onnx"
    export_onnx(model_dir, fp32, check_audio=list(clips[:8]))
    int8 = work / "model.int8.onnx"
    quantize_int8(fp32, int8, list(clips))
    eager, _ = WaveformClassifier.from_model_dir(model_dir)
    return eager.eval(), fp32, int8, {"window_samples": spec.window_samples, "n_mels": spec.n_mels,
                                      "channels": kwargs["channels"], "sample_rate": sample_rate}


def calibration_clips(window: int, sr: int, n: int) -> np.ndarray:
    rng = np.random.default_rng(0)
    t = np.arange(window) / sr
    tones = [0.3 * np.sin(2 * np.pi * f * t) for f in rng.uniform(100, sr / 3, n)]
    return np.stack([x + 0.05 * rng.standard_normal(window) for x in tones]).astype(np.float32)


def ort_session(path: Path, threads: int | None, profile_prefix: str | None = None):
    from audioflow.inference import import_onnxruntime

    ort = import_onnxruntime()
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    if threads:
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
    if profile_prefix:
        opts.enable_profiling = True
        opts.profile_file_prefix = profile_prefix
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def timed_calls(engines: dict, batch: np.ndarray, repeats: int) -> dict[str, list[float]]:
    """Seconds per call of each engine, interleaved, after one warm-up call each."""
    for fn in engines.values():
        fn(batch)
    times: dict[str, list[float]] = defaultdict(list)
    for _ in range(repeats):
        for name, fn in engines.items():
            t0 = time.perf_counter()
            fn(batch)
            times[name].append(time.perf_counter() - t0)
    return times


def engines_for(eager, fp32: Path, int8: Path, threads: int | None) -> dict:
    import torch

    torch.set_num_threads(threads or os.cpu_count() or 1)
    sessions = {"ort_fp32": ort_session(fp32, threads), "ort_int8": ort_session(int8, threads)}

    def eager_fn(x: np.ndarray):
        with torch.inference_mode():
            return eager(torch.from_numpy(x))

    def ort_fn(session):
        name = session.get_inputs()[0].name
        return lambda x: session.run(None, {name: x})

    return {"eager": eager_fn} | {k: ort_fn(s) for k, s in sessions.items()}


def profiled_events(path: Path, batch: np.ndarray, runs: int, work: Path) -> list[dict]:
    """ORT's profiler events for ``runs`` calls on ``batch`` at one thread (files under ``work``)."""
    session = ort_session(path, 1, profile_prefix=str(work / f"profile-{path.stem}"))
    name = session.get_inputs()[0].name
    for _ in range(runs):
        session.run(None, {name: batch})
    return json.loads(Path(session.end_profiling()).read_text())


def profile_split(path: Path, batch: np.ndarray, runs: int, work: Path) -> dict[str, float]:
    """Share of node time in the front-end vs the classifier, from ORT's profiler."""
    import onnx

    from audioflow.quantize import frontend_nodes

    front = set(frontend_nodes(onnx.load(str(path))))
    events = profiled_events(path, batch, runs, work)
    split: dict[str, float] = defaultdict(float)
    by_op: dict[str, float] = defaultdict(float)
    for e in events:
        if e.get("cat") != "Node" or not e.get("name", "").endswith("_kernel_time"):
            continue
        node = e["name"][: -len("_kernel_time")]
        part = "front_end" if node in front or node.startswith(tuple(front)) else "classifier"
        split[part] += e["dur"]
        by_op[e.get("args", {}).get("op_name", "?")] += e["dur"]
    total = sum(split.values()) or 1.0
    top = sorted(by_op.items(), key=lambda kv: -kv[1])[:6]
    return {"front_end_share": split["front_end"] / total, "classifier_share": split["classifier"] / total,
            "top_ops": {op: round(d / total, 4) for op, d in top}}


def serve_rps(model: Path, n_requests: int, sample_rate: int, window: int) -> float:
    import soundfile as sf

    from tests.test_serve import post_file, running_server

    buf = io.BytesIO()
    sf.write(buf, calibration_clips(window, sample_rate, 1)[0], sample_rate, format="WAV", subtype="PCM_16")
    data = buf.getvalue()
    with running_server(model, "-q") as server, ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda _: post_file(server["port"], "clip.wav", data), range(16)))  # warm-up
        t0 = time.perf_counter()
        statuses = list(pool.map(lambda _: post_file(server["port"], "clip.wav", data)[0], range(n_requests)))
        seconds = time.perf_counter() - t0
    if statuses.count(200) != n_requests:
        sys.exit(f"serve: {n_requests - statuses.count(200)} of {n_requests} requests failed")
    return n_requests / seconds


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.inference_speed", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=30, help="timed calls per engine and setting (default: 30)")
    ap.add_argument("--requests", type=int, default=500, help="POSTs per service run (default: 500)")
    ap.add_argument("--sample-rate", type=int, default=16000, help="Hz of the 1-second clips (default: 16000)")
    ap.add_argument("--channels", type=int, nargs="+", help="CNN widths (default: model.cnn.channels of params.yaml)")
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 0],
                    help="thread counts to measure; 0 = the default (all cores) (default: 1 0)")
    ap.add_argument("--json", type=Path, help="also write the figures here")
    args = ap.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="audioflow-bench-") as scratch:
        work = Path(scratch)
        eager, fp32, int8, shape = build_models(work, args.sample_rate, args.channels)
        clips = calibration_clips(shape["window_samples"], args.sample_rate, 64)
        results: dict = {"benchmark": "inference_speed", "model": shape,
                         "size_bytes": {"fp32": fp32.stat().st_size, "int8": int8.stat().st_size},
                         "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                                     "load_average": os.getloadavg()[0]}, "threads": {}}
        for threads in args.threads:
            engines = engines_for(eager, fp32, int8, threads or None)
            b1 = timed_calls(engines, clips[:1], args.repeats)
            b64 = timed_calls(engines, clips, max(3, args.repeats // 5))
            row = {"batch1_ms": {k: 1000 * statistics.median(v) for k, v in b1.items()},
                   "batch64_clips_per_s": {k: 64 / statistics.median(v) for k, v in b64.items()}}
            ms, cps = row["batch1_ms"], row["batch64_clips_per_s"]
            for q in ("fp32", "int8"):
                row[f"{q}_over_eager_b1"] = ms["eager"] / ms[f"ort_{q}"]
                row[f"{q}_over_eager_b64"] = cps[f"ort_{q}"] / cps["eager"]
            results["threads"][str(threads or "default")] = row
        results["profile"] = {q: profile_split(p, clips, 3, work) for q, p in (("fp32", fp32), ("int8", int8))}
        results["serve_rps"] = {q: serve_rps(p, args.requests, args.sample_rate, shape["window_samples"])
                                for q, p in (("fp32", fp32), ("int8", int8))}

    print(f"inference speed: 1-s clips at {args.sample_rate} Hz, CNN {shape['channels']}, "
          f"{results['machine']['cpus']} CPUs, load average {results['machine']['load_average']:.2f}; "
          f"model {results['size_bytes']['fp32'] / 1e6:.2f} MB FP32, {results['size_bytes']['int8'] / 1e6:.2f} MB INT8")
    print(f"{'threads':<8} {'engine':<9} {'batch-1 ms':>11} {'x eager':>8} {'batch-64 clips/s':>17} {'x eager':>8}")
    for threads, row in results["threads"].items():
        for engine in ("eager", "ort_fp32", "ort_int8"):
            ms, cps = row["batch1_ms"][engine], row["batch64_clips_per_s"][engine]
            print(f"{threads:<8} {engine:<9} {ms:11.3f} {row['batch1_ms']['eager'] / ms:8.2f} {cps:17.1f} "
                  f"{cps / row['batch64_clips_per_s']['eager']:8.2f}")
    one = results["threads"].get("1")
    if one:
        met = {k: one[k] >= v for k, v in TARGETS.items()}
        results["targets_met_at_1_thread"] = met
        print("targets at 1 thread (ORT >= 2x eager, INT8 >= 3x eager): "
              + ", ".join(f"{k} {one[k]:.2f} {'met' if ok else 'MISSED'}" for k, ok in met.items()))
    for q, prof in results["profile"].items():
        print(f"profile {q}: front-end {100 * prof['front_end_share']:.0f}%, classifier "
              f"{100 * prof['classifier_share']:.0f}% of node time; top ops {prof['top_ops']}")
    print(f"serve ({args.requests} requests, 8 client threads): "
          + ", ".join(f"{q} {rps:.0f} req/s" for q, rps in results["serve_rps"].items()))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
