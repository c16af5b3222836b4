"""Window logits -> recording probabilities: the one place a score becomes a probability.

Every consumer calls these: ``inference.Predictor`` (what ``predict`` and ``serve`` answer),
``evaluation.aggregate_files`` (validation, test, metrics.json, predictions.csv) and
``reliability`` (temperature fit). numpy only: the torch-free deployment install imports it.
"""

from __future__ import annotations

import numpy as np


def softmax(logits: np.ndarray, dtype: type = np.float64) -> np.ndarray:
    """Row-wise softmax computed in ``dtype`` (float64 unless the caller keeps float32);
    subtracting the row max keeps exp() from overflowing."""
    z = np.asarray(logits, dtype=dtype)
    z = z - z.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def recording_probabilities(window_logits: np.ndarray, recording: np.ndarray, temperature: float = 1.0,
                            dtype: type = np.float64) -> np.ndarray:
    """Per recording: the mean over its windows of softmax(logits / T), [n_recordings, n_classes]
    float64. ``dtype``: what the softmax is computed in (evaluation keeps the float32 of its
    logits; the mean is always accumulated in float64).

    ``recording``: each window's recording index 0..n-1 (every index present). Windows are
    summed in order, so a recording's row equals ``softmax(its logits).mean(axis=0)``.
    """
    logits = np.asarray(window_logits, dtype=dtype)
    return recording_mean(softmax(logits if temperature == 1.0 else logits / temperature, dtype), recording)


def recording_mean(window_probs: np.ndarray, recording: np.ndarray) -> np.ndarray:
    """Mean of each recording's window probabilities, accumulated in float64, windows in order."""
    recording = np.asarray(recording, dtype=np.int64)
    n = int(recording.max()) + 1 if len(recording) else 0
    out = np.zeros((n, np.shape(window_probs)[1]))
    np.add.at(out, recording, window_probs)
    return out / np.bincount(recording, minlength=n)[:, None]
