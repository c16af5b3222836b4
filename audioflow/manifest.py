"""Find recordings and their labels, groups and folds; fingerprint their content.

A dataset is either a manifest CSV (``path,label`` plus optional group and fold columns,
paths relative to the data root) or, when there is none, class folders ``root/<label>/*``.
The root is a local folder or an object-store URL (``audioflow.storage.DataRoot``).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import stat
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import IO

import pandas as pd

from audioflow.config import DataConfig
from audioflow.errors import AudioflowError
from audioflow.storage import DataRoot

AUDIO_SUFFIXES = (".wav", ".flac", ".ogg", ".aiff", ".aif", ".mp3")

# Columns of the table that every later stage reads.
FILE_COLUMNS = ["path", "label", "group", "fold", "sha256", "bytes"]


class ManifestError(AudioflowError, ValueError):
    pass


@dataclass(frozen=True)
class Dataset:
    """The ingested file table plus its content fingerprint."""

    root: DataRoot  # as configured: a relative path stays relative, a URL stays a URL
    files: pd.DataFrame  # FILE_COLUMNS; path relative to root, POSIX separators
    fingerprint: str
    warnings: list[str] = field(default_factory=list)  # shown in the summary and the report
    # What ingest found wrong with the listing itself, for validation to judge with the rest:
    # {"path", "check", "reason"[, "line"]}; a path is a recording's or "manifest.csv:LINE".
    problems: list[dict[str, str]] = field(default_factory=list)
    n_listed: int | None = None  # manifest lines (or files found); None = len(files)

    def __post_init__(self) -> None:
        object.__setattr__(self, "root", DataRoot.of(self.root))

    def location(self, rel: str) -> Path | str:
        """Where a listed recording is: a Path under a local root, a URL under an object store."""
        return self.root.location(rel)

    @property
    def labels(self) -> list[str]:
        return sorted(self.files["label"].unique().tolist())

    @property
    def n_groups(self) -> int:
        """Distinct groups; 0 when no group column is used (each file stands alone)."""
        return int(self.files.loc[self.files["group"] != "", "group"].nunique())

    def save(self, out_dir: str | Path) -> None:
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        self.files.to_csv(out / "files.csv", index=False)
        summary = {
            "root": str(self.root),
            "fingerprint": self.fingerprint,
            "n_files": len(self.files),
            "labels": self.labels,
            "per_label": {k: int(v) for k, v in self.files["label"].value_counts().sort_index().items()},
            "n_groups": self.n_groups,
            "warnings": list(self.warnings),
            "n_listed": self.listed,
            "problems": list(self.problems),
        }
        (out / "dataset.json").write_text(json.dumps(summary, indent=2) + "\n")

    @classmethod
    def load(cls, in_dir: str | Path) -> Dataset:
        d = Path(in_dir)
        meta = json.loads((d / "dataset.json").read_text())
        files = pd.read_csv(d / "files.csv", dtype=str, keep_default_na=False)
        files["bytes"] = files["bytes"].astype(int)
        return cls(DataRoot(meta["root"]), files, meta["fingerprint"], list(meta.get("warnings", [])),
                   list(meta.get("problems", [])), meta.get("n_listed"))

    @property
    def listed(self) -> int:
        """Entries the listing named: manifest lines, or the files found in class folders."""
        return len(self.files) if self.n_listed is None else self.n_listed


def sha256_stream(f: IO[bytes], chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    while block := f.read(chunk):
        h.update(block)
    return h.hexdigest()


def fingerprint(files: pd.DataFrame) -> str:
    """Hash of every (path, label, group, fold, content hash): any change to the data changes it."""
    h = hashlib.sha256()
    table = files.sort_values("path")
    for row in zip(*(table[c].tolist() for c in ("path", "label", "group", "fold", "sha256")), strict=True):
        h.update("\x1f".join(map(str, row)).encode())
        h.update(b"\x1e")
    return h.hexdigest()


def read_manifest(cfg: DataConfig) -> tuple[pd.DataFrame, list[str], list[dict[str, str]]]:
    """Rows of (path, label, group, fold) from the manifest or from class folders, plus
    warnings and the problems of its lines (empty path or label, a path leaving the root, a
    path listed twice: those rows are left out of the table, the first of a twice-listed path
    stays and is judged by validation).

    A group or fold column that cannot be honoured is an error, except where the user asked
    for folder discovery (``manifest: null``): then it is a warning that the summary and the
    validation report repeat, because recordings of one group may straddle splits.
    """
    root = DataRoot(cfg.root)
    if not root.is_dir():
        raise ManifestError(f"data root {root} does not exist or is not a folder")
    manifest = root.location(cfg.manifest) if cfg.manifest else None
    if manifest is not None and root.is_file(cfg.manifest):
        df, problems = _from_csv(root, cfg)
        return df, [], problems
    if manifest is not None and cfg.manifest != "manifest.csv":
        # A manifest the user named explicitly must exist; the default name may be absent.
        raise ManifestError(f"manifest {manifest} not found")
    unused = _unhonoured_columns(cfg)
    if unused and manifest is not None:
        raise ManifestError(
            f"{root} has no {cfg.manifest}, so {' and '.join(unused)} cannot be read: class folders "
            "carry no groups or folds. Add the manifest, or set the column(s) to null and "
            "data.manifest: null to use class folders without them."
        )
    warnings = [
        f"{' and '.join(unused)} ignored: data.manifest is null (class folders carry no groups "
        "or folds), so recordings of one group may land in different splits"
    ] if unused else []
    return _from_folders(root), warnings, []


def _unhonoured_columns(cfg: DataConfig) -> list[str]:
    return [f"data.{k}={v!r}" for k, v in (("group_column", cfg.group_column),
                                           ("fold_column", cfg.fold_column)) if v]


def columns_for_folder(cfg: DataConfig) -> tuple[DataConfig, list[str]]:
    """``cfg`` adapted to whatever ``cfg.root`` holds, for checking an arbitrary folder.

    Group and fold columns are used when the manifest has them and dropped (with a note)
    otherwise; without a manifest, class folders are used. The pipeline itself keeps failing
    on a configured column that is missing: only ``audioflow validate DIR`` adapts.
    """
    root = DataRoot(cfg.root)
    notes: list[str] = []
    if not cfg.manifest or not root.is_file(cfg.manifest):
        if unused := _unhonoured_columns(cfg):
            notes.append(f"no {cfg.manifest or 'manifest'} in {root}: class folders, so "
                         f"{' and '.join(unused)} not used (no groups or folds)")
        return cfg.model_copy(update={"manifest": None, "group_column": None, "fold_column": None}), notes
    with root.open(cfg.manifest) as f:
        header = pd.read_csv(f, dtype=str, nrows=0).columns
    update = {}
    for key in ("group_column", "fold_column"):
        column = getattr(cfg, key)
        if column and column not in header:
            update[key] = None
            notes.append(f"data.{key}={column!r}: absent from {PurePosixPath(cfg.manifest).name}, not used")
    return cfg.model_copy(update=update), notes


def _from_csv(root: DataRoot, cfg: DataConfig) -> tuple[pd.DataFrame, list[dict[str, str]]]:
    manifest = root.location(cfg.manifest)
    with root.open(cfg.manifest) as f:
        df = pd.read_csv(f, dtype=str, keep_default_na=False)
    wanted = {"path_column": cfg.path_column, "label_column": cfg.label_column}
    if cfg.group_column:
        wanted["group_column"] = cfg.group_column
    if cfg.fold_column:
        wanted["fold_column"] = cfg.fold_column
    missing = [f"data.{k}={v!r}" for k, v in wanted.items() if v not in df.columns]
    if missing:
        raise ManifestError(
            f"{manifest}: column(s) not found: {', '.join(missing)}; it has {list(df.columns)}"
        )
    if df.empty:
        raise ManifestError(f"{manifest}: no recordings listed")
    out = pd.DataFrame(
        {
            "path": df[cfg.path_column].str.strip().str.replace("\\", "/", regex=False).map(_normal),
            "label": df[cfg.label_column].str.strip(),
            "group": df[cfg.group_column].str.strip() if cfg.group_column else "",
            "fold": df[cfg.fold_column].str.strip().str.lower() if cfg.fold_column else "",
        }
    )
    name = PurePosixPath(cfg.manifest).name
    problems, keep = [], []
    first_line: dict[str, int] = {}
    labels = out["label"].tolist()
    for i, (path, label) in enumerate(zip(out["path"].tolist(), labels, strict=True)):
        line = i + 2  # header is line 1
        where = f"{cfg.manifest}:{line}"
        if not path:
            problems.append(_problem(where, "manifest_entry", "empty path", line))
        elif not inside_root(path):
            problems.append(_problem(where, "manifest_entry", f"{path}: path leaves the data root "
                                     "(absolute or '..'); paths are relative to the manifest's folder", line))
        elif not label:
            problems.append(_problem(where, "manifest_entry", f"{path}: empty label", line))
        elif path in first_line:
            first = first_line[path]
            problems.append(_problem(where, "listed_twice", f"{path} listed again (first on line {first})",
                                     line))
            if (first_label := labels[first - 2]) != label:
                problems.append(_problem(path, "listed_twice", f"listed under two labels in {name}: "
                                         f"{first_label!r} (line {first}) and {label!r} (line {line})"))
        else:
            first_line[path] = line
            keep.append(i)
    return out.iloc[keep].reset_index(drop=True), problems


def _problem(path: str, check: str, reason: str, line: int | None = None) -> dict:
    """A listing problem; ``line``: the manifest line it left out (counted as listed, not used)."""
    return {"path": path, "check": check, "reason": reason} | ({"line": line} if line else {})


def _normal(rel: str) -> str:
    """``./a//b.wav`` -> ``a/b.wav``: one spelling per file (absolute and '..' are judged later)."""
    if not rel or ("//" not in rel and "." not in rel.split("/") and not rel.endswith("/")):
        return rel  # already one spelling (most paths): no PurePosixPath a row
    return PurePosixPath(rel).as_posix()


_DRIVE = re.compile(r"^[A-Za-z]:")


def inside_root(rel: str) -> bool:
    """True for a relative path that cannot leave the data root (no absolute, drive or '..')."""
    return not (rel.startswith("/") or _DRIVE.match(rel) or ".." in rel.split("/"))


def _from_folders(root: DataRoot) -> pd.DataFrame:
    # Audio files one level or more below a class folder, nothing hidden on the way (macOS's
    # "._x.wav" companions, a ".cache/" inside a class folder), ordered by class, then by path.
    rels = sorted((rel for rel in root_listing(root) if "/" in rel and _visible_audio(rel)),
                  key=lambda rel: rel.split("/"))
    rows = [{"path": rel, "label": rel.split("/", 1)[0]} for rel in rels]
    if not rows:
        raise ManifestError(
            f"{root}: no manifest.csv and no class folders with audio "
            f"({', '.join(AUDIO_SUFFIXES)}) — expected {root}/<label>/<file>"
        )
    df = pd.DataFrame(rows)
    df["group"] = ""
    df["fold"] = ""
    return df


def _visible_audio(rel: str) -> bool:
    """An audio file's suffix, and no hidden folder or file on the way to it."""
    return PurePosixPath(rel).suffix.lower() in AUDIO_SUFFIXES and not any(p.startswith(".") for p in rel.split("/"))


def root_listing(root: DataRoot) -> dict[str, int]:
    """The files under ``root``, relative POSIX path -> bytes: a local folder's walk
    (``local_audio_files``) or an object store's one listing (``files()``)."""
    return local_audio_files(root.local) if root.local is not None else root.files()


def local_audio_files(local: Path) -> dict[str, int]:
    """Audio files under a local folder, outside hidden folders and not hidden themselves:
    relative POSIX path -> bytes. One walk, one stat a file (symlinked folders are not entered,
    as a glob does not)."""
    found: dict[str, int] = {}
    base = str(local)
    for folder, subfolders, names in os.walk(base):
        subfolders[:] = sorted(d for d in subfolders if not d.startswith("."))
        prefix = os.path.relpath(folder, base).replace(os.sep, "/") + "/"
        for name in names:
            if name.startswith(".") or os.path.splitext(name)[1].lower() not in AUDIO_SUFFIXES:
                continue
            try:
                st = os.stat(os.path.join(folder, name))
            except OSError:  # a dangling link
                continue
            if stat.S_ISREG(st.st_mode):
                found[name if prefix == "./" else prefix + name] = st.st_size
    return found


def unlisted_files(root: DataRoot, listed: set[str], listing: dict[str, int] | None = None) -> list[str]:
    """Audio files under ``root`` (outside hidden folders) that the manifest does not name.

    ``listing``: the files already found (``local_audio_files``, an object store's ``files()``).
    """
    listing = root_listing(root) if listing is None else listing
    return sorted(rel for rel in listing if rel not in listed and _visible_audio(rel))


def _sha256(root: DataRoot, rel: str) -> str:
    if (local := root.local) is not None:
        with open(f"{local}/{rel}", "rb") as f:  # rel: a relative POSIX path inside the root
            return hashlib.file_digest(f, "sha256").hexdigest()
    with root.open(rel) as f:  # the bytes, wherever they are: same content, same fingerprint
        return sha256_stream(f)


def ingest(cfg: DataConfig, progress: bool = True) -> Dataset:
    """Read the manifest (or folders) and hash every file's content.

    Problems of the listing (bad lines, missing or unlisted files) do not stop it: they are
    kept in ``Dataset.problems`` for validation to report together with everything else.
    """
    from tqdm import tqdm

    # Kept as configured (relative to the working directory when it is relative, a URL as
    # written), so stage outputs stay valid in another checkout or pod of the same project.
    root = DataRoot(cfg.root)
    df, warnings, problems = read_manifest(cfg)
    n_listed = len(df) + sum("line" in p for p in problems)  # + the lines left out
    listing = None  # one listing serves the sizes and the unlisted files
    if cfg.manifest:
        listing = root_listing(root)
    listed = df["path"].tolist()
    sizes = root.sizes(listed, listing)
    missing = [p for p in listed if p not in sizes]
    problems += [_problem(p, "missing", "file not found") for p in missing]
    if cfg.manifest and len(df):  # class folders list every file there is
        name = PurePosixPath(cfg.manifest).name
        problems += [_problem(p, "unlisted", f"audio file under the data root that {name} does not list")
                     for p in unlisted_files(root, set(listed), listing)]
    df = df[~df["path"].isin(missing)]
    if df.empty:
        shown = "\n".join(f"{p['path']}: {p['reason']}" for p in problems[:50])
        raise ManifestError(f"{root}: no usable recordings listed\n{shown}".rstrip())
    paths = df["path"].tolist()
    hashes = [_sha256(root, p) for p in tqdm(paths, desc="ingest: hashing", unit="file", disable=not progress,
                                               leave=False)]
    df = df.assign(sha256=hashes, bytes=[sizes[p] for p in paths])[FILE_COLUMNS]
    df = df.sort_values("path", kind="stable").reset_index(drop=True)
    return Dataset(root, df, fingerprint(df), warnings, problems, n_listed)
