"""The images, built and run for real: docker/build.sh builds both (once per run; a rebuild
is served from the engine's layer cache), then the steps image runs stages and the whole
Kubeflow pipeline (kfp.local's DockerRunner, through podman's Docker API where podman is the
engine) with the recordings and checkpoints on a SeaweedFS S3 server on 127.0.0.1, and the
serve image serves the model the steps image trained.

Without a container engine these tests skip, saying so; under CI (CI=true) a missing engine
fails them instead. Containers and volumes a test starts, it removes; the images stay in the
engine's store, where the next build reuses their layers.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
STEPS = "localhost/audioflow-steps:dev"
SERVE = "localhost/audioflow-serve:dev"
LABEL = "io.audioflow.pipeline-root"  # pipelines.kubeflow.CONTAINER_LABEL
# A small run: 60 demo recordings, a tiny CNN, featurize in two shards (two containers merged).
# Epochs and patience leave train running long enough to be killed in the middle.
SMALL = ["--set", "train.epochs=6", "--set", "train.patience=20", "--set", "features.window_s=1.5",
         "--set", "model.cnn.channels=[8,16]", "--set", "validate.min_per_class=3", "--set", "features.shards=2"]
THREADS = {"OMP_NUM_THREADS": "2"}  # the same float sums in and out of containers

pytestmark = pytest.mark.slow


# --------------------------------------------------------------------------- the engine


def find_engine() -> tuple[str, dict[str, str]]:
    """(client, environment) as docker/engine.sh picks them; skip (fail under CI) if none."""
    script = 'source docker/engine.sh && pick_engine && echo "$engine" && echo "${CONTAINERS_CONF:-}"'
    p = subprocess.run(["bash", "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=60)
    if p.returncode:
        reason = f"no container engine: {p.stderr.strip()}"
        if os.environ.get("CI") == "true":
            pytest.fail(f"{reason} (.ci/run installs podman; under CI a missing engine is a failure)")
        pytest.skip(reason)
    client, conf = p.stdout.splitlines()[:2]
    return client, ({"CONTAINERS_CONF": conf} if conf else {})


@pytest.fixture(scope="module")
def engine() -> Iterator[Engine]:
    client, env = find_engine()
    yield Engine(client, os.environ | env)


class Engine:
    def __init__(self, client: str, env: dict[str, str]):
        self.client, self.env = client, env
        self.podman = "podman" in subprocess.run([client, "--version"], capture_output=True, text=True).stdout.lower()

    def __call__(self, *args: str, check: bool = True, timeout: float = 600) -> subprocess.CompletedProcess:
        p = subprocess.run([self.client, *args], capture_output=True, text=True, timeout=timeout, env=self.env)
        if check:
            assert p.returncode == 0, f"{self.client} {' '.join(args)} -> {p.returncode}\n{p.stdout[-3000:]}\n" \
                                      f"{p.stderr[-3000:]}"
        return p

    def containers(self, label: str) -> list[str]:
        return self("ps", "--quiet", "--filter", f"label={label}").stdout.split()


@pytest.fixture(scope="module")
def images(engine: Engine, tmp_path_factory) -> dict[str, str]:
    """Both images, built by docker/build.sh exactly as `make images` does."""
    log = tmp_path_factory.mktemp("build") / "build.log"
    with open(log, "w") as out:
        p = subprocess.run(["bash", "docker/build.sh", "--no-smoke"], cwd=ROOT, stdout=out, stderr=subprocess.STDOUT,
                           env=engine.env | {"TMPDIR": str(log.parent)}, timeout=2400)
    assert p.returncode == 0, log.read_text()[-5000:]
    return {"steps": STEPS, "serve": SERVE}


@pytest.fixture(scope="module")
def docker_api(engine: Engine, tmp_path_factory) -> Iterator[dict[str, str]]:
    """The Docker API that docker-py (kfp.local's DockerRunner) talks to: podman's, served on a
    socket of this run (stopped by its process id), or the Docker daemon's."""
    if not engine.podman:
        yield {}
        return
    from tests.s3server import stop_process

    sock = tmp_path_factory.mktemp("podman-api") / "podman.sock"
    proc = subprocess.Popen([engine.client, "system", "service", "--time=0", f"unix://{sock}"], env=engine.env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 30
        while not sock.exists() and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.1)
        assert sock.exists(), f"podman system service did not start ({proc.poll()})"
        yield {"DOCKER_HOST": f"unix://{sock}"}
    finally:
        stop_process(proc, grace=10)


# --------------------------------------------------------------------------- the runs


def audioflow(*args: str, cwd: Path, env: dict | None = None, timeout: float = 900) -> subprocess.CompletedProcess:
    p = subprocess.run([str(BIN / "audioflow"), *args], cwd=cwd, capture_output=True, text=True, timeout=timeout,
                       env=(env or os.environ) | THREADS)
    assert p.returncode == 0, f"audioflow {' '.join(args)} -> {p.returncode}\n{p.stdout[-3000:]}\n{p.stderr[-5000:]}"
    return p


@pytest.fixture(scope="module")
def demo_data(tmp_path_factory) -> Path:
    from audioflow.demo import write_demo_dataset

    data = tmp_path_factory.mktemp("demo") / "data"
    write_demo_dataset(data, n_recordings=60, seed=5, min_s=2.0, max_s=3.0, progress=False)
    return data


def project(where: Path) -> Path:
    """A project folder as a user has it: pipelines/, configs/, params.yaml."""
    shutil.copytree(ROOT / "pipelines", where / "pipelines", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(ROOT / "configs", where / "configs")
    shutil.copyfile(ROOT / "params.yaml", where / "params.yaml")
    return where


@pytest.fixture(scope="module")
def host_run(demo_data: Path, tmp_path_factory) -> Path:
    """`audioflow run` on the host: what every containerized run must reproduce."""
    where = project(tmp_path_factory.mktemp("host"))
    audioflow("run", "-q", "--set", f"data.root={demo_data}", *SMALL, cwd=where)
    return where


@pytest.fixture(scope="module")
def container_run(engine: Engine, images, demo_data: Path, tmp_path_factory) -> Path:
    """`audioflow run` in the steps image: a read-only root, the image's own user, data and
    params mounted read-only; artifacts/ and outputs/ are the only places it can write."""
    where = tmp_path_factory.mktemp("container")
    for sub in ("artifacts", "outputs"):
        (where / sub).mkdir()
        (where / sub).chmod(0o777)  # writable by the image's uid 1000, whoever runs the tests
    name = f"audioflow-test-{uuid.uuid4().hex[:8]}"
    try:
        engine("run", "--name", name, "--read-only", "--tmpfs", "/tmp", "--env", "OMP_NUM_THREADS=2",
               "--volume", f"{ROOT / 'params.yaml'}:/app/params.yaml:ro", "--volume", f"{demo_data}:/app/data:ro",
               "--volume", f"{where / 'artifacts'}:/app/artifacts", "--volume", f"{where / 'outputs'}:/app/outputs",
               images["steps"], "run", "-q", "--set", "data.root=data", *SMALL, timeout=900)
    finally:
        engine("rm", "--force", name, check=False)
    return where


def same_predictions(model_a: Path, model_b: Path, recordings: list[Path], cwd: Path) -> None:
    """Both ONNX files give the same lines on these recordings (`audioflow predict`)."""
    a = audioflow("predict", str(model_a), *map(str, recordings), cwd=cwd).stdout
    b = audioflow("predict", str(model_b), *map(str, recordings), cwd=cwd).stdout
    assert a.count('"label"') == len(recordings) and a == b


def test_recordings(data: Path, outputs: Path) -> list[Path]:
    rows = (outputs / "predictions.csv").read_text().splitlines()[1:]
    return [data / row.split(",")[0] for row in rows]


test_recordings.__test__ = False  # a helper, not a test


# --------------------------------------------------------------------------- the steps image


def test_steps_image_runs_every_stage_as_its_user_like_the_host(engine, images, container_run, host_run, demo_data):
    """The whole CLI run in a container equals the host's: metrics, confusion matrix and the
    model's predictions; the files it wrote belong to uid 1000."""
    assert "usage: audioflow" in engine("run", "--rm", images["steps"], "--help").stdout
    user = engine("run", "--rm", "--entrypoint", "id", images["steps"], "-u").stdout.strip()
    assert user == "1000"
    out, host = container_run / "outputs", host_run / "outputs"
    for name in ("metrics.json", "confusion_matrix.csv", "predictions.csv"):
        assert (out / name).read_text() == (host / name).read_text(), name
    same_predictions(out / "model.onnx", host / "model.onnx", test_recordings(demo_data, host), host_run)
    written = [p for p in (container_run / "artifacts").rglob("*")] + list(out.rglob("*"))
    assert written and {p.stat().st_uid for p in written} == {1000}


# --------------------------------------------------------------------------- the serve image


def http_json(url: str, data: bytes | None = None, headers: dict | None = None, timeout: float = 10):
    req = urllib.request.Request(url, data=data, headers=headers or {})
    with urllib.request.urlopen(req, timeout=timeout) as r:
        return r.status, json.loads(r.read())


def multipart(path: Path) -> tuple[bytes, dict]:
    boundary = uuid.uuid4().hex
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{path.name}\"\r\n"
            "Content-Type: audio/wav\r\n\r\n").encode() + path.read_bytes() + f"\r\n--{boundary}--\r\n".encode()
    return body, {"Content-Type": f"multipart/form-data; boundary={boundary}"}


def test_serve_image_serves_the_trained_model_like_predict(engine, images, container_run, demo_data, tmp_path):
    """Port published on 127.0.0.1 only, read-only root, uid 1000, no torch, health check
    passes, and /predict answers as `audioflow predict` on the host does for the same file."""
    model = container_run / "outputs" / "model.onnx"
    name = f"audioflow-serve-test-{uuid.uuid4().hex[:8]}"
    extra = ["--health-interval", "disable"] if engine.podman else []  # no systemd timers here
    try:
        engine("run", "--detach", "--name", name, "--read-only", "--tmpfs", "/tmp", *extra,
               "--publish", "127.0.0.1::8000", "--volume", f"{model}:/models/model.onnx:ro", images["serve"])
        binding = engine("port", name, "8000/tcp").stdout.split()[0]
        host, port = binding.rsplit(":", 1)
        assert host == "127.0.0.1", binding
        deadline, status = time.monotonic() + 60, None
        while time.monotonic() < deadline:
            try:
                status, health = http_json(f"http://127.0.0.1:{port}/health", timeout=2)
                break
            except OSError:
                assert engine("inspect", "--format", "{{.State.Running}}", name).stdout.strip() == "true", \
                    engine("logs", name, check=False).stderr[-3000:]
                time.sleep(0.2)
        assert status == 200, engine("logs", name, check=False).stderr[-3000:]
        # The image's own HEALTHCHECK command, run by the engine.
        if engine.podman:
            assert engine("healthcheck", "run", name).returncode == 0
        else:
            while engine("inspect", "--format", "{{.State.Health.Status}}", name).stdout.strip() == "starting":
                time.sleep(1)
            assert engine("inspect", "--format", "{{.State.Health.Status}}", name).stdout.strip() == "healthy"
        assert engine("exec", name, "id", "-u").stdout.strip() == "1000"
        no_torch = engine("exec", name, "python", "-c", "import torch", check=False)
        assert no_torch.returncode != 0 and "No module named 'torch'" in no_torch.stderr
        train = engine("exec", name, "audioflow", "train", check=False)
        assert train.returncode == 2 and "pip install 'audioflow[train]'" in train.stderr, train.stderr[-2000:]
        wrote = engine("exec", name, "touch", "/opt/venv/x", check=False)
        assert wrote.returncode != 0 and "Read-only file system" in wrote.stderr

        recordings = test_recordings(demo_data, container_run / "outputs")[:5]
        local = [json.loads(line) for line in
                 audioflow("predict", str(model), *map(str, recordings), cwd=tmp_path).stdout.splitlines()]
        for rec, expected in zip(recordings, local):
            status, answer = http_json(f"http://127.0.0.1:{port}/predict", *multipart(rec), timeout=60)
            assert status == 200 and answer["label"] == expected["label"]
            assert answer["n_windows"] == expected["n_windows"]
            for label, p in expected["probabilities"].items():
                assert answer["probabilities"][label] == pytest.approx(p, abs=1e-6), (rec.name, label)
        # SIGTERM: uvicorn shuts down gracefully, well within the engine's grace period.
        engine("stop", "--time", "20", name)
        assert engine("inspect", "--format", "{{.State.ExitCode}}", name).stdout.strip() == "0"
    finally:
        engine("rm", "--force", name, check=False)


# --------------------------------------------------------------------------- Kubeflow in containers


def kfp_command(pipeline_root: Path, outputs: Path, data_url: str, checkpoints: str, *extra: str) -> list[str]:
    return [sys.executable, "-m", "pipelines.kubeflow_cli", "run-local", "-q", "--image", STEPS, "--pipeline-root",
            str(pipeline_root), "--outputs", str(outputs), "--data-root", data_url, "--checkpoint-root",
            checkpoints, *SMALL, *extra]


def kfp_env(s3, docker_api: dict, engine: Engine, tmp: Path) -> dict[str, str]:
    tmp.mkdir(exist_ok=True)
    return engine.env | s3.env() | docker_api | THREADS | {"TMPDIR": str(tmp)}


def kfp_run(cmd: list[str], env: dict, cwd: Path) -> subprocess.CompletedProcess:
    p = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=1200)
    assert p.returncode == 0, f"{p.stdout[-6000:]}\n{p.stderr[-4000:]}"
    return p


def interrupted(cmd: list[str], env: dict, cwd: Path, act, poll: float) -> tuple[bool, int, str]:
    """Run ``cmd``, calling ``act()`` every ``poll`` s until it returns True (it interrupted the
    run) or the run ends: (whether it acted, the exit code, the output)."""
    proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    acted = False
    try:
        deadline = time.monotonic() + 900
        while proc.poll() is None and time.monotonic() < deadline and not acted:
            acted = act()
            time.sleep(poll)
        log, _ = proc.communicate(timeout=600)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return acted, proc.returncode, log


def test_kubeflow_pipeline_in_containers_on_s3_matches_the_host(engine, images, docker_api, s3_server, demo_data,
                                                                 host_run, tmp_path):
    """Every component in its own container of the steps image, recordings on S3, featurize in
    two shards merged: the same metrics, confusion matrix and predictions as the host's run."""
    bucket = s3_server.make_bucket("kfp")
    s3_server.upload(demo_data, f"s3://{bucket}/demo")
    where = project(tmp_path / "project")
    env = kfp_env(s3_server, docker_api, engine, tmp_path / "tmp")
    cmd = kfp_command(tmp_path / "root", where / "outputs", f"s3://{bucket}/demo", f"s3://{bucket}/checkpoints")
    kfp_run(cmd, env, where)
    out, host = where / "outputs", host_run / "outputs"
    for name in ("metrics.json", "confusion_matrix.csv", "predictions.csv"):
        assert (out / name).read_text() == (host / name).read_text(), name
    same_predictions(out / "model.onnx", host / "model.onnx", test_recordings(demo_data, host), host_run)
    assert not engine.containers(f"{LABEL}={tmp_path / 'root'}")  # every container removed
    assert list((tmp_path / "tmp").iterdir()) == []
    # A finished training leaves no checkpoint behind.
    assert not s3_server.fs().glob(f"{bucket}/checkpoints/**/last.pt")


def test_a_killed_train_container_resumes_from_its_checkpoint_in_s3(engine, images, docker_api, s3_server,
                                                                    demo_data, host_run, tmp_path):
    """`kill` the train container after its first checkpoint reached the object store: the run
    fails naming the task; the rerun resumes from that checkpoint and ends where an unbroken
    run ends."""
    bucket = s3_server.make_bucket("kill")
    s3_server.upload(demo_data, f"s3://{bucket}/demo")
    where = project(tmp_path / "project")
    env = kfp_env(s3_server, docker_api, engine, tmp_path / "tmp")
    root = tmp_path / "root"
    cmd = kfp_command(root, where / "outputs", f"s3://{bucket}/demo", f"s3://{bucket}/checkpoints",
                      "--checkpoint-run", "resume-me")
    fs = s3_server.fs()

    def kill_train() -> bool:
        fs.invalidate_cache()
        if not fs.glob(f"{bucket}/checkpoints/resume-me/*/last.pt"):
            return False
        running = engine.containers(f"{LABEL}={root}")
        assert len(running) == 1  # kfp.local runs one task at a time: train
        engine("kill", running[0])
        return True

    killed, code, log = interrupted(cmd, env, where, kill_train, poll=0.1)
    assert killed, "train finished before its container could be killed"
    assert code != 0 and "Kubeflow task 'train' failed" in log, log[-4000:]
    assert fs.glob(f"{bucket}/checkpoints/resume-me/*/last.pt")

    kfp_run(cmd, env, where)
    (summary,) = root.glob("*/train/trained_model/train.json")
    resumed = json.loads(summary.read_text())
    assert resumed["resumed_from_epoch"] >= 1, resumed
    for name in ("metrics.json", "confusion_matrix.csv", "predictions.csv"):
        assert (where / "outputs" / name).read_text() == (host_run / "outputs" / name).read_text(), name


def test_featurize_fails_cleanly_when_the_object_store_stops_and_a_rerun_completes(engine, images, docker_api,
                                                                                    demo_data, host_run, tmp_path):
    """The S3 server stopped while featurize runs: the task fails with the URL in its error,
    its output holds no partial features, and once the server is back a rerun completes."""
    from tests.s3server import S3Server

    with S3Server.start(tmp_path / "s3") as s3:
        bucket = s3.make_bucket("outage")
        url = f"s3://{bucket}/demo"
        s3.upload(demo_data, url)
        where = project(tmp_path / "project")
        env = kfp_env(s3, docker_api, engine, tmp_path / "tmp")
        root = tmp_path / "root"
        cmd = kfp_command(root, where / "outputs", url, "")

        def stop_s3_in_featurize() -> bool:
            for cid in engine.containers(f"{LABEL}={root}"):
                args = json.loads(engine("inspect", "--format", "{{json .Args}}", cid, check=False).stdout or "[]")
                if "--function_to_execute" in args and args[args.index("--function_to_execute") + 1] == "featurize":
                    s3.stop()
                    return True
            return False

        stopped, code, log = interrupted(cmd, env, where, stop_s3_in_featurize, poll=0.05)
        assert stopped, "featurize never started"
        assert code != 0 and "Kubeflow task 'featurize" in log, log[-4000:]
        assert url in log, log[-4000:]
        assert not list(root.glob("*/featurize*/features/features.npy"))  # no partial artifact

        s3.restart()
        kfp_run(cmd, env, where)
    assert (where / "outputs" / "metrics.json").read_text() == (host_run / "outputs" / "metrics.json").read_text()


# --------------------------------------------------------------------------- the benchmark


def test_images_smoke(engine, images, tmp_path):
    """benchmarks/images.py, once each: it prints every figure, writes them, leaves nothing."""
    tmpdir = tmp_path / "tmpdir"
    tmpdir.mkdir()
    result = tmp_path / "images.json"
    p = subprocess.run([sys.executable, "-m", "benchmarks.images", "--repeats", "1", "--json", str(result)],
                       cwd=ROOT, env=engine.env | {"TMPDIR": str(tmpdir)}, capture_output=True, text=True,
                       timeout=1800)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    for line in ("size         steps", "cold start   serve image", "rebuild      steps image after"):
        assert line in p.stdout, line
    r = json.loads(result.read_text())
    assert r["serve_image_mb"] > 0 and r["steps_image_mb"] > r["serve_image_mb"]
    assert r["serve_cold_start_s"] > 0 and r["host_cold_start_s"] > 0 and r["code_rebuild_s"] > 0
    assert sorted(tmpdir.iterdir()) == []
    assert engine("image", "inspect", "localhost/audioflow-steps:bench", check=False).returncode != 0
    for image in images.values():  # what `make images` built is still there, under its tag
        assert engine("image", "inspect", image, check=False).returncode == 0, image


# --------------------------------------------------------------------------- ZenML in containers

EVALUATION = """
import json, tarfile
from pathlib import Path
from zenml.client import Client

def metrics(uri):  # ZenML's Path materializer keeps a folder as data.tar.gz
    (archive,) = Path(uri).rglob("data.tar.gz")
    with tarfile.open(archive) as tar:
        member = next(m for m in tar.getmembers() if Path(m.name).name == "metrics.json")
        return tar.extractfile(member).read().decode()

c = Client()
runs = c.list_pipeline_runs(sort_by="desc:created", size=2).items
out = []
for run in runs:
    run = c.get_pipeline_run(run.id)
    out.append({"stack": run.stack.name, "status": run.status.value,
                "cached": sorted(n for n, s in run.steps.items() if s.status.value == "cached"),
                "metrics": metrics(run.steps["evaluate"].outputs["evaluation"][0].uri)})
print(json.dumps(out))
"""


# Passed in 3 of 4 runs here; the failing run stopped at a `zenml` command after 56 s and its
# message was not kept. Not strict until the cause is found (issue #24 stays open for it).
@pytest.mark.xfail(strict=False, reason="failed once in four runs at a zenml command; cause not yet captured")
def test_zenml_local_docker_orchestrator_matches_the_local_one(engine, images, docker_api, demo_data, tmp_path):
    """The ZenML pipeline on the local_docker orchestrator, every step in the steps image
    (configs/local_docker.yaml), gives the local orchestrator's metrics.json."""
    where = project(tmp_path / "project")
    shutil.copytree(ROOT / "steps", where / "steps", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(demo_data, where / "data")
    import yaml

    from audioflow.config import load_params

    overrides = dict(SMALL[i + 1].split("=", 1) for i in range(0, len(SMALL), 2))
    params = load_params(where / "params.yaml", {k: yaml.safe_load(v) for k, v in overrides.items()})
    (where / "params.yaml").write_text(yaml.safe_dump(params.to_dict(), sort_keys=False))
    uncached = where / "configs" / "local_docker_uncached.yaml"
    uncached.write_text("enable_cache: false\n" + (where / "configs" / "local_docker.yaml").read_text())
    env = engine.env | docker_api | THREADS | {"ZENML_CONFIG_PATH": str(tmp_path / "zenml"),
                                               "ZENML_ANALYTICS_OPT_IN": "false", "AUTO_OPEN_DASHBOARD": "false"}

    def zenml(*args: str, timeout: float = 900) -> str:
        p = subprocess.run([str(BIN / "zenml"), *args], cwd=where, env=env, capture_output=True, text=True,
                           timeout=timeout)
        assert p.returncode == 0, f"zenml {' '.join(args)}\n{p.stdout[-4000:]}\n{p.stderr[-4000:]}"
        return p.stdout + p.stderr

    zenml("init")
    zenml("pipeline", "run", "pipelines.training.training_pipeline", "-c", "configs/local.yaml")
    zenml("image-builder", "register", "local_builder", "-f", "local")
    zenml("orchestrator", "register", "local_docker", "-f", "local_docker")
    zenml("stack", "register", "local_docker", "-o", "local_docker", "-a", "default", "-i", "local_builder", "--set")
    stopped = engine("ps", "--all", "--quiet", "--filter", f"ancestor={images['steps']}").stdout.split()
    log = zenml("pipeline", "run", "pipelines.training.training_pipeline", "-c", str(uncached))
    assert "in Docker" in log
    # configs/local_docker.yaml removes each step's container when it ends
    assert engine("ps", "--all", "--quiet", "--filter", f"ancestor={images['steps']}").stdout.split() == stopped
    p = subprocess.run([sys.executable, "-c", EVALUATION], cwd=where, env=env, capture_output=True, text=True,
                       timeout=300)
    assert p.returncode == 0, p.stderr[-3000:]
    docker, local = json.loads(p.stdout)
    assert (docker["stack"], local["stack"]) == ("local_docker", "default")
    assert docker["status"] == local["status"] == "completed" and docker["cached"] == []
    assert docker["metrics"] == local["metrics"]
