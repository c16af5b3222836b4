"""The documentation: the site builds strictly, the README stays short and undated, and every
command in a console block of the README and the docs still parses against the code.

The walk-throughs that run end to end are tested where their tools are (the DVC one in
tests/test_readme.py, ZenML on Kubeflow in tests/test_zenml_kubeflow.py); here every other
`$ ` line is checked as far as it can be without running it: an `audioflow` command (with or
without `uv run`) and a `python -m` module with a parser are parsed by the real parser, their
`--set` overrides (and `dvc exp run -S`) are validated against params.yaml by the real config
classes, a `python -m` module must exist, and a `make` target must be in the Makefile.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import importlib.util
import io
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
GUIDES = [ROOT / "README.md", ROOT / "docs" / "index.md", ROOT / "docs" / "getting-started.md",
          *sorted((ROOT / "docs" / "guides").glob("*.md"))]


def console_commands(text: str) -> list[str]:
    """Every `$ ` command of every ```console block, continuation lines joined."""
    commands = []
    for block in re.findall(r"```console\n(.*?)```", text, re.DOTALL):
        current = None
        for line in block.splitlines():
            if current is not None:
                current += " " + line.strip()
            elif line.startswith("$ "):
                current = line[2:]
            else:
                continue
            if current.rstrip().endswith("\\"):
                current = current.rstrip()[:-1]
            else:
                commands.append(current)
                current = None
    return commands


def _parse(parser: argparse.ArgumentParser, argv: list[str]) -> argparse.Namespace:
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            return parser.parse_args(argv)
    except SystemExit as exc:
        raise AssertionError(f"{shlex.join(argv)}: the parser refuses it: {err.getvalue().strip()}") from exc


def _check_overrides(pairs: list[str]) -> None:
    from audioflow.config import ParamsError, load_params

    overrides = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        assert sep, f"--set {pair!r} is not section.key=value"
        import yaml

        overrides[key] = yaml.safe_load(value) if value else None
    try:
        load_params(ROOT / "params.yaml", overrides)
    except ParamsError as exc:
        raise AssertionError(f"--set {' '.join(pairs)}: {exc}") from exc


def check_command(command: str) -> str:
    """Check one console command against the code; returns what kind it was ('' = not checked)."""
    argv = shlex.split(command, comments=True)
    if argv[:2] == ["uv", "run"]:
        argv = argv[2:]
    if not argv:
        return ""
    if argv[0] == "audioflow":
        from audioflow.cli import build_parser

        args = _parse(build_parser(), argv[1:])
        _check_overrides(getattr(args, "set", None) or [])
        return "audioflow"
    if argv[0] in ("python", "python3") and argv[1:2] == ["-m"]:
        module = argv[2]
        assert importlib.util.find_spec(module) is not None, f"{command}: no module {module}"
        mod = importlib.import_module(module)
        if hasattr(mod, "build_parser"):
            args = _parse(mod.build_parser(), argv[3:])
            _check_overrides(getattr(args, "set", None) or [])
        return "python -m"
    if argv[0] == "make":
        targets = re.findall(r"^([a-z][\w-]*):", (ROOT / "Makefile").read_text(), re.MULTILINE)
        for target in argv[1:]:
            assert target in targets, f"{command}: the Makefile has no target {target!r}"
        return "make"
    if argv[:3] == ["dvc", "exp", "run"]:
        _check_overrides([argv[i + 1] for i, a in enumerate(argv) if a == "-S"])
        return "dvc exp run"
    return ""


def test_site_builds_strictly(tmp_path: Path):
    """`make docs`: every page in the nav, no broken internal link or anchor, the API renders."""
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    mkdocs = Path(sys.executable).parent / "mkdocs"
    proc = subprocess.run([str(mkdocs), "build", "--strict", "-d", str(tmp_path / "site")], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "WARNING" not in proc.stderr, proc.stderr
    site = tmp_path / "site"
    for page in ("index.html", "getting-started/index.html", "guides/own-data/index.html",
                 "reference/parameters/index.html", "reference/api/index.html", "BENCHMARKS/index.html"):
        assert (site / page).stat().st_size > 0, page
    assert "Predictor" in (site / "reference/api/index.html").read_text()  # mkdocstrings rendered it


def test_readme_is_short_and_points_into_the_docs():
    text = (ROOT / "README.md").read_text()
    assert len(text.splitlines()) < 150
    for link in re.findall(r"\]\(([^)#]+)(?:#[^)]*)?\)", text):
        if not link.startswith("http"):
            assert (ROOT / link).exists(), f"README.md links to {link}, which does not exist"


@pytest.mark.parametrize("page", GUIDES, ids=lambda p: str(p.relative_to(ROOT)))
def test_guides_describe_what_is_not_when(page: Path):
    """No dated asides in the README and the guides: dates and figures belong to BENCHMARKS.md."""
    dates = re.findall(r"\b20\d\d-\d\d-\d\d\b", page.read_text())
    assert not dates, f"{page.relative_to(ROOT)} has dated asides: {dates}"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_console_commands_parse(page: Path):
    kinds = [check_command(c) for c in console_commands(page.read_text())]
    if page in (ROOT / "README.md", ROOT / "docs" / "getting-started.md", ROOT / "docs" / "guides" / "own-data.md"):
        assert "audioflow" in kinds or "make" in kinds, f"{page.name}: no command checked"


def test_the_checker_catches_stale_commands():
    """Each kind of check fails on a command that no longer matches the code."""
    check_command("uv run audioflow run --set train.epochs=5")
    stale = ["uv run audioflow run --sett train.epochs=5",  # an option the parser lacks
             "uv run audioflow trian",  # a command it lacks
             "audioflow run --set train.epoch=5",  # a key params.yaml lacks
             "audioflow run --set train.epochs=-1",  # a value the config refuses
             "python -m pipelines.no_such_module",
             "make no-such-target",
             "dvc exp run -S model.no_such_key=1"]
    for command in stale:
        with pytest.raises(AssertionError):
            check_command(command)


def test_console_blocks_are_found():
    text = "```console\n$ a b \\\n    c  # note\nout\n$ d\n```\n```\n$ not console\n```"
    assert console_commands(text) == ["a b  c  # note", "d"]


def readme_block(heading: str) -> list[str]:
    """The `$ ` commands of the first console block under a README heading."""
    section = (ROOT / "README.md").read_text().split(f"\n{heading}\n", 1)[1]
    return console_commands(section.split("\n## ", 1)[0])


@pytest.mark.slow
def test_readme_own_data_block_runs_on_class_folders(tmp_path: Path):
    """The README's "Your own data" commands, as written, on a folder nobody prepared: class
    folders, no manifest, and one recording there twice (kept together by the split). Only the
    folder and the recording are substituted, and training is shortened in the project's
    params.yaml (2 epochs; the commands' claims do not depend on it)."""
    import pandas as pd
    import soundfile as sf
    import yaml

    from audioflow.demo import write_demo_dataset

    write_demo_dataset(tmp_path / "demo", n_recordings=45, progress=False)
    folders = tmp_path / "recordings"
    (tmp_path / "demo" / "recordings").rename(folders)  # <label>/<patient>_<take>.wav, nothing else
    first = sorted(folders.rglob("*.wav"))[0]
    shutil.copyfile(first, first.with_name("copy.wav"))  # two copies of one sample: common in the wild
    new = tmp_path / "new.wav"
    audio, rate = sf.read(first)
    sf.write(new, audio[: rate * 2], rate)
    project = tmp_path / "project"
    project.mkdir()
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["train"]["epochs"] = 2
    (project / "params.yaml").write_text(yaml.safe_dump(params))

    commands = readme_block("## Your own data")
    assert len(commands) == 3, commands
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
           "TMPDIR": str(tmp_path)}
    outs = []
    for command in commands:
        command = command.replace("/path/to/recordings", str(folders)).replace("new-recording.wav", str(new))
        argv = shlex.split(command, comments=True)
        assert argv[:2] == ["uv", "run"], command
        proc = subprocess.run(argv[2:], cwd=project, env=env, capture_output=True, text=True, timeout=900)
        assert proc.returncode == 0, f"{command}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
        outs.append(proc.stdout + proc.stderr)
    assert "validate: passed: 46 of 46 listed recordings used" in outs[0], outs[0]
    assert "the split keeps the copies together" in outs[0], outs[0]  # a warning, not an error
    assert (project / "outputs" / "model.onnx").stat().st_size > 0
    split = pd.read_csv(project / "artifacts" / "split" / "split.csv").set_index("path")
    rel = first.relative_to(folders)
    assert split.loc[str(rel), "split"] == split.loc[str(rel.with_name("copy.wav")), "split"]
    import json

    prediction = json.loads(outs[2].strip().splitlines()[-1])
    assert prediction["label"] in {p.name for p in folders.iterdir()}, prediction
