"""Score recordings with an exported ONNX model: ONNX Runtime + numpy, no torch.

This is the deployment path, so it must stay importable without torch: it depends only on
``audioflow.audio`` (soundfile + soxr) and reads everything else from the ONNX metadata.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from audioflow import audio

AUDIO_EXTENSIONS = frozenset({".wav", ".flac", ".ogg", ".aiff", ".aif", ".mp3"})
MAX_BATCH = 64  # windows per ORT run: bounds memory on long recordings
REQUIRED_METADATA = ("labels", "sample_rate", "window_samples", "window_hop_samples")


@dataclass(frozen=True)
class Prediction:
    """Clip-level result: window probabilities averaged, label = their argmax."""

    path: str
    label: str
    probabilities: dict[str, float]
    n_windows: int

    def to_json(self) -> str:
        return json.dumps({"path": self.path, "label": self.label,
                           "probabilities": self.probabilities, "n_windows": self.n_windows})


@dataclass(frozen=True)
class PredictionError:
    """A file that could not be scored; the others go on."""

    path: str
    reason: str

    def to_json(self) -> str:
        return json.dumps({"path": self.path, "error": self.reason})

    def __str__(self) -> str:
        return f"{self.path}: {self.reason}"


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax in float64; subtracting the row max keeps exp() from overflowing."""
    z = np.asarray(logits, dtype=np.float64)
    z = z - z.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def window_batches(signal: np.ndarray, window: int, hop: int,
                   max_batch: int = MAX_BATCH) -> Iterator[np.ndarray]:
    """The windows of ``audio.frame_windows``, yielded in [<=max_batch, window] chunks.

    A long signal is viewed through strides, so only one chunk is ever copied; a short one
    goes through ``frame_windows`` for its zero padding.
    """
    if len(signal) <= window:
        yield audio.frame_windows(signal, window, hop)
        return
    starts = np.asarray(audio.window_starts(len(signal), window, hop))
    view = np.lib.stride_tricks.sliding_window_view(signal, window)  # no copy
    for i in range(0, len(starts), max_batch):
        yield np.ascontiguousarray(view[starts[i : i + max_batch]], dtype=np.float32)


def expand_paths(paths: Iterable[str | Path]) -> Iterator[Path | PredictionError]:
    """Files as given; folders recursively to their audio files (sorted); errors for the rest."""
    for p in map(Path, paths):
        if p.is_dir():
            found = sorted(f for f in p.rglob("*")
                           if f.suffix.lower() in AUDIO_EXTENSIONS and f.is_file())
            if not found:
                yield PredictionError(str(p), "folder contains no audio files "
                                              f"({' '.join(sorted(AUDIO_EXTENSIONS))})")
            yield from found
        elif p.exists():
            yield p
        else:
            yield PredictionError(str(p), "file not found")


def import_onnxruntime():
    """onnxruntime, imported with its usage telemetry off unless the user chose otherwise.

    Since 1.2x its Linux wheels collect telemetry and, on import, write a session file into
    the temporary directory; a pipeline run must neither phone home nor leave files behind.
    """
    os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")
    import onnxruntime

    return onnxruntime


class Predictor:
    """Clip-level predictions from an ONNX model exported by ``audioflow.export``."""

    def __init__(self, model_path: str | Path, providers: Sequence[str] | None = None):
        ort = import_onnxruntime()  # deferred: importing this module stays cheap

        self.model_path = Path(model_path)
        if not self.model_path.is_file():
            raise FileNotFoundError(f"{self.model_path}: ONNX model not found")
        opts = ort.SessionOptions()
        opts.log_severity_level = 3  # errors only; failures still raise
        self.session = ort.InferenceSession(
            str(self.model_path), opts, providers=list(providers or ["CPUExecutionProvider"]))
        self.metadata: dict[str, str] = dict(self.session.get_modelmeta().custom_metadata_map)
        missing = [k for k in REQUIRED_METADATA if k not in self.metadata]
        if missing:
            raise ValueError(f"{self.model_path}: missing ONNX metadata {missing}; "
                             "was it exported with audioflow.export?")
        self.labels: list[str] = list(json.loads(self.metadata["labels"]))
        self.sample_rate = int(self.metadata["sample_rate"])
        self.window_samples = int(self.metadata["window_samples"])
        self.window_hop_samples = int(self.metadata["window_hop_samples"])
        self._input = self.session.get_inputs()[0].name
        self._output = self.session.get_outputs()[0].name

    def window_probabilities(self, signal: np.ndarray) -> np.ndarray:
        """Softmax probabilities of every window: [n_windows, n_labels] float64."""
        parts = []
        for batch in window_batches(signal, self.window_samples, self.window_hop_samples):
            logits = self.session.run([self._output], {self._input: batch})[0]
            if logits.shape != (len(batch), len(self.labels)):
                raise ValueError(f"{self.model_path}: model output {logits.shape} does not match "
                                 f"{len(batch)} windows x {len(self.labels)} labels")
            parts.append(softmax(logits))
        return np.concatenate(parts)

    def predict_waveform(self, signal: np.ndarray, path: str = "<array>") -> Prediction:
        """Score a mono float32 signal already at ``self.sample_rate``."""
        signal = np.asarray(signal, dtype=np.float32)
        if signal.ndim != 1:
            raise ValueError(f"{path}: expected a mono 1-D signal, got shape {signal.shape}")
        if signal.size == 0:
            raise ValueError(f"{path}: empty signal")
        probs = self.window_probabilities(signal)
        mean = probs.mean(axis=0)
        return Prediction(
            path=path,
            label=self.labels[int(np.argmax(mean))],
            probabilities={lab: float(p) for lab, p in zip(self.labels, mean)},
            n_windows=len(probs),
        )

    def predict_file(self, path: str | Path) -> Prediction:
        """Decode, mix to mono, resample to the model's rate, then score (AudioError if bad)."""
        return self.predict_waveform(audio.load(path, self.sample_rate), path=str(path))

    def predict_paths(self, paths: Iterable[str | Path]) -> Iterator[Prediction | PredictionError]:
        """Predictions for files and (recursively) folders; a bad file yields PredictionError."""
        for item in expand_paths(paths):
            if isinstance(item, PredictionError):
                yield item
                continue
            try:
                yield self.predict_file(item)
            except audio.AudioError as exc:
                yield PredictionError(exc.path, exc.reason)
            except OSError as exc:  # e.g. permission denied between listing and reading
                yield PredictionError(str(item), f"{type(exc).__name__}: {exc.strerror or exc}")

    def __repr__(self) -> str:
        return (f"Predictor({str(self.model_path)!r}, labels={self.labels}, "
                f"sample_rate={self.sample_rate}, window_samples={self.window_samples})")
