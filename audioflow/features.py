"""Featurizing a dataset to a .npy memmap of windows, and the feature spec's resolution
(sample rate and window length, where ``auto``).

The front-end itself (``LogMel``, ``FeatureSpec``, ``power_to_db``) lives in ``audioflow.logmel``
and stays importable from here. Training and featurizing run ``LogMel``; the exported ONNX
graph runs its convolution form (``export.ConvLogMel``), checked against ``LogMel`` on every
export, so serving features do not drift from training features.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pandas as pd
import torch

from audioflow import audio
from audioflow.config import FeaturesConfig
from audioflow.errors import AudioflowError
from audioflow.logmel import LOG_FLOOR, FeatureSpec, LogMel, floor_db, log_mel_windows, power_to_db  # noqa: F401
from audioflow.manifest import Dataset


class FeaturesError(AudioflowError, ValueError):
    """A features folder that is incomplete or whose files disagree."""


@contextmanager
def scratch_compiler_cache(compiling: bool = False) -> Iterator[None]:
    """Point torch's compiler cache at a temporary folder that goes when the block ends.

    ``torch.compile``'s precompiled headers ignore that setting: they go to the default folder,
    ``$TMPDIR/torchinductor_<user>``, shared by every process of the user. A block that compiles
    (``compiling``) removes that folder afterwards if it did not exist before; any other block
    removes it only if it is empty, never while another process's compile may be using it.
    """
    key = "TORCHINDUCTOR_CACHE_DIR"
    before = os.environ.get(key)
    import getpass

    default = Path(tempfile.gettempdir()) / f"torchinductor_{getpass.getuser()}"
    existed = default.exists()
    with tempfile.TemporaryDirectory(prefix="audioflow-torch-cache-") as cache:
        os.environ[key] = cache
        try:
            yield
        finally:
            if before is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = before
            if not existed and compiling:
                shutil.rmtree(default, ignore_errors=True)
            elif not existed:
                with suppress(OSError):
                    default.rmdir()  # only if empty


def pick_device(name: str) -> torch.device:
    if name == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("device 'cuda' requested but CUDA is not available")
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(name)


def resolve_sample_rate(cfg: FeaturesConfig, ds: Dataset, infos: list | None = None) -> int:
    """features.sample_rate, or with 'auto' the most common native rate of the recordings."""
    if cfg.sample_rate != "auto":
        return int(cfg.sample_rate)
    infos = infos if infos is not None else [audio.info(ds.location(p)) for p in ds.files["path"]]
    rates = Counter(i.sample_rate for i in infos)
    # Ties go to the higher rate: downsampling loses less than upsampling invents.
    return max(rates.items(), key=lambda kv: (kv[1], kv[0]))[0]


# features.window_s: auto picks the shortest of these (seconds) that holds WHOLE_SHARE of the
# recordings whole; longer recordings are cut into windows (hop: half a window) whose
# predictions are averaged. 5 s bounds it: a longer window makes every step slower and, for
# long recordings (heart sounds, soundscapes), several 5-s windows see what one long one would.
AUTO_WINDOWS_S = (0.25, 0.5, 1.0, 2.0, 5.0)
WHOLE_SHARE = 0.9


def auto_window_s(durations: list[float] | np.ndarray) -> float:
    """The window ``features.window_s: auto`` gives recordings of these durations (seconds)."""
    if len(durations) == 0:
        raise ValueError("no recordings to choose features.window_s from")
    # The empirical quantile (no interpolation): at least WHOLE_SHARE of them are this long or shorter.
    typical = float(np.quantile(np.asarray(durations, dtype=float), WHOLE_SHARE, method="inverted_cdf"))
    return next((w for w in AUTO_WINDOWS_S if w >= typical), AUTO_WINDOWS_S[-1])


def resolve_window_s(cfg: FeaturesConfig, ds: Dataset, infos: list | None = None) -> float:
    """features.window_s, or with 'auto' ``auto_window_s`` of the recordings' durations."""
    if cfg.window_s != "auto":
        return float(cfg.window_s)
    infos = infos if infos is not None else [audio.info(ds.location(p)) for p in ds.files["path"]]
    return auto_window_s([i.duration_s for i in infos])


def resolve_spec(cfg: FeaturesConfig, ds: Dataset, headers: pd.DataFrame | None = None) -> FeatureSpec:
    """The feature spec for ``ds``: its sample rate and window resolved where they are auto,
    from the recordings' headers: ``headers`` (a table of path, sample_rate and duration_s:
    validation's facts, which read every header already) where it covers every recording, else
    one pass reading them."""
    infos = None
    if cfg.sample_rate == "auto" or cfg.window_s == "auto":
        infos = _from_headers(ds, headers) if headers is not None else None
        if infos is None:
            infos = [audio.info(ds.location(p)) for p in ds.files["path"]]
    return FeatureSpec.resolve(cfg, resolve_sample_rate(cfg, ds, infos), resolve_window_s(cfg, ds, infos))


class _Header(NamedTuple):
    sample_rate: int
    duration_s: float


def _from_headers(ds: Dataset, headers: pd.DataFrame) -> list[_Header] | None:
    """``ds``'s recordings' rates and durations from ``headers``, or None where it misses one."""
    table = headers.drop_duplicates("path").set_index("path").reindex(ds.files["path"])
    if table[["sample_rate", "duration_s"]].isna().any().any():
        return None
    return [_Header(int(r), float(d)) for r, d in zip(table["sample_rate"], table["duration_s"])]


class _NpyWriter:
    """Append float rows to a .npy file whose length is only known at the end."""

    HEADER = 256  # bytes reserved for the .npy header, a multiple of 64 as numpy prefers

    def __init__(self, path: Path, row_shape: tuple[int, ...], dtype: np.dtype):
        self.path, self.row_shape, self.dtype, self.rows = path, row_shape, np.dtype(dtype), 0
        self.f = open(path, "wb")
        self.f.write(b"\0" * self.HEADER)

    def append(self, block: np.ndarray) -> None:
        if block.shape[1:] != self.row_shape:
            raise ValueError(f"{self.path}: rows of shape {block.shape[1:]}, expected {self.row_shape}")
        if self.dtype == np.float16 and block.dtype != np.float16:
            # torch's cast (F16C) is bit for bit numpy's, and ten times faster
            block = torch.from_numpy(np.ascontiguousarray(block, dtype=np.float32)).to(torch.float16).numpy()
        self.f.write(np.ascontiguousarray(block, dtype=self.dtype).reshape(-1).view(np.uint8))  # no copy to bytes
        self.rows += block.shape[0]

    def close(self) -> None:
        header = {
            "descr": np.lib.format.dtype_to_descr(self.dtype),
            "fortran_order": False,
            "shape": (self.rows, *self.row_shape),
        }
        text = repr(header).encode("latin1")
        pad = self.HEADER - 10 - len(text) - 1
        if pad < 0:
            raise ValueError("npy header does not fit")
        self.f.seek(0)
        self.f.write(b"\x93NUMPY\x01\x00" + (self.HEADER - 10).to_bytes(2, "little"))
        self.f.write(text + b" " * pad + b"\n")
        self.f.close()


# The decoded recordings (mono, at the features' sample rate) beside the features, for the
# augmentations that need the waveform (random crops and shifts, speed, noise). float16: half
# the disk of float32, and its rounding error stays ~66 dB below the signal at every level
# (int16's is fixed, so quiet recordings would lose their detail).
AUDIO_DTYPE = np.float16
INDEX_COLUMNS = ["path", "label", "group", "fold", "start_sample", "audio_offset", "audio_length"]


@dataclass
class Features:
    """Featurized windows: a memmapped [n_windows, n_mels, n_frames] array + an index table,
    and the decoded recordings they were cut from (``audio.npy``, one flat memmap; each
    window's recording is ``audio[audio_offset : audio_offset + audio_length]``)."""

    dir: Path
    spec: FeatureSpec
    index: pd.DataFrame  # row, path, label, group, fold, start_sample, audio_offset, audio_length
    labels: list[str]

    @property
    def array(self) -> np.ndarray:
        return np.load(self.dir / "features.npy", mmap_mode="r")

    @property
    def audio(self) -> np.ndarray:
        return np.load(self.dir / "audio.npy", mmap_mode="r")

    @classmethod
    def load(cls, d: str | Path) -> Features:
        """Open a features folder; refuse one whose files do not belong together."""
        d = Path(d)
        missing = [n for n in ("features.json", "index.csv", "features.npy", "audio.npy") if not (d / n).is_file()]
        if missing:
            raise FeaturesError(f"{d}: missing {', '.join(missing)} (not a complete features folder)")
        meta = json.loads((d / "features.json").read_text())
        index = pd.read_csv(d / "index.csv", dtype={"path": str, "label": str, "group": str, "fold": str},
                            keep_default_na=False)
        spec = FeatureSpec(**meta["spec"])
        shapes = {}
        for name in ("features.npy", "audio.npy"):
            try:
                shapes[name] = np.load(d / name, mmap_mode="r").shape
            except ValueError as exc:  # a truncated file no longer holds what its header promises
                raise FeaturesError(f"{d / name}: unreadable ({exc})") from None
        shape = shapes["features.npy"]
        expected = (meta["n_windows"], spec.n_mels, spec.n_frames)
        if shape != expected or len(index) != meta["n_windows"]:
            raise FeaturesError(
                f"{d}: inconsistent features folder: features.npy holds {shape}, index.csv "
                f"{len(index)} rows, features.json promises {expected}; featurize again"
            )
        samples = (meta["audio_samples"],)
        if shapes["audio.npy"] != samples or (len(index) and int((index["audio_offset"] + index["audio_length"]).max())
                                              != samples[0]):
            raise FeaturesError(f"{d}: inconsistent features folder: audio.npy holds {shapes['audio.npy']} samples, "
                                f"features.json promises {samples}; featurize again")
        return cls(d, spec, index, meta["labels"])


def shard_files(files: pd.DataFrame, shard: int, n_shards: int) -> pd.DataFrame:
    """The ``shard``-th of ``n_shards`` contiguous, near-equal parts of the file table.

    Contiguous parts in table order, so merging the shards in order gives the unsharded rows.
    """
    if not 0 <= shard < n_shards:
        raise ValueError(f"shard {shard} is outside 0..{n_shards - 1}")
    bounds = np.linspace(0, len(files), n_shards + 1).round().astype(int)
    return files.iloc[bounds[shard] : bounds[shard + 1]]


_CHUNK_BYTES = 32 << 20  # waveform bytes of the windows sorted by length together (about)
def _chunk_windows(spec: FeatureSpec) -> int:
    """How many windows are sorted by length together: several batches' worth, so that windows
    of similar length can share one, within a bounded amount of memory."""
    return int(np.clip(_CHUNK_BYTES // (4 * spec.window_samples), 16, 1024))


def featurize(
    ds: Dataset, cfg: FeaturesConfig, out_dir: str | Path, progress: bool = True,
    shard: tuple[int, int] = (0, 1), headers: pd.DataFrame | None = None,
) -> Features:
    """Decode every recording, cut fixed-length windows and write their log-mel features.

    Work is batched by windows; the front-end runs on the GPU when there is one. The output
    lives on disk (``features.npy`` memmap + ``index.csv``), so a dataset larger than memory works.
    ``shard=(i, n)`` featurizes only the i-th of n parts of the file table (``merge_features``
    joins the parts); the spec, and so the sample rate, is always resolved over all files
    (from ``headers`` where given: see ``resolve_spec``).
    """
    from tqdm import tqdm

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    spec = resolve_spec(cfg, ds, headers)
    files = shard_files(ds.files, *shard)
    device = pick_device(cfg.device)
    front = spec.front_end().to(device).eval()
    writer = _NpyWriter(out / "features.npy", (spec.n_mels, spec.n_frames), np.float32)
    audio_writer = _NpyWriter(out / "audio.npy", (), AUDIO_DTYPE)
    columns: dict[str, list] = {c: [] for c in INDEX_COLUMNS}
    # Windows waiting for the front-end: (signal, start); the window is signal[start : start + window].
    pending: list[tuple[np.ndarray, int]] = []
    chunk = _chunk_windows(spec)
    signals: list[np.ndarray] = []  # the pending windows' recordings, for audio.npy
    samples = 0  # samples of audio.npy written or pending

    def flush() -> None:
        """The front-end over the pending windows, in batches of similar length, written in order;
        their recordings, in one write."""
        if pending:
            writer.append(log_mel_windows(front, spec, pending, cfg.batch_size, device))
            audio_writer.append(np.concatenate(signals))
            pending.clear()
            signals.clear()

    try:
        for f in tqdm(files.itertuples(index=False), total=len(files), desc="featurize",
                      unit="file", disable=not progress, leave=False):
            signal = audio.load(ds.location(f.path), spec.sample_rate)
            starts = audio.window_starts(len(signal), spec.window_samples, spec.window_hop_samples)
            pending.extend((signal, s) for s in starts)
            signals.append(signal)
            for name, value in (("path", f.path), ("label", f.label), ("group", f.group), ("fold", f.fold),
                                ("audio_offset", samples), ("audio_length", len(signal))):
                columns[name].extend([value] * len(starts))
            columns["start_sample"].extend(starts)
            samples += len(signal)
            if len(pending) >= chunk:
                flush()
        flush()
    finally:
        writer.close()
        audio_writer.close()
    index = pd.DataFrame(columns, columns=INDEX_COLUMNS)
    index.insert(0, "row", range(len(index)))
    index.to_csv(out / "index.csv", index=False)
    meta = {
        "spec": spec.to_dict(),
        "labels": ds.labels,
        "n_windows": len(index),
        "n_files": len(files),
        "audio_samples": audio_writer.rows,
        "dataset_fingerprint": ds.fingerprint,
    }
    (out / "features.json").write_text(json.dumps(meta, indent=2) + "\n")
    return Features(out, spec, index, ds.labels)


def merge_features(parts: list[str | Path], out_dir: str | Path) -> Features:
    """Join featurized shards, in order, into one features folder.

    The result is byte for byte what featurizing all files at once writes: rows are
    concatenated, the index renumbered, and the metadata must agree across the parts.
    """
    shards = [Features.load(p) for p in parts]
    if not shards:
        raise FeaturesError("no feature shards to merge")
    metas = [json.loads((f.dir / "features.json").read_text()) for f in shards]
    for key in ("spec", "labels", "dataset_fingerprint"):
        if any(m[key] != metas[0][key] for m in metas[1:]):
            raise FeaturesError(f"feature shards disagree on {key}: they come from different runs")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    spec = shards[0].spec
    writer = _NpyWriter(out / "features.npy", (spec.n_mels, spec.n_frames), np.float32)
    try:
        for f in shards:
            arr = f.array
            for i in range(0, len(arr), 1024):  # bounded memory, whatever the shard size
                writer.append(np.asarray(arr[i : i + 1024]))
    finally:
        writer.close()
    audio_writer = _NpyWriter(out / "audio.npy", (), AUDIO_DTYPE)
    parts_index = []
    try:
        for f in shards:
            parts_index.append(f.index.assign(audio_offset=f.index["audio_offset"] + audio_writer.rows))
            samples = f.audio
            for i in range(0, len(samples), 1 << 24):
                audio_writer.append(np.asarray(samples[i : i + (1 << 24)]))
    finally:
        audio_writer.close()
    index = pd.concat(parts_index, ignore_index=True)
    index["row"] = range(len(index))
    index.to_csv(out / "index.csv", index=False)
    meta = dict(metas[0], n_windows=len(index), n_files=sum(m["n_files"] for m in metas),
                audio_samples=audio_writer.rows)
    (out / "features.json").write_text(json.dumps(meta, indent=2) + "\n")
    return Features(out, spec, index, metas[0]["labels"])
