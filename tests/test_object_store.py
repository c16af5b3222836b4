"""Data, DVC remotes and ZenML artifacts in object storage: a real S3 server (SeaweedFS) on 127.0.0.1.

The library reads credentials and the endpoint from the standard AWS_* variables only; the
same recordings give the same fingerprint, features and metrics wherever they are read from.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from audioflow import audio
from audioflow.config import DataConfig, ValidateConfig
from audioflow.manifest import Dataset, ManifestError, ingest
from tests.conftest import tone, write_wav

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
SMALL = ["--set", "train.epochs=2", "--set", "features.window_s=1.5", "--set", "model.cnn.channels=[8,16]",
         "--set", "validate.min_per_class=3"]


@pytest.fixture
def s3_env(s3_server, monkeypatch):
    """The AWS_* variables of the test server in this process, as a user would set them."""
    for key, value in s3_server.env().items():
        monkeypatch.setenv(key, value)
    return s3_server


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> Path:
    from audioflow.demo import write_demo_dataset

    root = tmp_path_factory.mktemp("demo") / "data"
    write_demo_dataset(root, n_recordings=60, seed=5, min_s=2.0, max_s=3.0, progress=False)
    return root


@pytest.fixture(scope="module")
def demo_url(s3_server, demo) -> str:
    url = f"s3://{s3_server.make_bucket('data')}/demo"
    s3_server.upload(demo, url)
    return url


def upload_dir(s3_server, local: Path) -> str:
    url = f"s3://{s3_server.make_bucket('data')}/root"
    s3_server.upload(local, url)
    return url


# ---------------------------------------------------------------- the library on S3


def test_audio_reads_objects_as_it_reads_files(s3_env, tmp_path: Path):
    local = write_wav(tmp_path / "a.wav", np.stack([tone(440, 0.3, 8000), tone(220, 0.3, 8000)], 1), 8000)
    (tmp_path / "empty.wav").write_bytes(b"")
    (tmp_path / "garbage.wav").write_bytes(b"RIFF\x00\x00not really a wav" * 3)
    url = upload_dir(s3_env, tmp_path)
    data, sr = audio.read(f"{url}/a.wav")
    want, want_sr = audio.read(local)
    assert sr == want_sr and np.array_equal(data, want)
    assert audio.info(f"{url}/a.wav") == audio.info(local)
    np.testing.assert_array_equal(audio.load(f"{url}/a.wav", 16000), audio.load(local, 16000))
    for name, reason in (("missing.wav", "file not found"), ("empty.wav", "empty file (0 bytes)"),
                         ("garbage.wav", f"unreadable or unsupported format (Error opening '{url}/garbage.wav'")):
        for fn in (audio.read, audio.info):
            with pytest.raises(audio.AudioError) as e:
                fn(f"{url}/{name}")
            assert str(e.value).startswith(f"{url}/{name}: {reason}"), str(e.value)


def test_ingest_local_and_s3_agree(s3_env, tone_dataset: Path, tmp_path: Path):
    url = upload_dir(s3_env, tone_dataset)
    here = ingest(DataConfig(root=str(tone_dataset), group_column="speaker"), progress=False)
    there = ingest(DataConfig(root=url, group_column="speaker"), progress=False)
    assert there.fingerprint == here.fingerprint
    assert there.files.equals(here.files)
    there.save(tmp_path / "ingest")
    assert json.loads((tmp_path / "ingest/dataset.json").read_text())["root"] == url  # as configured
    again = Dataset.load(tmp_path / "ingest")
    assert str(again.root) == url and again.location("low/s0_0.wav") == f"{url}/low/s0_0.wav"
    # A trailing slash names the same data.
    assert ingest(DataConfig(root=url + "/", group_column="speaker"), progress=False).fingerprint == here.fingerprint


def test_class_folders_on_s3(s3_env, tmp_path: Path):
    for label in ("dog", "cat"):
        for k in range(2):
            write_wav(tmp_path / label / "sub" / f"{k}.wav", tone(200 + k, 0.1, 8000), 8000)
    write_wav(tmp_path / ".hidden" / "x.wav", tone(200, 0.1, 8000), 8000)
    (tmp_path / "notes.txt").write_text("ignored")
    (tmp_path / "dog" / "notes.txt").write_text("not audio")
    url = upload_dir(s3_env, tmp_path)
    there = ingest(DataConfig(root=url, manifest=None), progress=False)
    here = ingest(DataConfig(root=str(tmp_path), manifest=None), progress=False)
    assert there.files["path"].tolist() == ["cat/sub/0.wav", "cat/sub/1.wav", "dog/sub/0.wav", "dog/sub/1.wav"]
    assert there.files.equals(here.files) and there.fingerprint == here.fingerprint


def test_missing_object_named_by_its_url(s3_env, tone_dataset: Path):
    (tone_dataset / "low/s1_0.wav").unlink()
    url = upload_dir(s3_env, tone_dataset)
    ds = ingest(DataConfig(root=url), progress=False)  # goes on; validation reports it with the rest
    assert ds.problems == [{"path": "low/s1_0.wav", "check": "missing", "reason": "file not found"}]
    assert ds.location("low/s1_0.wav") == f"{url}/low/s1_0.wav"
    with pytest.raises(ManifestError, match=f"data root {url}/nope does not exist"):
        ingest(DataConfig(root=f"{url}/nope"), progress=False)


def test_unreadable_object_reported_like_a_local_file(s3_env, tone_dataset: Path):
    from audioflow.validation import collect_facts, validate

    (tone_dataset / "mid/s2_1.wav").write_bytes(b"RIFF\x00\x00not really a wav" * 3)
    url = upload_dir(s3_env, tone_dataset)
    here = ingest(DataConfig(root=str(tone_dataset)), progress=False)
    there = ingest(DataConfig(root=url), progress=False)
    # The per-file facts (and so the report) are the same wherever the data lives.
    assert collect_facts(there, progress=False).equals(collect_facts(here, progress=False))
    report = validate(there, ValidateConfig(min_per_class=3), progress=False)
    assert not report.ok and report.summary["root"] == url
    (problem,) = [p.reason for p in report.problems if p.path == "mid/s2_1.wav"]
    assert problem.startswith("unreadable or unsupported format (Error opening 'mid/s2_1.wav'")
    with pytest.raises(audio.AudioError, match=f"^{url}/mid/s2_1.wav: unreadable"):
        audio.load(there.location("mid/s2_1.wav"), 8000)


def test_manifest_path_leaving_the_root_refused(s3_env, tmp_path: Path):
    write_wav(tmp_path / "root/ok.wav", tone(300, 0.1, 8000), 8000)
    write_wav(tmp_path / "outside.wav", tone(300, 0.1, 8000), 8000)
    (tmp_path / "root/manifest.csv").write_text("path,label\nok.wav,a\n../outside.wav,a\n")
    url = upload_dir(s3_env, tmp_path)
    ds = ingest(DataConfig(root=f"{url}/root"), progress=False)
    (problem,) = ds.problems
    assert problem["path"] == "manifest.csv:3"
    assert problem["reason"].startswith("../outside.wav: path leaves the data root")
    assert ds.files["path"].tolist() == ["ok.wav"]


# ---------------------------------------------------------------- the pipeline on S3


def files_mentioning(root: Path, needles: list[str]) -> list[str]:
    """Files under ``root`` whose bytes contain one of ``needles``."""
    return sorted(f"{p.relative_to(root)}: {n}" for p in root.rglob("*") if p.is_file()
                  for n in needles if n.encode() in p.read_bytes())


@pytest.mark.slow
def test_cli_pipeline_same_results_from_local_and_s3(s3_server, demo, demo_url, tmp_path: Path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    runs = {}
    for name, root in (("local", "data"), ("s3", demo_url)):
        project = tmp_path / name
        project.mkdir()
        shutil.copyfile(ROOT / "params.yaml", project / "params.yaml")
        run_env = env
        if name == "local":
            shutil.copytree(demo, project / "data")
        else:  # the S3-specific endpoint variable this time; AWS_ENDPOINT_URL works as well
            run_env = env | s3_server.env()
            run_env["AWS_ENDPOINT_URL_S3"] = run_env.pop("AWS_ENDPOINT_URL")
        p = subprocess.run([str(BIN / "audioflow"), "run", "-q", "--set", f"data.root={root}", *SMALL],
                           cwd=project, env=run_env, capture_output=True, text=True, timeout=600)
        assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-5000:]
        runs[name] = project
    local, s3 = runs["local"], runs["s3"]

    def read(project: Path, rel: str) -> bytes:
        return (project / rel).read_bytes()

    ds = {k: json.loads(read(p, "artifacts/ingest/dataset.json")) for k, p in runs.items()}
    assert ds["s3"]["root"] == demo_url and ds["local"]["root"] == "data"  # as configured
    assert ds["s3"] | {"root": "data"} == ds["local"]
    for rel in ("artifacts/ingest/files.csv", "artifacts/validate/facts.csv", "artifacts/features/features.npy",
                "artifacts/features/index.csv", "artifacts/features/features.json", "artifacts/split/split.csv",
                "artifacts/train/model/model.safetensors", "outputs/metrics.json", "outputs/predictions.csv",
                "outputs/model.onnx"):
        assert read(s3, rel) == read(local, rel), rel
    local_export, s3_export = (json.loads(read(p, "artifacts/export/export.json")) for p in (local, s3))
    assert s3_export.pop("seconds") > 0 and local_export.pop("seconds") > 0  # the one thing that differs
    assert s3_export == local_export
    metrics = json.loads(read(s3, "outputs/metrics.json"))
    assert metrics["dataset_fingerprint"] == ds["local"]["fingerprint"]
    # Nothing refers to the machine's folders: not the project, not the temporary folder.
    for project in runs.values():
        for sub in ("artifacts", "outputs"):
            assert files_mentioning(project / sub, [str(tmp_path), str(project.resolve()), "/tmp/"]) == []


# ---------------------------------------------------------------- DVC with an S3 remote


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")
def test_dvc_s3_remote_push_then_pull_into_a_clone(s3_server, demo, tmp_path: Path):
    from tests.test_dvc import md5_tree, new_repo

    repo = new_repo(tmp_path / "project", tmp_path / "home")
    repo.env = {k: v for k, v in repo.env.items() if not k.startswith("AWS_")}
    shutil.copytree(demo, repo.path / "data")
    repo.dvc("add", "data")
    url = f"s3://{s3_server.make_bucket('dvc')}/audioflow"
    repo.dvc("remote", "add", "-d", "storage", url)
    repo.dvc("remote", "modify", "storage", "endpointurl", s3_server.endpoint)
    # Credentials stay out of git: .dvc/config.local here, the environment in the clone.
    repo.dvc("remote", "modify", "--local", "storage", "access_key_id", s3_server.access_key)
    repo.dvc("remote", "modify", "--local", "storage", "secret_access_key", s3_server.secret_key)
    repo.commit("data on an S3 remote")
    assert s3_server.secret_key not in repo.git("show", "HEAD:.dvc/config")
    repo.dvc("push")
    assert "in sync" in repo.dvc("status", "-c")

    clone_path = tmp_path / "clone"
    repo.git("clone", "-q", str(repo.path), str(clone_path))
    clone = type(repo)(clone_path, repo.env | s3_server.env())
    assert not (clone_path / "data").exists()
    clone.dvc("pull")
    assert md5_tree(clone_path / "data") == md5_tree(repo.path / "data") == md5_tree(demo)
    assert "Data and pipelines are up to date" in clone.dvc("status")
    assert "in sync" in clone.dvc("status", "-c")


# ---------------------------------------------------------------- ZenML on an S3 artifact store

RUN_INFO = """
import json
from zenml.client import Client
c = Client()
run = c.get_pipeline_run(c.list_pipeline_runs(sort_by="desc:created", size=1).items[0].id)
print(json.dumps({
    "status": run.status.value,
    "steps": {n: s.status.value for n, s in run.steps.items()},
    "train": dict(run.steps["train"].run_metadata) if "train" in run.steps else {},
    "uris": sorted(a.uri for s in run.steps.values() for arts in s.outputs.values() for a in arts),
    "store": str(c.active_stack.artifact_store.path),
    "outputs_dir": run.steps["publish"].outputs["outputs_dir"][0].load() if "publish" in run.steps else None,
}, default=str))
"""


@pytest.fixture(scope="module")
def zenml_s3(s3_server, demo, tmp_path_factory):
    """A ZenML project whose active stack keeps its artifacts on the S3 server; one run done."""
    from tests.test_zenml import Project

    root = tmp_path_factory.mktemp("zenml-s3")
    for d in ("steps", "pipelines", "configs"):
        shutil.copytree(ROOT / d, root / d, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copyfile(ROOT / "params.yaml", root / "params.yaml")
    shutil.copytree(demo, root / "data")
    proj = Project(root)
    # No AWS_* variables: the artifact store's own configuration must be enough.
    proj.env = {k: v for k, v in proj.env.items() if not k.startswith("AWS_")}
    for dotted, value in [("train.epochs", 2), ("features.window_s", 1.5),
                          ("model.cnn.channels", [8, 16]), ("validate.min_per_class", 3)]:
        proj.set_param(dotted, value)
    proj.bucket = s3_server.make_bucket("zenml")
    zenml = str(BIN / "zenml")
    proj.sh(zenml, "init")
    proj.sh(zenml, "secret", "create", "s3_store", f"--aws_access_key_id={s3_server.access_key}",
            f"--aws_secret_access_key={s3_server.secret_key}")
    # After "--": `--secret` before it would attach a secret as environment variables instead.
    proj.sh(zenml, "artifact-store", "register", "s3-store", "--flavor=s3", "--", f"--path=s3://{proj.bucket}/zenml",
            "--key={{s3_store.aws_access_key_id}}", "--secret={{s3_store.aws_secret_access_key}}",
            "--client_kwargs=" + json.dumps({"endpoint_url": s3_server.endpoint, "region_name": "us-east-1"}))
    proj.sh(zenml, "stack", "register", "s3-stack", "-o", "default", "-a", "s3-store", "--set")
    proj.first = run_zenml(proj)
    return proj


def checkpoints_in(fs, store: str) -> list[str]:
    # SeaweedFS lists an emptied "folder" as an entry of its own: look for the files.
    return [p for p in fs.find(f"{store}/audioflow-checkpoints") if p.rsplit("/", 1)[-1].startswith("last.pt")]


def run_zenml(proj, check: bool = True) -> dict:
    return proj.run(check=check, report=RUN_INFO)


@pytest.mark.slow
def test_zenml_pipeline_on_an_s3_artifact_store(zenml_s3, s3_server):
    from tests.test_zenml import STEPS

    first = zenml_s3.first
    assert first["status"] == "completed" and set(first["steps"].values()) == {"completed"}
    assert set(first["steps"]) == set(STEPS)
    assert first["store"] == f"s3://{zenml_s3.bucket}/zenml"
    assert first["uris"] and all(u.startswith(f"s3://{zenml_s3.bucket}/zenml/") for u in first["uris"])
    assert s3_server.fs().find(f"{zenml_s3.bucket}/zenml")  # the artifacts are in the bucket
    metrics = json.loads((zenml_s3.root / "outputs/metrics.json").read_text())
    assert 0 <= metrics["macro_f1"] <= 1
    assert first["train"]["resumed_from_epoch"] == 0
    assert first["outputs_dir"] == "outputs"  # as given, not this machine's working directory
    assert first["left_in_tmp"] == []
    # A finished training leaves no checkpoint in the store.
    assert checkpoints_in(s3_server.fs(), f"{zenml_s3.bucket}/zenml") == []

    again = run_zenml(zenml_s3)
    assert {n for n, s in again["steps"].items() if s == "completed"} == {"publish"}
    assert {n for n, s in again["steps"].items() if s == "cached"} == set(STEPS) - {"publish"}
    assert again["left_in_tmp"] == []


@pytest.mark.slow
def test_killed_training_resumes_from_the_artifact_store(zenml_s3, s3_server):
    """A step killed mid-training (a lost pod) resumes from the checkpoint in the artifact store."""
    zenml_s3.set_param("train.epochs", 12)  # about 1 s each here: time to see the first one
    zenml_s3.set_param("train.patience", 12)
    fs = s3_server.fs()
    pattern = f"{zenml_s3.bucket}/zenml/audioflow-checkpoints/*/last.pt"
    proc = subprocess.Popen([str(BIN / "zenml"), "pipeline", "run", "pipelines.training.training_pipeline",
                             "-c", "configs/local.yaml"], cwd=zenml_s3.root, env=zenml_s3.env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 300
        while not fs.glob(pattern):
            assert proc.poll() is None, "the run ended before its first checkpoint was seen"
            assert time.monotonic() < deadline, "no checkpoint in the artifact store after 300 s"
            time.sleep(0.1)
    finally:
        proc.kill()  # SIGKILL, no clean-up: what a node failure does to a pod
        proc.wait(timeout=60)
    # One checkpoint; a kill during an upload may also leave its `last.pt.partial`, never in its place.
    assert [p.rsplit("/", 1)[-1] for p in checkpoints_in(fs, f"{zenml_s3.bucket}/zenml")
            if p.endswith("/last.pt")] == ["last.pt"]

    resumed = run_zenml(zenml_s3)
    assert resumed["status"] == "completed"
    assert resumed["train"]["resumed_from_epoch"] >= 1
    assert resumed["train"]["epochs_run"] == 12
    assert checkpoints_in(fs, f"{zenml_s3.bucket}/zenml") == []  # finished: the checkpoint is gone
