"""The exported log-mel front-end alone, three ways, in ONNX Runtime at one thread.

The deployment issue asks for ONNX Runtime at 2x PyTorch eager at batch 64, and INT8 at 3x.
The front-end (STFT, power, mel, log) is most of the exported graph's time, so this benchmark
isolates it. Each variant computes the same log-mel as the training front-end
(``audioflow.features.LogMel``, torchaudio) and is exported with the exporter `audioflow
export` uses:

- ``stft_op``: ``LogMel`` as it is: ONNX's ``STFT`` operator (the export before ConvLogMel);
- ``dft_conv``: what `audioflow export` ships (``audioflow.export.ConvLogMel``): the STFT as
  one strided Conv1d whose kernels are the window times the DFT's cosines and sines;
- ``fft_2stage``: a real FFT decomposition written for ONNX (``TwoStageFftLogMel`` below):
  n_fft = P x Q, frames gathered in polyphase order, a length-Q DFT with the twiddles and the
  window folded into P weight matrices (one batched MatMul per re/im), then a length-P DFT as
  one MatMul and the mel projection with the bins in FFT order. About a third of the
  multiply-adds of ``dft_conv``.

Timed interleaved (batch 1 and batch 64 of 1-s clips), with the max difference from torchaudio
in dB, the multiply-adds per frame of the transform, and the ORT profiler's split of the
batch-64 node time between multiply-adds (Conv, MatMul) and data movement (everything else).
Ratios are against ``dft_conv`` in the same run.

    uv run python -m benchmarks.front_end [--repeats 30] [--sample-rate 16000] [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import tempfile
from collections import defaultdict
from pathlib import Path

import numpy as np

from benchmarks.inference_speed import calibration_clips, ort_session, profiled_events, timed_calls

REPO = Path(__file__).resolve().parents[1]
COMPUTE_OPS = {"Conv", "MatMul", "FusedMatMul", "Gemm", "STFT", "DFT"}


def two_stage_fft_class():
    """The FFT variant (defined here, torch imported late: `--help` works without it)."""
    import torch
    from torch import nn

    from audioflow.features import power_to_db

    class TwoStageFftLogMel(nn.Module):
        def __init__(self, front_end):
            super().__init__()
            stft = front_end.stft
            n_fft, win = stft.n_fft, stft.win_length
            p = max(a for a in range(1, math.isqrt(n_fft) + 1) if n_fft % a == 0)  # P <= sqrt(n_fft)
            q = n_fft // p
            if p < 4:
                raise ValueError(f"n_fft={n_fft} has no factor pair for a two-stage FFT")
            left = (n_fft - win) // 2
            w = torch.zeros(n_fft, dtype=torch.float64)
            w[left:left + win] = stft.window.detach().double()
            n1, n2 = torch.arange(p)[:, None, None], torch.arange(q)[None, :, None]
            k2 = torch.arange(q, dtype=torch.float64)[None, None, :]
            angle = 2 * math.pi * (n2 * k2 / q + n1 * k2 / n_fft)           # (P, Q, Q)
            wn = w[(n1 + p * n2)]                                            # (P, Q, 1)
            self.register_buffer("re1", (wn * torch.cos(angle)).float())
            self.register_buffer("im1", (-wn * torch.sin(angle)).float())
            bins = n_fft // 2 + 1
            k1n = (bins - 1) // q + 1                     # bin k = Q * k1 + k2 <= n_fft / 2
            a2 = 2 * math.pi * torch.arange(k1n, dtype=torch.float64)[:, None] * torch.arange(p) / p
            c, s = torch.cos(a2), torch.sin(a2)
            dft2 = torch.cat([torch.cat([c, s], 1), torch.cat([-s, c], 1)]).float()  # [re; im] x [z_re, z_im]
            self.register_buffer("dft2_re", dft2[:, :p].contiguous())
            self.register_buffer("dft2_im", dft2[:, p:].contiguous())
            fb = front_end.mel.fb.detach().double()
            k = (q * torch.arange(k1n)[:, None] + torch.arange(q)[None, :]).reshape(-1)
            fb_fft_order = torch.zeros(len(k), fb.shape[1], dtype=torch.float64)
            fb_fft_order[k < bins] = fb[k[k < bins]]
            self.register_buffer("fb_t", fb_fft_order.T.contiguous().float())
            self.register_buffer("offsets", (n1 + p * n2).reshape(p, q)[:, None, :])
            self.p, self.q, self.k1n, self.n_fft, self.hop = p, q, k1n, n_fft, stft.hop_length
            self.level, self.top_db = front_end.level, front_end.top_db

        def forward(self, waveform):
            x = nn.functional.pad(waveform, (self.n_fft // 2, self.n_fft // 2))
            batch, frames = x.shape[0], (x.shape[-1] - self.n_fft) // self.hop + 1
            idx = self.offsets + (torch.arange(frames, device=x.device) * self.hop)[None, :, None]
            polyphase = x[:, idx]                                            # (B, P, F, Q)
            z_re = torch.matmul(polyphase, self.re1).reshape(batch, self.p, frames * self.q)
            z_im = torch.matmul(polyphase, self.im1).reshape(batch, self.p, frames * self.q)
            spec = torch.matmul(self.dft2_re, z_re) + torch.matmul(self.dft2_im, z_im)
            power = spec[:, : self.k1n].square() + spec[:, self.k1n:].square()
            power = power.reshape(batch, self.k1n, frames, self.q).transpose(2, 3)
            mel = torch.matmul(self.fb_t, power.reshape(batch, self.k1n * self.q, frames))
            return power_to_db(mel, self.level, self.top_db)

        def macs_per_frame(self) -> int:
            return 2 * self.p * self.q * self.q + 2 * self.k1n * 2 * self.p * self.q

    return TwoStageFftLogMel


def variants(front_end) -> dict:
    from audioflow.export import ConvLogMel

    return {"stft_op": front_end, "dft_conv": ConvLogMel(front_end),
            "fft_2stage": two_stage_fft_class()(front_end)}


def macs_per_frame(name: str, module, spec) -> int:
    """Multiply-adds of the transform per frame (the mel projection left out: the same in all)."""
    if name == "dft_conv":
        return int(module.basis.shape[0] * module.basis.shape[-1])
    if name == "fft_2stage":
        return module.macs_per_frame()
    n = spec.n_fft  # STFT operator: an FFT, ~ (n / 2) log2(n) complex multiply-adds
    return int(2 * n * math.log2(n))


def export_front_end(module, spec, out: Path) -> Path:
    import onnx
    from torch import nn

    from audioflow.export import MIN_OPSET, WaveformClassifier, _to_onnx

    caught: list[str] = []
    proto = _to_onnx(WaveformClassifier(module, nn.Identity()).eval(), spec, MIN_OPSET, caught)
    onnx.save_model(proto, str(out))
    return out


def profile_ops(path: Path, batch: np.ndarray, runs: int, work: Path) -> dict[str, float]:
    events = profiled_events(path, batch, runs, work)
    by_op: dict[str, float] = defaultdict(float)
    for e in events:
        if e.get("cat") == "Node" and e.get("name", "").endswith("_kernel_time"):
            by_op[e.get("args", {}).get("op_name", "?")] += e["dur"]
    total = sum(by_op.values()) or 1.0
    compute = sum(d for op, d in by_op.items() if op in COMPUTE_OPS)
    top = sorted(by_op.items(), key=lambda kv: -kv[1])[:5]
    return {"ms_per_batch": total / runs / 1000, "compute_share": compute / total,
            "top_ops": {op: round(d / total, 3) for op, d in top}}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.front_end", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=30, help="timed batch-1 calls per variant (default: 30)")
    ap.add_argument("--sample-rate", type=int, default=16000, help="Hz of the 1-second clips (default: 16000)")
    ap.add_argument("--json", type=Path, help="also write the figures here")
    args = ap.parse_args(argv)

    import torch

    from audioflow.config import load_params
    from audioflow.features import FeatureSpec

    torch.set_num_threads(1)
    params = load_params(REPO / "params.yaml", {"features.window_s": 1.0})
    spec = FeatureSpec.resolve(params.features, args.sample_rate)
    front_end = spec.front_end().eval()
    clips = calibration_clips(spec.window_samples, args.sample_rate, 64)
    with torch.inference_mode():
        reference = front_end(torch.from_numpy(clips)).numpy()
    result: dict = {"benchmark": "front_end", "sample_rate": args.sample_rate, "n_fft": spec.n_fft,
                    "hop": spec.hop_length, "n_mels": spec.n_mels, "cpus": os.cpu_count(), "variants": {}}
    with tempfile.TemporaryDirectory(prefix="audioflow-bench-") as scratch:
        work = Path(scratch)
        engines, paths = {}, {}
        for name, module in variants(front_end).items():
            paths[name] = export_front_end(module, spec, work / f"{name}.onnx")
            session = ort_session(paths[name], 1)
            input_name = session.get_inputs()[0].name
            engines[name] = (lambda s, i: lambda x: s.run(None, {i: x})[0])(session, input_name)
            diff = float(np.abs(engines[name](clips) - reference).max())
            result["variants"][name] = {"max_abs_diff_db": diff,
                                        "macs_per_frame": macs_per_frame(name, module, spec)}
        b1 = timed_calls(engines, clips[:1], args.repeats)
        b64 = timed_calls(engines, clips, max(3, args.repeats // 5))
        for name in engines:
            row = result["variants"][name]
            row["batch1_ms"] = 1000 * statistics.median(b1[name])
            row["batch64_clips_per_s"] = 64 / statistics.median(b64[name])
            row["profile_b64"] = profile_ops(paths[name], clips, max(2, args.repeats // 10), work)
    base = result["variants"]["dft_conv"]
    print(f"front-end alone, 1-s clips at {args.sample_rate} Hz, n_fft {spec.n_fft}, hop {spec.hop_length}, "
          f"{spec.n_mels} mels; ONNX Runtime, 1 thread")
    print(f"{'variant':<11} {'MACs/frame':>10} {'max |dB| diff':>13} {'b1 ms':>7} {'x conv':>6} "
          f"{'b64 clips/s':>11} {'x conv':>6} {'MAC ops share':>13}  top ops (b64 node time)")
    for name, r in result["variants"].items():
        r["b1_over_dft_conv"] = base["batch1_ms"] / r["batch1_ms"]
        r["b64_over_dft_conv"] = r["batch64_clips_per_s"] / base["batch64_clips_per_s"]
        prof = r["profile_b64"]
        ops = ", ".join(f"{op} {share:.0%}" for op, share in prof["top_ops"].items())
        print(f"{name:<11} {r['macs_per_frame']:>10} {r['max_abs_diff_db']:>13.1e} {r['batch1_ms']:>7.3f} "
              f"{r['b1_over_dft_conv']:>6.2f} {r['batch64_clips_per_s']:>11.0f} {r['b64_over_dft_conv']:>6.2f} "
              f"{prof['compute_share']:>13.0%}  {ops}")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
