"""Data on Google Cloud Storage (gs://) and Azure Blob Storage (az://), as on S3 and on disk.

Real servers on 127.0.0.1 (tests/blobservers.py): gcp-storage-emulator and Azurite, reached
only through each cloud's standard variables (``STORAGE_EMULATOR_HOST``,
``AZURE_STORAGE_CONNECTION_STRING``). The same recordings give the same fingerprint, facts and
features, byte for byte, wherever they are read from.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from audioflow import audio
from audioflow.config import DataConfig, load_params
from audioflow.manifest import ManifestError, ingest
from audioflow.stages import Layout, run_stage
from tests.blobservers import AzuriteServer, GcsServer
from tests.conftest import tone, write_wav

ROOT = Path(__file__).resolve().parents[1]
SERVERS = {"gs": GcsServer, "az": AzuriteServer}
HOW = {"gs": "dev dependency gcp-storage-emulator: uv sync --frozen",
       "az": "Azurite: make test runs `npm ci --prefix tools/azurite` (needs Node.js and npm)"}


@pytest.fixture(scope="module", params=sorted(SERVERS))
def store(request, tmp_path_factory):
    server = SERVERS[request.param]
    if not server.available():
        pytest.skip(f"{server.name} is not installed ({HOW[request.param]})")
    with server.start(tmp_path_factory.mktemp(f"{request.param}-server")) as s:
        yield s


@pytest.fixture
def store_env(store, monkeypatch):
    """The store's standard variables in this process, as a user would set them."""
    for key, value in store.env().items():
        monkeypatch.setenv(key, value)
    return store


def upload(store, local: Path) -> str:
    url = f"{store.make_bucket('data')}/root"
    store.upload(local, url)
    return url


def test_audio_reads_objects_as_it_reads_files(store_env, tmp_path: Path):
    local = write_wav(tmp_path / "a.wav", np.stack([tone(440, 0.3, 8000), tone(220, 0.3, 8000)], 1), 8000)
    (tmp_path / "empty.wav").write_bytes(b"")
    url = upload(store_env, tmp_path)
    data, sr = audio.read(f"{url}/a.wav")
    want, want_sr = audio.read(local)
    assert sr == want_sr and np.array_equal(data, want)
    assert audio.info(f"{url}/a.wav") == audio.info(local)
    for name, reason in (("missing.wav", "file not found"), ("empty.wav", "empty file (0 bytes)")):
        with pytest.raises(audio.AudioError) as e:
            audio.read(f"{url}/{name}")
        assert str(e.value).startswith(f"{url}/{name}: {reason}"), str(e.value)
    with pytest.raises(ManifestError, match=f"data root {url}/nope does not exist"):
        ingest(DataConfig(root=f"{url}/nope"), progress=False)


def test_class_folders_listed_like_local_ones(store_env, tmp_path: Path):
    for label in ("dog", "cat"):
        for k in range(2):
            write_wav(tmp_path / label / "sub" / f"{k}.wav", tone(200 + k, 0.1, 8000), 8000)
    write_wav(tmp_path / ".hidden" / "x.wav", tone(200, 0.1, 8000), 8000)
    (tmp_path / "dog" / "notes.txt").write_text("not audio")
    url = upload(store_env, tmp_path)
    there = ingest(DataConfig(root=url, manifest=None), progress=False)
    here = ingest(DataConfig(root=str(tmp_path), manifest=None), progress=False)
    assert there.files["path"].tolist() == ["cat/sub/0.wav", "cat/sub/1.wav", "dog/sub/0.wav", "dog/sub/1.wav"]
    assert there.files.equals(here.files) and there.fingerprint == here.fingerprint


def test_ingest_validate_featurize_same_as_local(store_env, tone_dataset: Path, tmp_path: Path):
    url = upload(store_env, tone_dataset)
    runs = {}
    for name, root in (("local", str(tone_dataset)), ("remote", url)):
        params = load_params(ROOT / "params.yaml", {"data.root": root, "data.group_column": "speaker",
                                                    "validate.min_per_class": 3})
        layout = Layout(tmp_path / name / "artifacts", tmp_path / name / "outputs")
        for stage in ("ingest", "validate", "featurize"):
            run_stage(stage, params, layout, progress=False)
        runs[name] = layout
    local, remote = runs["local"], runs["remote"]
    ds = {k: json.loads((lay.path("dataset") / "dataset.json").read_text()) for k, lay in runs.items()}
    assert ds["remote"]["root"] == url  # recorded as configured
    assert ds["remote"] | {"root": str(tone_dataset)} == ds["local"]
    for artifact, name in (("dataset", "files.csv"), ("validation", "facts.csv"), ("features", "features.npy"),
                           ("features", "index.csv"), ("features", "features.json")):
        assert (remote.path(artifact) / name).read_bytes() == (local.path(artifact) / name).read_bytes(), name
    assert json.loads((remote.path("validation") / "report.json").read_text())["summary"]["root"] == url
