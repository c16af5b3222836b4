"""`audioflow serve`: a real uvicorn server on 127.0.0.1, spoken to by a real HTTP client.

The server is the CLI command in a subprocess, stopped by its process id (SIGTERM, a bounded
wait, then SIGKILL). Every answer is compared with what `audioflow predict` (the Predictor)
says about the same file.
"""

from __future__ import annotations

import hashlib
import http.client
import io
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from audioflow.inference import Predictor
from tests.test_export_inference import (  # noqa: F401  (fixtures: a tiny exported model, and one calibrated)
    OPERATING_POINT,
    calibrated,
    exported,
    model_dir,
)

BIN = Path(sys.executable).parent
MAX_UPLOAD_MB, MAX_DURATION_S = 1, 20


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def running_server(model: Path, *extra: str, python_bin: Path = BIN, env: dict | None = None) -> Iterator[dict]:
    """`audioflow serve` on a free port until the block ends; then SIGTERM, wait, SIGKILL."""
    port = free_port()
    proc = subprocess.Popen([str(python_bin / "audioflow"), "serve", str(model), "--port", str(port), *extra],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    server = {"port": port, "proc": proc}
    try:
        deadline = time.monotonic() + 60
        while True:
            if proc.poll() is not None:
                raise AssertionError(f"server exited with {proc.returncode}: {proc.stderr.read()[-3000:]}")
            try:
                if get(port, "/health")[0] == 200:
                    break
            except OSError:
                pass
            assert time.monotonic() < deadline, "server did not answer /health within 60 s"
            time.sleep(0.2)
        yield server
    finally:
        stop(proc)


def stop(proc: subprocess.Popen, timeout: float = 15) -> int:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout)
    return proc.returncode


def get(port: int, path: str) -> tuple[int, dict]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request("GET", path)
        r = conn.getresponse()
        return r.status, json.loads(r.read() or b"null")
    finally:
        conn.close()


def post_file(port: int, filename: str, data: bytes, field: str = "file",
              headers: dict | None = None, path: str = "/predict") -> tuple[int, dict]:
    """POST one multipart/form-data file, as a browser or curl -F would."""
    boundary = uuid.uuid4().hex
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"{field}\"; filename=\"{filename}\"\r\n"
            f"Content-Type: application/octet-stream\r\n\r\n").encode() + data + f"\r\n--{boundary}--\r\n".encode()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        conn.request("POST", path, body=body, headers={
            "Content-Type": f"multipart/form-data; boundary={boundary}", **(headers or {})})
        r = conn.getresponse()
        return r.status, json.loads(r.read() or b"null")
    finally:
        conn.close()


def encoded(signal: np.ndarray, sr: int, fmt: str, subtype: str | None = None) -> bytes:
    buf = io.BytesIO()
    sf.write(buf, signal, sr, format=fmt, subtype=subtype)
    return buf.getvalue()


def chirp(seconds: float, sr: int, channels: int = 1, seed: int = 0) -> np.ndarray:
    t = np.arange(int(seconds * sr)) / sr
    rng = np.random.default_rng(seed)
    x = 0.3 * np.sin(2 * np.pi * (200 + 300 * t) * t) + 0.01 * rng.standard_normal(len(t))
    return np.stack([x * (1 - 0.2 * c) for c in range(channels)], axis=1).astype(np.float32).squeeze()


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


@pytest.fixture(scope="module")
def model(exported) -> Path:  # noqa: F811
    return exported[0]


@pytest.fixture(scope="module")
def server(model: Path) -> Iterator[dict]:
    with running_server(model, "-q", "--max-upload-mb", str(MAX_UPLOAD_MB),
                        "--max-duration-s", str(MAX_DURATION_S)) as s:
        yield s


def test_health_metadata_and_openapi(server: dict, model: Path):
    port = server["port"]
    status, health = get(port, "/health")
    digest = hashlib.sha256(model.read_bytes()).hexdigest()
    assert status == 200 and health == {"status": "ok", "model_version": digest[:12]}
    status, meta = get(port, "/metadata")
    p = Predictor(model)
    assert status == 200 and meta["labels"] == p.labels and meta["sample_rate"] == p.sample_rate
    assert meta["window_s"] == p.window_samples / p.sample_rate and meta["model_sha256"] == digest
    assert meta["max_upload_bytes"] == MAX_UPLOAD_MB * 1024 * 1024 and meta["max_duration_s"] == MAX_DURATION_S
    status, schema = get(port, "/openapi.json")
    assert status == 200 and {"/predict", "/health", "/metadata"} <= set(schema["paths"])
    assert "multipart/form-data" in schema["paths"]["/predict"]["post"]["requestBody"]["content"]


FORMATS = [  # (name, container, subtype, rate, channels): what training reads, through the same decoder
    ("pcm16.wav", "WAV", "PCM_16", 4000, 1),
    ("float-stereo.wav", "WAV", "FLOAT", 44100, 2),
    ("pcm24.flac", "FLAC", "PCM_24", 16000, 1),
    ("vorbis.ogg", "OGG", "VORBIS", 22050, 2),
    ("pcm16.aiff", "AIFF", "PCM_16", 8000, 1),
    ("mpeg.mp3", "MP3", "MPEG_LAYER_III", 16000, 1),
]


@pytest.mark.parametrize("name, fmt, subtype, sr, channels", FORMATS, ids=[f[0] for f in FORMATS])
def test_predicts_every_format_as_the_cli_does(server: dict, model: Path, tmp_path: Path,
                                               name, fmt, subtype, sr, channels):
    if fmt not in sf.available_formats():
        pytest.skip(f"this libsndfile cannot write {fmt}")
    data = encoded(chirp(2.3, sr, channels), sr, fmt, subtype)
    (tmp_path / name).write_bytes(data)
    expected = Predictor(model).predict_file(tmp_path / name)
    status, body = post_file(server["port"], name, data)
    assert status == 200, body
    assert body["file"] == name and body["label"] == expected.label and body["n_windows"] == expected.n_windows
    assert body["probabilities"].keys() == expected.probabilities.keys()
    for label, prob in expected.probabilities.items():
        assert body["probabilities"][label] == pytest.approx(prob, abs=1e-6), label
    assert abs(sum(body["probabilities"].values()) - 1) < 1e-6
    assert body["model_version"] == hashlib.sha256(model.read_bytes()).hexdigest()[:12]


def wav_without_samples() -> bytes:
    return encoded(np.zeros((0, 1), dtype=np.float32), 4000, "WAV", "PCM_16")


BAD = [  # (name, body, status, words the message must contain)
    ("empty.wav", b"", 422, "empty file"),
    ("noise.wav", os.urandom(4096), 415, "unsupported format"),
    ("notes.txt", b"these are not the recordings you are looking for\n" * 20, 415, "unsupported format"),
    ("truncated.wav", encoded(chirp(1.0, 4000), 4000, "WAV", "PCM_16")[:30], 415, "unsupported format"),
    ("nosamples.wav", wav_without_samples(), 422, "no samples"),
    ("long.flac", encoded(chirp(MAX_DURATION_S + 5, 4000), 4000, "FLAC", "PCM_16"), 413, "longer than the limit"),
    ("huge.wav", encoded(np.random.default_rng(0).uniform(-1, 1, (300_000, 1)).astype(np.float32), 8000, "WAV",
                         "FLOAT"), 413, "larger than the limit"),
]


@pytest.mark.parametrize("name, data, status, words", BAD, ids=[b[0] for b in BAD])
def test_bad_uploads_get_a_clear_4xx_and_the_server_goes_on(server: dict, name, data, status, words):
    got, body = post_file(server["port"], name, data)
    assert got == status, body
    assert words in body["detail"] and (name in body["detail"] or status == 413), body
    assert get(server["port"], "/health")[0] == 200


def test_a_request_without_the_file_field_is_a_422(server: dict):
    status, body = post_file(server["port"], "a.wav", encoded(chirp(1.0, 4000), 4000, "WAV", "PCM_16"),
                             field="upload")
    assert status == 422 and any(e["loc"][-1] == "file" for e in body["detail"])


def test_a_declared_oversized_body_is_refused_before_it_is_sent(server: dict):
    """Content-Length over the limit: 413 at once, from the headers alone (the body never comes)."""
    with socket.create_connection(("127.0.0.1", server["port"]), timeout=10) as s:
        s.sendall(b"POST /predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: multipart/form-data; boundary=x\r\n"
                  b"Content-Length: 52428800\r\n\r\n")
        raw = b""
        while b"\r\n\r\n" not in raw or len(raw.split(b"\r\n\r\n", 1)[1]) < int(
                re.search(rb"content-length: (\d+)", raw, re.IGNORECASE).group(1)):
            chunk = s.recv(65536)  # headers and body may come in separate packets
            assert chunk, f"connection closed after {raw!r}"
            raw += chunk
        reply = raw.decode(errors="replace")
    assert reply.startswith("HTTP/1.1 413"), reply[:200]
    assert "larger than the limit" in reply


def test_500_requests_from_8_threads_all_answered_with_stable_memory(server: dict, model: Path):
    clips = {f"clip{i}.wav": encoded(chirp(0.5 + 0.4 * i, 4000, seed=i), 4000, "WAV", "PCM_16") for i in range(5)}
    expected = {}
    for name, data in clips.items():
        status, body = post_file(server["port"], name, data)
        assert status == 200
        expected[name] = body["probabilities"]
    names = list(clips)

    def one(i: int) -> tuple[str, int, dict]:
        name = names[i % len(names)]
        status, body = post_file(server["port"], name, clips[name])
        return name, status, body

    pid = server["proc"].pid
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(one, range(80)))  # warm-up: thread pool, allocator arenas, ORT buffers
        before = rss_kib(pid)
        results = list(pool.map(one, range(500)))
        after = rss_kib(pid)
    assert len(results) == 500
    assert [s for _, s, _ in results].count(200) == 500, {s for _, s, _ in results}
    for name, _, body in results:  # one shared session, no cross-talk between concurrent requests
        assert body["probabilities"] == expected[name], name
    print(f"serve RSS: {before / 1024:.1f} MiB after warm-up, {after / 1024:.1f} MiB after 500 requests")
    assert after - before < 32 * 1024, f"RSS grew {(after - before) / 1024:.1f} MiB over 500 requests"


def listening_addresses(port: int) -> set[str]:
    """Local addresses in LISTEN state on ``port``, from /proc/net/tcp{,6}."""
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            addr, p = local.split(":")
            if state == "0A" and int(p, 16) == port:
                found.add(addr)
    return found


def test_binds_loopback_only_by_default(server: dict):
    assert listening_addresses(server["port"]) == {"0100007F"}  # 127.0.0.1, little-endian hex


def test_sigterm_stops_the_server_cleanly(model: Path):
    """uvicorn's graceful shutdown: it stops accepting, finishes what is in flight, then ends by
    the signal it received (exit status -SIGTERM, as a container runtime expects)."""
    with running_server(model) as s:
        proc = s["proc"]
        proc.send_signal(signal.SIGTERM)
        proc.wait(15)
        log = proc.stderr.read()
    assert proc.returncode in (0, -signal.SIGTERM), log[-2000:]
    assert "Shutting down" in log and "Finished server process" in log and "Traceback" not in log


def test_serve_help_and_a_missing_model(tmp_path: Path):
    p = subprocess.run([str(BIN / "audioflow"), "serve", "--help"], capture_output=True, text=True, timeout=60)
    assert p.returncode == 0 and "127.0.0.1" in p.stdout and "--max-upload-mb" in p.stdout
    p = subprocess.run([str(BIN / "audioflow"), "serve", str(tmp_path / "absent.onnx")], capture_output=True,
                       text=True, timeout=60)
    assert p.returncode == 2 and "ONNX model not found" in p.stderr


def test_the_operating_point_by_default_or_on_request(calibrated: Path, model: Path, tmp_path: Path):  # noqa: F811
    """/metadata shows the temperature and the operating point; an answer applies the threshold
    when the service was started with --operating-point or the request asks (?operating_point=)."""
    data = encoded(chirp(1.3, 4000), 4000, "WAV", "PCM_16")
    (tmp_path / "c.wav").write_bytes(data)
    p = Predictor(calibrated)
    expected = p.operating_point.apply(p.predict_file(tmp_path / "c.wav").probabilities)
    with running_server(calibrated, "-q") as s:
        status, meta = get(s["port"], "/metadata")
        assert meta["temperature"] == 2.0
        assert meta["operating_point"] == OPERATING_POINT | {"applied_by_default": False}
        assert "operating_point" not in post_file(s["port"], "c.wav", data)[1]
        status, body = post_file(s["port"], "c.wav", data, path="/predict?operating_point=true")
        assert status == 200 and body["operating_point"]["positive"] == expected["positive"]
        assert body["operating_point"]["score"] == pytest.approx(expected["score"], abs=1e-6)
    with running_server(calibrated, "-q", "--operating-point") as s:
        assert "operating_point" in post_file(s["port"], "c.wav", data)[1]
        assert "operating_point" not in post_file(s["port"], "c.wav", data, path="/predict?operating_point=false")[1]
    with running_server(model, "-q") as s:  # a model without one: asking is a clear 422
        status, body = post_file(s["port"], "c.wav", data, path="/predict?operating_point=true")
        assert status == 422 and "no operating point" in body["detail"]
        assert get(s["port"], "/metadata")[1]["operating_point"] is None
    refused = subprocess.run([str(BIN / "audioflow"), "serve", str(model), "--operating-point"], capture_output=True,
                             text=True, timeout=60)
    assert refused.returncode == 2 and "has no operating point" in refused.stderr
