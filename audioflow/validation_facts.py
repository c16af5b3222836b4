"""Facts about each recording, measured once: rate, channels, duration, loudness, clipping.

``collect_facts`` decodes every listed file once and never raises for a bad one (it records
readable=False and the reason); ``validation.validate`` hands the table to Great Expectations.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from audioflow import audio, storage
from audioflow.manifest import Dataset

# RMS_FLOOR_DBFS stands in for -inf (digital silence) and keeps the table JSON-clean; it is
# defined beside the page that shows it.
from audioflow.validation_html import SILENT_DBFS as RMS_FLOOR_DBFS

CLIP_LEVEL = 0.999  # |x| at or above this counts as full scale (PCM 16 max reads as 0.99997)
NON_FINITE = "non-finite samples"  # prefix of audio.read's reason for NaN/Inf samples
_CHUNK = 1 << 20  # samples per block when reducing a signal, bounds float64 temporaries

FACT_COLUMNS = [
    "path", "label", "readable", "error", "truncation", "sample_rate", "channels", "frames", "duration_s",
    "finite", "rms_dbfs", "peak", "clipped_fraction", "sha256",
]  # fmt: skip



def file_facts(path: str | Path) -> dict[str, Any]:
    """Decode one recording and measure it; a bad file gives readable=False and the reason."""
    try:
        if storage.is_url(path):  # one download serves the decoder and the header check
            blob = audio.fetch(str(path))
            data, sr = audio.decode(blob, str(path))
            head, size = blob[: audio.WAV_HEAD_BYTES], len(blob)
        else:
            data, sr = audio.read(path)
            head, size = audio.head_and_size(path)
    except audio.AudioError as exc:
        return {
            "readable": False,
            "error": exc.reason,
            "truncation": "",
            "sample_rate": pd.NA,
            "channels": pd.NA,
            "frames": pd.NA,
            "duration_s": math.nan,
            # Only a non-finite file is known to be non-finite; for others it is unknown.
            "finite": False if exc.reason.startswith(NON_FINITE) else pd.NA,
            "rms_dbfs": math.nan,
            "peak": math.nan,
            "clipped_fraction": math.nan,
        }
    frames, channels = data.shape
    sum_sq, peak, n_clipped = _signal_stats(data.reshape(-1))
    n = data.size
    rms = math.sqrt(sum_sq / n)
    return {
        "readable": True,
        "error": "",
        "truncation": audio.wav_truncation(head, size),
        "sample_rate": int(sr),
        "channels": int(channels),
        "frames": int(frames),
        "duration_s": frames / sr,
        "finite": True,  # audio.read rejects NaN/Inf, so a decoded file is finite
        "rms_dbfs": max(20.0 * math.log10(rms), RMS_FLOOR_DBFS) if rms > 0 else RMS_FLOOR_DBFS,
        "peak": peak,
        "clipped_fraction": n_clipped / n,
    }


def _signal_stats(flat: np.ndarray) -> tuple[float, float, int]:
    """Sum of squares (float64), peak |x| and count of |x| >= CLIP_LEVEL, in bounded blocks.

    Read off the signed samples (a square needs no abs; the peak is max and -min): no |x|
    copy, and the clipped samples are counted only in a block that reaches full scale."""
    sum_sq, peak, clipped = 0.0, 0.0, 0
    for start in range(0, flat.size, _CHUNK):
        block = flat[start : start + _CHUNK]
        wide = block.astype(np.float64)
        sum_sq += float(np.dot(wide, wide))
        top = max(float(block.max()), -float(block.min()))
        peak = max(peak, top)
        if top >= CLIP_LEVEL:
            clipped += int(np.count_nonzero(block >= CLIP_LEVEL)) + int(np.count_nonzero(block <= -CLIP_LEVEL))
    return sum_sq, peak, clipped


def collect_facts(ds: Dataset, progress: bool = True) -> pd.DataFrame:
    """One row of facts per listed file (FACT_COLUMNS), reading each file once."""
    from tqdm import tqdm

    rows = []
    files = ds.files
    for rel, label, sha in tqdm(
        zip(files["path"], files["label"], files["sha256"], strict=True),
        total=len(files),
        desc="validate: reading audio",
        unit="file",
        disable=not progress,
        leave=False,
    ):
        where = ds.location(rel)
        facts = file_facts(where)
        if facts["error"]:  # soundfile quotes the absolute path; the problem line already names the file
            facts["error"] = facts["error"].replace(str(where), rel)
        facts["path"], facts["label"], facts["sha256"] = rel, label, sha
        rows.append(facts)
    return _typed(pd.DataFrame(rows, columns=FACT_COLUMNS))


def _typed(facts: pd.DataFrame) -> pd.DataFrame:
    """Stable dtypes: nullable ints for header facts that unreadable files lack."""
    facts = facts.assign(truncation=facts["truncation"].fillna("").astype(str))
    return facts.astype(
        {
            "readable": bool,
            "truncation": str,
            "sample_rate": "Int64",
            "channels": "Int64",
            "frames": "Int64",
            "duration_s": float,
            "finite": "boolean",
            "rms_dbfs": float,
            "peak": float,
            "clipped_fraction": float,
        }
    )

