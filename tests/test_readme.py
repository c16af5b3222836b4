"""The DVC guide's walk-through (docs/guides/dvc.md, "## Reproduce"), run as written in a
fresh-clone-like repo; tests/test_docs.py checks every other console block of the docs.

The commands are read from the guide itself: `$ ` and the `# ...` comments are stripped and
the leading `uv run` becomes the environment's own executables. The claims are checked from
the comments as well: a quoted "..." must appear in the command's output, "all N stages" must
be every stage of dvc.yaml.

The repository gets the project's committed DVC files (dvc.yaml, dvc.lock, data.dvc,
params.yaml, .dvc/config, .dvcignore, .gitignore, dvc_plots/) and audioflow/, as a clone
would, with one change to keep the test short: train.epochs 2 instead of auto (30 or more). None of the
claims depends on how long training runs; the data stay the default demo recordings, which
must match the committed data.dvc byte for byte.
"""

from __future__ import annotations

import re
import shlex
import shutil
from pathlib import Path

import pytest

from tests.test_dvc import BIN, ROOT, STAGES, new_repo, ran

GUIDE = ROOT / "docs" / "guides" / "dvc.md"

pytestmark = pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")


def console_block(heading: str) -> list[tuple[list[str], str]]:
    """(argv, comment) of each `$ ` line in the first console block under the heading."""
    section = GUIDE.read_text().split(f"\n{heading}\n", 1)[1]
    block = re.search(r"```console\n(.*?)```", section, re.DOTALL)
    assert block, f"no console block under {heading!r} in {GUIDE.name}"
    commands = []
    for line in block.group(1).splitlines():
        if line.startswith("$ "):
            command, _, comment = line[2:].partition(" #")
            commands.append((shlex.split(command), comment.strip()))
    return commands


def test_reproduce_block_parses():
    commands = console_block("## Reproduce")
    assert commands and all(argv[:2] == ["uv", "run"] for argv, _ in commands)
    assert [argv[2:] for argv, _ in commands].count(["dvc", "repro"]) == 2


@pytest.mark.slow
def test_reproduce_walkthrough_is_true(tmp_path: Path):
    repo = new_repo(tmp_path / "clone", tmp_path / "home")
    repo.env["TMPDIR"] = str(tmp_path / "tmp")  # the stages' scratch (torch's compile cache too)
    (tmp_path / "tmp").mkdir()
    for name in ("dvc.yaml", "dvc.lock", "data.dvc", "params.yaml", ".gitignore"):
        shutil.copyfile(ROOT / name, repo.path / name)
    shutil.copytree(ROOT / "dvc_plots", repo.path / "dvc_plots",
                    ignore=shutil.ignore_patterns("index.html", "static", "__pycache__"))
    shutil.copytree(ROOT / "audioflow", repo.path / "audioflow", ignore=shutil.ignore_patterns("__pycache__"))
    repo.set_params({"train.epochs": 2})
    repo.commit("the project, as cloned")
    data_dvc = (repo.path / "data.dvc").read_text()

    results, claims = [], 0
    for argv, comment in console_block("## Reproduce"):
        out = repo.run(BIN / argv[2], *argv[3:])
        results.append((argv[2:], comment, out))
        # Each claim is checked as soon as its command ran: a false one fails before the repro.
        for quoted in re.findall(r'"([^"]+)"', comment):
            assert quoted in out, f"{' '.join(argv)}: the guide says {quoted!r}, it printed:\n{out}"
            claims += 1
        if m := re.search(r"all (\d+) stages", comment):
            assert len(ran(out)) == int(m.group(1)) == len(STAGES), out
            claims += 1
    assert claims >= 3

    status = next(out for cmd, _, out in results if cmd == ["dvc", "status", "data.dvc"])
    assert "Data and pipelines are up to date." in status and "not in cache" not in status
    first, again = [out for cmd, _, out in results if cmd == ["dvc", "repro"]]
    assert sorted(ran(first)) == sorted(STAGES) and ran(first)[0] == "ingest", first
    assert ran(again) == [] and "Data and pipelines are up to date." in again, again
    # The recordings were byte for byte what data.dvc records: nothing had to change it.
    assert (repo.path / "data.dvc").read_text() == data_dvc
    assert (repo.path / "outputs" / "model.onnx").stat().st_size > 0
