"""Atomic writes: a reader (or a crash) sees the old file or folder, or the new one, never half.

The one place audioflow writes anything atomically. ``atomic_path`` is the primitive: write to
the temporary sibling it yields (with any writer: ``torch.save``, ``onnx.save``, ``to_csv``); on
success it replaces the target, on error it goes. ``atomic_dir`` does the same for a whole folder.
Standard library only: the torch-free deployment install uses it too.
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def atomic_path(path: str | Path, tag: str = "partial") -> Iterator[Path]:
    """Yield a hidden temporary sibling of ``path``; on success it replaces ``path`` (one
    ``os.replace``), on error it is removed and ``path`` is left as it was."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{tag}-{uuid.uuid4().hex[:8]}")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_bytes(path: str | Path, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def write_text(path: str | Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def copy_file(src: str | Path, dst: str | Path) -> None:
    with atomic_path(dst) as tmp:
        shutil.copyfile(src, tmp)


@contextmanager
def atomic_dir(out: str | Path) -> Iterator[Path]:
    """Yield an empty sibling folder that replaces ``out`` whole on success and goes on error.

    A crash mid-stage leaves the previous outputs (or none), never old and new files mixed.
    """
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    token = uuid.uuid4().hex[:8]
    tmp = out.with_name(f".{out.name}.partial-{token}")
    tmp.mkdir()  # not mkdtemp: the folder keeps the usual permissions (umask), not 0700
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    old = out.with_name(f".{out.name}.old-{token}")
    if out.exists():
        os.replace(out, old)
    os.replace(tmp, out)
    shutil.rmtree(old, ignore_errors=True)
