"""The architecture as pyproject.toml's import-linter contracts state it, checked by the real
``lint-imports``: the library never imports a front (pipelines/, steps/); inference, serving and
the deployment CLI import neither torch, the orchestrators nor the pipeline; no import cycles.
And no module grows past about 400 lines."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LINT_IMPORTS = Path(sys.executable).parent / "lint-imports"
MAX_LINES = 400

# Modules allowed past MAX_LINES, each with its reason. Remove an entry once its module is split.
TOO_LONG_ALLOWED: dict[str, str] = {}


def test_import_contracts_hold():
    p = subprocess.run([str(LINT_IMPORTS), "--no-cache", "--no-logo"], cwd=ROOT, capture_output=True, text=True,
                       timeout=300)
    assert p.returncode == 0, f"lint-imports -> {p.returncode}\n{p.stdout}\n{p.stderr}"


def _loaded(code: str, tops: set[str], prefixes: tuple[str, ...] = ()) -> list[str]:
    """The modules under ``tops`` (or starting with ``prefixes``) that running ``code`` in a
    fresh interpreter leaves in sys.modules."""
    probe = (f"import sys; {code}; print(sorted(m for m in sys.modules if m.split('.')[0] in {sorted(tops)!r} "
             f"or m.startswith({prefixes!r})))")
    p = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stdout + p.stderr
    return ast.literal_eval(p.stdout)


def test_the_deployment_cli_imports_no_torch():
    """What the contracts check statically, at run time: the modules a torch-free install runs."""
    assert _loaded("import audioflow.cli, audioflow.cli.deploy, audioflow.inference, audioflow.serve",
                   {"torch", "torchaudio", "zenml", "dvc", "kfp", "pandas", "sklearn"},
                   ("audioflow.stages", "audioflow.training", "audioflow.features", "audioflow.cli.pipeline")) == []


def test_the_stage_declarations_load_in_the_core_install():
    """The torch-free serve image has the whole CLI: ``audioflow --help`` and ``audioflow serve``
    build the parser, stage commands included, from the declarations. So importing those needs
    none of the training extra (yaml, pandas, torch); a stage command then names it."""
    assert _loaded("import audioflow.cli, audioflow.cli.pipeline, audioflow.stages; audioflow.cli.build_parser()",
                   {"torch", "torchaudio", "pandas", "yaml", "sklearn", "zenml", "dvc", "kfp"}) == []


def test_no_module_is_too_long():
    lengths = {path.relative_to(ROOT).as_posix(): len(path.read_text().splitlines())
               for top in ("audioflow", "pipelines", "steps") for path in (ROOT / top).rglob("*.py")
               if "__pycache__" not in path.parts}
    too_long = {name: n for name, n in sorted(lengths.items()) if n > MAX_LINES and name not in TOO_LONG_ALLOWED}
    assert not too_long, f"modules over {MAX_LINES} lines (split them, or list them with a reason): {too_long}"
    gone = sorted(name for name in TOO_LONG_ALLOWED if lengths.get(name, 0) <= MAX_LINES)
    assert not gone, f"no longer over {MAX_LINES} lines (or gone): remove from TOO_LONG_ALLOWED: {gone}"
