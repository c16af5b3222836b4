"""Score recordings with an exported ONNX model: ONNX Runtime + numpy, no torch.

This is the deployment path, so it must stay importable without torch: it depends only on
``audioflow.audio`` (soundfile + soxr) and ``audioflow.scoring`` (numpy) and reads everything
else from the ONNX metadata. ``onnx_session`` and ``score_batch`` are the one way audioflow
opens and runs an ONNX model (``export``'s parity check uses them too).
"""

from __future__ import annotations

import glob
import json
import os
import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from audioflow import audio
from audioflow.scoring import recording_mean, softmax

__all__ = ["AUDIO_EXTENSIONS", "MAX_BATCH", "OperatingPoint", "Prediction", "PredictionError", "Predictor",
           "expand_paths", "import_onnxruntime", "onnx_session", "score_batch", "softmax", "window_batches"]

AUDIO_EXTENSIONS = frozenset({".wav", ".flac", ".ogg", ".aiff", ".aif", ".mp3"})
MAX_BATCH = 64  # windows per ORT run: bounds memory on long recordings
REQUIRED_METADATA = ("labels", "sample_rate", "window_samples", "window_hop_samples")


@dataclass(frozen=True)
class OperatingPoint:
    """A screening threshold from the model's metadata (set by ``evaluate`` on validation): a
    recording is positive when its positive classes' summed probability reaches ``threshold``."""

    positive_labels: tuple[str, ...]
    threshold: float
    target_recall: float

    @classmethod
    def from_metadata(cls, text: str, labels: Sequence[str], where: str) -> OperatingPoint:
        d = json.loads(text)
        unknown = [lab for lab in d["positive_labels"] if lab not in labels]
        if unknown:
            raise ValueError(f"{where}: operating point names labels {unknown} the model does not have")
        return cls(tuple(d["positive_labels"]), float(d["threshold"]), float(d["target_recall"]))

    def apply(self, probabilities: dict[str, float]) -> dict:
        score = float(sum(probabilities[lab] for lab in self.positive_labels))
        return {"positive": score >= self.threshold, "score": score, "threshold": self.threshold,
                "positive_labels": list(self.positive_labels), "target_recall": self.target_recall}


@dataclass(frozen=True)
class Prediction:
    """Clip-level result: window probabilities averaged, label = their argmax.

    ``windows`` (kept on request) holds every window's probabilities, for a timeline.
    """

    path: str
    label: str
    probabilities: dict[str, float]
    n_windows: int
    windows: np.ndarray | None = field(default=None, repr=False, compare=False)
    window_s: float = 0.0
    hop_s: float = 0.0
    duration_s: float = 0.0

    def top(self, k: int) -> list[tuple[str, float]]:
        """The k most probable labels, most probable first."""
        return sorted(self.probabilities.items(), key=lambda kv: (-kv[1], kv[0]))[:k]

    def timeline(self) -> list[dict]:
        """Per window: start and end (s, clipped to the recording), its label and probability."""
        if self.windows is None:
            raise ValueError("predicted without keep_windows=True: no per-window probabilities")
        labels = list(self.probabilities)
        rows = []
        for i, probs in enumerate(self.windows):
            start = i * self.hop_s
            best = int(np.argmax(probs))
            rows.append({"start_s": round(start, 4), "end_s": round(min(start + self.window_s, self.duration_s), 4),
                         "label": labels[best], "probability": float(probs[best]),
                         "probabilities": {lab: float(v) for lab, v in zip(labels, probs)}})
        return rows

    def to_dict(self, top_k: int | None = None, timeline: bool = False,
                operating_point: OperatingPoint | None = None) -> dict:
        d = {"path": self.path, "label": self.label, "probabilities": self.probabilities,
             "n_windows": self.n_windows}
        if operating_point is not None:
            d["operating_point"] = operating_point.apply(self.probabilities)
        if top_k:
            d["top"] = [{"label": lab, "probability": p} for lab, p in self.top(top_k)]
        if timeline:
            d["duration_s"] = round(self.duration_s, 4)
            d["timeline"] = [{k: v for k, v in row.items() if k != "probabilities"} for row in self.timeline()]
        return d

    def to_json(self, top_k: int | None = None, timeline: bool = False,
                operating_point: OperatingPoint | None = None) -> str:
        return json.dumps(self.to_dict(top_k, timeline, operating_point))


@dataclass(frozen=True)
class PredictionError:
    """A file that could not be scored; the others go on."""

    path: str
    reason: str

    def to_json(self) -> str:
        return json.dumps({"path": self.path, "error": self.reason})

    def __str__(self) -> str:
        return f"{self.path}: {self.reason}"


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


def expand_paths(paths: Iterable[str | Path | PredictionError]) -> Iterator[Path | PredictionError]:
    """Files as given; folders recursively to their audio files (sorted); glob patterns
    (``*``, ``?``, ``[...]``, ``**``) to what they match, sorted; errors for the rest."""
    for raw in paths:
        if isinstance(raw, PredictionError):  # already expanded
            yield raw
            continue
        p = Path(raw)
        if p.is_dir():
            found = sorted(f for f in p.rglob("*")
                           if f.suffix.lower() in AUDIO_EXTENSIONS and f.is_file())
            if not found:
                yield PredictionError(str(p), "folder contains no audio files "
                                              f"({' '.join(sorted(AUDIO_EXTENSIONS))})")
            yield from found
        elif p.exists():
            yield p
        elif re.search(r"[*?[]", str(raw)):
            matches = sorted(glob.glob(str(raw), recursive=True))
            if not matches:
                yield PredictionError(str(raw), "no file matches this pattern")
            for m in matches:
                yield from expand_paths([m]) if Path(m).is_dir() else [Path(m)]
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


def onnx_session(model_path: str | Path, providers: Sequence[str] | None = None):
    """An ONNX Runtime session with the project's options: telemetry off, errors-only logging
    (failures still raise), CPU unless ``providers`` say otherwise. Every ORT user makes it here."""
    ort = import_onnxruntime()  # deferred: importing this module stays cheap
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    return ort.InferenceSession(str(model_path), opts, providers=list(providers or ["CPUExecutionProvider"]))


def score_batch(session, batch: np.ndarray) -> np.ndarray:
    """Logits [n, n_classes] of a batch of waveforms [n, samples] (float32) in one ORT run: the
    session's first input in, its first output out."""
    return session.run([session.get_outputs()[0].name],
                       {session.get_inputs()[0].name: np.ascontiguousarray(batch, dtype=np.float32)})[0]


class Predictor:
    """Clip-level predictions from an ONNX model exported by ``audioflow.export``."""

    def __init__(self, model_path: str | Path, providers: Sequence[str] | None = None):
        self.model_path = Path(model_path)
        if not self.model_path.is_file():
            raise FileNotFoundError(f"{self.model_path}: ONNX model not found")
        self.session = onnx_session(self.model_path, providers)
        self.metadata: dict[str, str] = dict(self.session.get_modelmeta().custom_metadata_map)
        missing = [k for k in REQUIRED_METADATA if k not in self.metadata]
        if missing:
            raise ValueError(f"{self.model_path}: missing ONNX metadata {missing}; "
                             "was it exported with audioflow.export?")
        self.labels: list[str] = list(json.loads(self.metadata["labels"]))
        self.sample_rate = int(self.metadata["sample_rate"])
        self.window_samples = int(self.metadata["window_samples"])
        self.window_hop_samples = int(self.metadata["window_hop_samples"])
        # The graph already divides its logits by this (temperature scaling): recorded, not applied.
        self.temperature = float(self.metadata.get("temperature", "1.0"))
        self.operating_point: OperatingPoint | None = (
            OperatingPoint.from_metadata(self.metadata["operating_point"], self.labels, str(self.model_path))
            if "operating_point" in self.metadata else None)

    def _probabilities(self, batch: np.ndarray) -> np.ndarray:
        logits = score_batch(self.session, batch)
        if logits.shape != (len(batch), len(self.labels)):
            raise ValueError(f"{self.model_path}: model output {logits.shape} does not match "
                             f"{len(batch)} windows x {len(self.labels)} labels")
        return softmax(logits)

    def window_probabilities(self, signal: np.ndarray) -> np.ndarray:
        """Softmax probabilities of every window: [n_windows, n_labels] float64."""
        return np.concatenate([self._probabilities(batch) for batch in
                               window_batches(signal, self.window_samples, self.window_hop_samples)])

    def _prediction(self, path: str, probs: np.ndarray, n_samples: int, keep_windows: bool) -> Prediction:
        mean = recording_mean(probs, np.zeros(len(probs), dtype=np.int64))[0]
        return Prediction(
            path=path,
            label=self.labels[int(np.argmax(mean))],
            probabilities={lab: float(p) for lab, p in zip(self.labels, mean)},
            n_windows=len(probs),
            windows=probs if keep_windows else None,
            window_s=self.window_samples / self.sample_rate,
            hop_s=self.window_hop_samples / self.sample_rate,
            duration_s=n_samples / self.sample_rate,
        )

    def predict_waveform(self, signal: np.ndarray, path: str = "<array>", keep_windows: bool = False) -> Prediction:
        """Score a mono float32 signal already at ``self.sample_rate``."""
        signal = np.asarray(signal, dtype=np.float32)
        if signal.ndim != 1:
            raise ValueError(f"{path}: expected a mono 1-D signal, got shape {signal.shape}")
        if signal.size == 0:
            raise ValueError(f"{path}: empty signal")
        return self._prediction(path, self.window_probabilities(signal), len(signal), keep_windows)

    def predict_file(self, path: str | Path, keep_windows: bool = False) -> Prediction:
        """Decode, mix to mono, resample to the model's rate, then score (AudioError if bad)."""
        return self.predict_waveform(audio.load(path, self.sample_rate), path=str(path), keep_windows=keep_windows)

    def predict_paths(self, paths: Iterable[str | Path], batch_windows: int = MAX_BATCH,
                      keep_windows: bool = False) -> Iterator[Prediction | PredictionError]:
        """Predictions for files, folders and globs, in order; a bad file yields PredictionError.

        The windows of consecutive short recordings share one ONNX Runtime run (up to
        ``batch_windows`` windows); a recording with more windows runs alone, in chunks.
        """
        queue: list[tuple[str, np.ndarray, int]] = []

        def flush() -> Iterator[Prediction]:
            if not queue:
                return
            probs = self._probabilities(np.concatenate([w for _, w, _ in queue]))
            i = 0
            for path, w, n in queue:
                yield self._prediction(path, probs[i : i + len(w)], n, keep_windows)
                i += len(w)
            queue.clear()

        for item in expand_paths(paths):
            if isinstance(item, PredictionError):
                yield from flush()
                yield item
                continue
            try:
                signal = audio.load(item, self.sample_rate)
            except audio.AudioError as exc:
                yield from flush()
                yield PredictionError(str(exc.path), exc.reason)
                continue
            except OSError as exc:  # e.g. permission denied between listing and reading
                yield from flush()
                yield PredictionError(str(item), f"{type(exc).__name__}: {exc.strerror or exc}")
                continue
            n_windows = len(audio.window_starts(len(signal), self.window_samples, self.window_hop_samples))
            if n_windows > batch_windows:
                yield from flush()
                yield self.predict_waveform(signal, path=str(item), keep_windows=keep_windows)
                continue
            if sum(len(w) for _, w, _ in queue) + n_windows > batch_windows:
                yield from flush()
            queue.append((str(item), audio.frame_windows(signal, self.window_samples, self.window_hop_samples),
                          len(signal)))
        yield from flush()

    def __repr__(self) -> str:
        return (f"Predictor({str(self.model_path)!r}, labels={self.labels}, "
                f"sample_rate={self.sample_rate}, window_samples={self.window_samples})")
