"""Export a trained model to a single ONNX file that takes the raw waveform.

The log-mel front-end is part of the graph (``ConvLogMel``: ``LogMel``'s STFT as a strided
convolution, checked against ``LogMel`` below), so a deployment only decodes, resamples and cuts
windows (``audioflow.audio``) and can never compute features differently from training.
Every export is checked: ``onnx.checker``, then ONNX Runtime against PyTorch on real windows,
on another batch size and on other lengths (the batch and sample axes are dynamic).
"""

from __future__ import annotations

import json
import logging
import time
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch
from torch import nn

import audioflow
from audioflow.atomic import atomic_path
from audioflow.checkpoint import ModelMeta, load_model
from audioflow.errors import AudioflowError
from audioflow.features import FeatureSpec, LogMel, power_to_db, scratch_compiler_cache

INPUT_NAME = "waveform"
OUTPUT_NAME = "logits"
# STFT needs opset 17, but torch 2.11's dynamo exporter emits opset 18 and cannot convert its
# Pad nodes down to 17 (it would silently keep 18), so 18 is the honest floor.
MIN_OPSET = 18
MAX_SECONDS = 600  # longest single input the graph is declared for (10 minutes)
CHECK_BATCH = 32  # windows per parity-check run: bounded memory for a large test set


class ExportError(AudioflowError, RuntimeError):
    """The export failed, or the exported graph does not reproduce the PyTorch model."""


class WaveformClassifier(nn.Module):
    """Log-mel front-end + classifier: waveform [batch, samples] -> logits [batch, n_classes],
    divided by ``temperature`` (temperature scaling: the softmax a predictor takes of them is
    then calibrated; argmax unchanged). At 1 the graph has no division at all. The front-end is
    the model's ``LogMel`` for the parity reference, its ``ConvLogMel`` form in the exported graph."""

    def __init__(self, front_end: LogMel | ConvLogMel, classifier: nn.Module, temperature: float = 1.0):
        super().__init__()
        if not temperature > 0:
            raise ValueError(f"temperature must be positive, got {temperature}")
        self.front_end = front_end
        self.classifier = classifier
        self.temperature = float(temperature)

    def forward(self, waveform: torch.Tensor) -> torch.Tensor:
        logits = self.classifier(self.front_end(waveform))
        return logits if self.temperature == 1.0 else logits / self.temperature

    @classmethod
    def from_model_dir(cls, model_dir: str | Path, temperature: float = 1.0) -> tuple[WaveformClassifier, ModelMeta]:
        """Load a saved model folder and put its own front-end in front of it (eval mode)."""
        model, meta = load_model(model_dir, device="cpu")
        return cls(meta.spec.front_end(), model, temperature).eval(), meta


class ConvLogMel(nn.Module):
    """The same log-mel as ``LogMel``, with its STFT written as one strided Conv1d whose kernels
    are the window times the DFT's cosines and sines (ONNX Runtime's STFT kernel is slow; its
    convolutions are not). Only the export uses it; the parity check compares the exported
    graph with the original ``LogMel`` model."""

    def __init__(self, front_end: LogMel):
        super().__init__()
        stft = front_end.stft
        n_fft, win = stft.n_fft, stft.win_length
        left = (n_fft - win) // 2  # torch.stft centres a shorter window in the n_fft frame
        # Only the window's own samples: outside it the frame is multiplied by zero anyway.
        n = torch.arange(left, left + win, dtype=torch.float64)[None, :]
        k = torch.arange(n_fft // 2 + 1, dtype=torch.float64)[:, None]
        angle = 2 * torch.pi * k * n / n_fft
        window = stft.window.detach().double()
        basis = torch.cat([window * torch.cos(angle), -window * torch.sin(angle)])[:, None, :]
        self.register_buffer("basis", basis.float())
        self.register_buffer("fb", front_end.mel.fb.detach().clone())
        # center=True pads n_fft // 2 zeros on each side; the trimmed kernel starts `left` later.
        self.pad = (n_fft // 2 - left, win - (n_fft // 2 - left))
        self.hop, self.bins = stft.hop_length, n_fft // 2 + 1
        self.level, self.top_db = front_end.level, front_end.top_db

    def forward(self, waveform: torch.Tensor) -> torch.Tensor:
        x = nn.functional.pad(waveform.unsqueeze(1), self.pad)
        y = nn.functional.conv1d(x, self.basis, stride=self.hop)
        power = y[:, : self.bins].square() + y[:, self.bins :].square()
        mel = torch.matmul(power.transpose(1, 2), self.fb).transpose(1, 2)
        return power_to_db(mel, self.level, self.top_db)


def sample_bounds(spec: FeatureSpec) -> tuple[int, int]:
    """Shortest and longest input (samples) the exported graph accepts."""
    shortest = min(spec.n_fft // 2 + 1, spec.window_samples)
    longest = max(MAX_SECONDS * spec.sample_rate, 2 * spec.window_samples)
    return shortest, longest


def onnx_metadata(meta: ModelMeta, temperature: float = 1.0, operating_point: dict | None = None) -> dict[str, str]:
    """What a torch-free predictor needs to feed the graph, name its outputs and (on request)
    apply the operating point; the temperature the graph already divides its logits by."""
    spec = meta.spec
    extra = {"operating_point": json.dumps(operating_point, sort_keys=True)} if operating_point else {}
    return extra | {
        "temperature": repr(float(temperature)),
        "labels": json.dumps(list(meta.labels)),
        "sample_rate": str(spec.sample_rate),
        "window_samples": str(spec.window_samples),
        "window_hop_samples": str(spec.window_hop_samples),
        "params_hash": meta.params_hash,
        "dataset_fingerprint": meta.dataset_fingerprint,
        "audioflow_version": audioflow.__version__,
        "model_name": meta.model_name,
        "feature_spec": json.dumps(spec.to_dict(), sort_keys=True),
    }


@contextmanager
def _quiet_exporter(caught: list[str]) -> Iterator[None]:
    """Silence the exporter's log lines and collect its warnings (exceptions still propagate).

    Its INFO/WARNING logging ('torchvision is not installed. Skipping ...', onnxscript's
    version-converter fallbacks) is noise for a pipeline user; warnings are kept, deduplicated,
    in the export report instead of printed.
    """
    loggers = [logging.getLogger(name) for name in ("torch.onnx", "onnxscript", "onnx_ir")]
    old_levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(record=True) as records:
            warnings.simplefilter("always")
            yield
        for r in records:
            text = f"{r.category.__name__}: {r.message}"
            if text not in caught:
                caught.append(text)
    finally:
        for lg, level in zip(loggers, old_levels):
            lg.setLevel(level)


def _to_onnx(module: WaveformClassifier, spec: FeatureSpec, opset: int,
             caught: list[str]) -> onnx.ModelProto:
    """Trace with the dynamo exporter; batch and sample count are symbolic."""
    shortest, longest = sample_bounds(spec)
    batch = torch.export.Dim("batch", min=1, max=1 << 16)
    samples = torch.export.Dim("samples", min=shortest, max=longest)
    # Batch 2, not 1: torch.export specialises size-1 dimensions to constants.
    example = torch.zeros(2, spec.window_samples)
    try:
        with scratch_compiler_cache(), _quiet_exporter(caught):
            program = torch.onnx.export(
                module, (example,), None, dynamo=True, opset_version=opset,
                input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
                dynamic_shapes={INPUT_NAME: {0: batch, 1: samples}},
                external_data=False, verbose=False, report=False,
            )
    except Exception as exc:
        raise ExportError(f"torch.onnx.export (dynamo) failed: {type(exc).__name__}: {exc}") from exc
    proto = program.model_proto
    got = next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), None)
    if got != opset:  # the exporter falls back to its own opset when conversion fails
        raise ExportError(f"asked for opset {opset}, the exporter produced opset {got}")
    return proto


def _strip_debug_info(graph: onnx.GraphProto) -> None:
    """Drop the exporter's per-node debug metadata (stack traces with this checkout's absolute
    paths, FX node dumps): the model's bytes then depend on the model, not on where it was built."""
    for node in graph.node:
        del node.metadata_props[:]
        for attr in node.attribute:
            if attr.g.node:
                _strip_debug_info(attr.g)
            for sub in attr.graphs:
                _strip_debug_info(sub)


def _write_model(proto: onnx.ModelProto, metadata: dict[str, str], out_path: Path) -> None:
    """Attach metadata, validate, and write one self-contained file."""
    _strip_debug_info(proto.graph)
    for function in proto.functions:
        for node in function.node:
            del node.metadata_props[:]
    del proto.metadata_props[:]
    for key in sorted(metadata):
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, metadata[key]
    try:
        onnx.checker.check_model(proto, full_check=True)
    except Exception as exc:
        raise ExportError(f"onnx.checker rejected the exported graph: {exc}") from exc
    out_path.parent.mkdir(parents=True, exist_ok=True)
    # format spelled out: onnx would otherwise guess it from the (temporary) file's extension
    onnx.save_model(proto, str(out_path), format="protobuf", save_as_external_data=False)


def check_batches(spec: FeatureSpec, check_audio: Sequence[np.ndarray] | None,
                  seed: int = 0) -> list[np.ndarray]:
    """Inputs for the parity check: the given windows in batches, plus shape variations.

    The extra cases prove the dynamic axes: a single-item batch, an odd batch of 1.5x-window
    inputs and the shortest input the graph declares.
    """
    w = spec.window_samples
    if check_audio is None:
        rng = np.random.default_rng(seed)
        windows = (0.1 * rng.standard_normal((8, w))).astype(np.float32)
    else:
        for i, a in enumerate(check_audio):
            if np.ndim(a) != 1 or len(a) != w:
                raise ValueError(f"check_audio[{i}] has shape {np.shape(a)}, expected ({w},)")
        if not len(check_audio):
            raise ValueError("check_audio is empty")
        windows = np.stack([np.asarray(a, dtype=np.float32) for a in check_audio])
    batches = [windows[i : i + CHECK_BATCH] for i in range(0, len(windows), CHECK_BATCH)]
    longer = np.concatenate([windows, windows[:, : w // 2]], axis=1)[:3]  # 1.5x window
    shortest, _ = sample_bounds(spec)
    batches += [windows[:1], np.ascontiguousarray(longer), np.ascontiguousarray(windows[:3, :shortest])]
    return batches


def check_parity(module: nn.Module, onnx_path: str | Path, batches: Sequence[np.ndarray],
                 atol: float = 1e-4) -> float:
    """Max |ONNX Runtime - PyTorch| logit difference over ``batches``; ExportError above atol."""
    from audioflow.inference import onnx_session, score_batch

    session = onnx_session(onnx_path)
    worst, worst_shape = 0.0, None
    for batch in batches:
        batch = np.ascontiguousarray(batch, dtype=np.float32)
        with torch.inference_mode():
            expected = module(torch.from_numpy(batch)).numpy()
        got = score_batch(session, batch)
        if got.shape != expected.shape:
            raise ExportError(f"ONNX output shape {got.shape} != PyTorch {expected.shape} "
                              f"for input {batch.shape}")
        diff = float(np.max(np.abs(got.astype(np.float64) - expected))) if got.size else 0.0
        if not np.isfinite(diff) or diff > worst:
            worst, worst_shape = diff, batch.shape
    if not worst <= atol:  # also catches NaN
        raise ExportError(f"ONNX Runtime and PyTorch logits differ by {worst:.3g} "
                          f"(> atol {atol:g}) on input {worst_shape}")
    return worst


def export_onnx(model_dir: str | Path, out_path: str | Path,
                check_audio: list[np.ndarray] | None = None, opset: int = 18,
                atol: float = 1e-4, temperature: float = 1.0, operating_point: dict | None = None) -> dict[str, Any]:
    """Export ``model_dir`` to ``out_path`` (waveform in, logits / ``temperature`` out) and verify it.

    ``check_audio``: 1-D float32 windows of exactly ``window_samples`` (held-out audio);
    None uses seeded noise. ``operating_point`` (``reliability.fit_operating_point``) goes
    into the metadata. Returns a report with the measured ``max_abs_diff``.
    """
    if opset < MIN_OPSET:
        raise ExportError(f"opset {opset} is not supported: the dynamo exporter builds opset "
                          f">= {MIN_OPSET} graphs (STFT front-end, Pad-18)")
    t0 = time.perf_counter()
    out = Path(out_path)
    module, meta = WaveformClassifier.from_model_dir(model_dir, temperature)
    batches = check_batches(meta.spec, check_audio)  # validate inputs before the slow export
    caught: list[str] = []
    graph = WaveformClassifier(ConvLogMel(module.front_end), module.classifier, temperature).eval()
    proto = _to_onnx(graph, meta.spec, opset, caught)
    # Only a model that passed onnx.checker and the parity check reaches ``out``: a failed
    # export leaves the previous file (or none), never an unverified one that looks valid.
    with atomic_path(out, tag="unverified") as tmp:
        _write_model(proto, onnx_metadata(meta, temperature, operating_point), tmp)
        diff = check_parity(module, tmp, batches, atol)
    shortest, longest = sample_bounds(meta.spec)
    return {
        "path": str(out),
        "size_bytes": out.stat().st_size,
        "opset": opset,
        "temperature": temperature,
        "operating_point": operating_point,
        "max_abs_diff": diff,
        "atol": atol,
        "n_checked": int(sum(len(b) for b in batches)),
        "samples_range": [shortest, longest],
        "seconds": round(time.perf_counter() - t0, 3),
        "exporter_warnings": caught,
    }
