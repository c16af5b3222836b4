"""Which audioflow source files each stage runs, read from the code (no import, no execution).

A stage is a function in ``audioflow/stages.py``. It runs what its body imports, what the
helpers of ``stages.py`` that it calls import, and, transitively, everything those modules
import (at module level or inside functions: conservative). ``dvc.yaml`` lists exactly these
files as the stage's code dependencies (tests/test_stage_contract.py compares), and the ZenML
steps put ``code_hash(stage)`` in their cache keys: ZenML hashes a step's own function only,
so without it a new audioflow (a new feature file, a fixed bug) would be served stale results
from the cache.
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


def stage_files(stage: str) -> set[Path]:
    """The audioflow files (package folders for subpackages) the stage function runs."""
    stages_py = PKG / "stages.py"
    tree = ast.parse(stages_py.read_text())
    funcs = {n.name: n for n in tree.body if isinstance(n, ast.FunctionDef)}
    module_level = set()
    for n in tree.body:
        if isinstance(n, ast.Import | ast.ImportFrom):
            module_level |= _imports(n, "audioflow")
    # The stage function and the helpers of stages.py it calls, transitively.
    used = _reachable(stage, lambda name: [c.func.id for c in ast.walk(funcs[name]) if isinstance(c, ast.Call)
                                           and isinstance(c.func, ast.Name) and c.func.id in funcs])
    direct = set(module_level)
    for name in used:
        direct |= _imports(funcs[name], "audioflow")
    out: set[Path] = {stages_py}  # itself, but not what its other stages import
    for d in direct - {stages_py}:
        out |= _closure(d)
    # A file inside a listed package folder is covered by the folder.
    folders = {p for p in out if p.is_dir()}
    return {p for p in out if not any(f in p.parents for f in folders)}


@cache
def code_hash(stage: str) -> str:
    """A digest of the stage's source files (their paths inside the package and their bytes)."""
    h = hashlib.sha256()
    for target in sorted(stage_files(stage)):
        for f in sorted(target.rglob("*.py")) if target.is_dir() else [target]:
            h.update(f.relative_to(ROOT).as_posix().encode() + b"\0" + f.read_bytes() + b"\0")
    return h.hexdigest()[:16]


if __name__ == "__main__":  # python -m audioflow.code_deps: each stage's files, as dvc.yaml lists them
    from audioflow.stages import PARAMS

    for stage in PARAMS:
        print(stage, sorted(p.relative_to(ROOT).as_posix() for p in stage_files(stage)))
