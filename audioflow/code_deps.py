"""Which audioflow source files a stage runs, read from the code (no import, no execution).

A stage is a module of ``audioflow/stages/`` (its function and its declaration). It runs that
module and, transitively, everything it imports (at module level or inside functions:
conservative). ``dvc.yaml`` lists exactly these files as the stage's code dependencies (it is
generated from them), and the ZenML steps and KFP components put ``code_hash`` in their cache
keys: ZenML hashes a step's own function only, so without it a new audioflow (a new feature
file, a fixed bug) would be served stale results from the cache. This module knows nothing of
the stages themselves: callers pass ``Stage.module``.
"""

from __future__ import annotations

import ast
import hashlib
from functools import cache
from pathlib import Path

PKG = Path(__file__).resolve().parent
ROOT = PKG.parent


def _module_file(name: str) -> Path | None:
    """audioflow.x.y -> its file (a package -> its folder); None outside audioflow."""
    parts = name.split(".")
    if parts[0] != "audioflow":
        return None
    base = ROOT.joinpath(*parts)
    if base.is_dir():
        return base
    if base.with_suffix(".py").is_file():
        return base.with_suffix(".py")
    return None


def _imports(node: ast.AST, package: str) -> set[Path]:
    found: set[Path] = set()
    for n in ast.walk(node):
        if isinstance(n, ast.Import):
            for alias in n.names:
                f = _module_file(alias.name)
                if f is not None:
                    found.add(f if alias.name != "audioflow" else PKG / "__init__.py")
        elif isinstance(n, ast.ImportFrom):
            mod = n.module or ""
            if n.level:  # relative: from . import x / from .cnn import CNN
                mod = ".".join(package.split(".")[: len(package.split(".")) - n.level + 1] + ([mod] if mod else []))
            if mod == "audioflow":
                for alias in n.names:
                    sub = _module_file(f"audioflow.{alias.name}")
                    found.add(sub if sub is not None else PKG / "__init__.py")
            elif (f := _module_file(mod)) is not None:
                found.add(f)
    return found


def _package_of(path: Path) -> str:
    """The package a module file belongs to (what its relative imports start from)."""
    return ".".join(path.relative_to(ROOT).parts[:-1])


def _reachable(start, neighbours) -> set:
    """``start`` and everything ``neighbours`` leads to from it, transitively."""
    seen: set = set()
    todo = [start]
    while todo:
        t = todo.pop()
        if t not in seen:
            seen.add(t)
            todo.extend(neighbours(t))
    return seen


def _file_imports(target: Path) -> set[Path]:
    """What a module file, or every module of a package folder, imports from audioflow."""
    files = sorted(target.glob("*.py")) if target.is_dir() else [target]
    return set().union(*(_imports(ast.parse(f.read_text()), _package_of(f)) for f in files))


@cache
def _closure(target: Path) -> frozenset[Path]:
    """``target`` (a file or package folder) and every audioflow file it imports, transitively."""
    return frozenset(_reachable(target, _file_imports))


def module_file(module: str) -> Path:
    f = _module_file(module)
    if f is None or f.is_dir():
        raise ValueError(f"{module}: not a module file of audioflow")
    return f


def stage_files(module: str) -> set[Path]:
    """The audioflow files (package folders for subpackages) a stage's module runs: itself and,
    transitively, what it imports (``Stage.module``: one module per stage)."""
    out = set(_closure(module_file(module)))
    # A file inside a listed package folder is covered by the folder.
    folders = {p for p in out if p.is_dir()}
    return {p for p in out if not any(f in p.parents for f in folders)}


@cache
def code_hash(module: str) -> str:
    """A digest of a stage module's source files (their paths inside the package and their bytes)."""
    h = hashlib.sha256()
    for target in sorted(stage_files(module)):
        for f in sorted(target.rglob("*.py")) if target.is_dir() else [target]:
            h.update(f.relative_to(ROOT).as_posix().encode() + b"\0" + f.read_bytes() + b"\0")
    return h.hexdigest()[:16]
