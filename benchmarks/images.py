"""The images: their sizes, the serve image's cold start, and a code-only rebuild.

- sizes of the steps and serve images as the engine reports them (goal: serve <= 400 MB);
- cold start: from `run` of the serve image (read-only root, model mounted) to the first 200
  from /health, against the same model served by `audioflow serve` straight on the host in the
  same run (goal: <= 3 s);
- code-only rebuild: the steps image rebuilt after one line of audioflow/ changed, against a
  rebuild with nothing changed, in the same run (from a copy of the build context, tagged
  localhost/audioflow-steps:bench, removed at the end; goal: well under a minute).

Both images are built first with docker/build.sh (a cold build depends on the network and the
uv cache, so it is not timed here). Medians over --repeats; read the ratios, machines here are noisy.

    uv run python -m benchmarks.images [--repeats 5] [--json PATH] [--no-rebuild]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
STEPS, SERVE = "localhost/audioflow-steps:dev", "localhost/audioflow-serve:dev"
BENCH = "localhost/audioflow-steps:bench"
CONTEXT = ("pyproject.toml", "uv.lock", "README.md", ".dockerignore", "audioflow", "docker")
GOALS = {"serve_image_mb": 400, "serve_cold_start_s": 3.0, "code_rebuild_s": 60.0}


def engine() -> tuple[str, dict[str, str]]:
    script = 'source docker/engine.sh && pick_engine && echo "$engine" && echo "${CONTAINERS_CONF:-}"'
    p = subprocess.run(["bash", "-c", script], cwd=REPO, capture_output=True, text=True, timeout=60)
    if p.returncode:
        raise SystemExit(p.stderr.strip())
    client, conf = p.stdout.splitlines()[:2]
    return client, os.environ | ({"CONTAINERS_CONF": conf} if conf else {})


def tiny_model(folder: Path) -> Path:
    """A seeded, untrained CNN exported as `audioflow export` does: start-up does not depend on
    what the weights learned."""
    import numpy as np
    import torch

    from audioflow.checkpoint import ModelMeta, save_model
    from audioflow.export import export_onnx
    from audioflow.features import FeatureSpec
    from audioflow.models import create_model

    spec = FeatureSpec(sample_rate=16000, window_samples=16000, window_hop_samples=8000, n_fft=512,
                       win_length=400, hop_length=160, n_mels=64, f_min=0.0, f_max=None)
    torch.manual_seed(0)
    kwargs = {"n_mels": 64, "n_classes": 3, "channels": [16, 32, 64], "dropout": 0.0}
    model = create_model("cnn", **kwargs).eval()
    meta = ModelMeta("cnn", kwargs, ["a", "b", "c"], spec, params_hash="0" * 16, dataset_fingerprint="0" * 16)
    check = [np.random.default_rng(i).standard_normal(16000).astype(np.float32) * 0.1 for i in range(2)]
    export_onnx(save_model(model, meta, folder / "model"), folder / "model.onnx", check_audio=check)
    return folder / "model.onnx"


def until_healthy(port: int, alive, timeout: float = 60.0) -> float:
    start = time.perf_counter()
    while time.perf_counter() - start < timeout:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1) as r:
                if r.status == 200:
                    return time.perf_counter()
        except OSError:
            if not alive():
                raise RuntimeError("the server exited before it was healthy") from None
            time.sleep(0.02)
    raise TimeoutError(f"/health did not answer within {timeout} s")


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cold_start_container(client: str, env: dict, model: Path) -> float:
    name, port = f"audioflow-bench-{uuid.uuid4().hex[:8]}", free_port()
    extra = ["--health-interval", "disable"] if "podman" in client else []
    start = time.perf_counter()
    try:
        subprocess.run([client, "run", "--detach", "--name", name, "--read-only", "--tmpfs", "/tmp", *extra,
                        "--publish", f"127.0.0.1:{port}:8000", "--volume", f"{model}:/models/model.onnx:ro", SERVE],
                       env=env, check=True, capture_output=True, timeout=120)

        def alive() -> bool:
            state = subprocess.run([client, "inspect", "--format", "{{.State.Running}}", name], env=env,
                                   capture_output=True, text=True)
            return state.stdout.strip() == "true"

        return until_healthy(port, alive) - start
    finally:
        subprocess.run([client, "rm", "--force", name], env=env, capture_output=True, timeout=120)


def cold_start_host(model: Path) -> float:
    port = free_port()
    start = time.perf_counter()
    proc = subprocess.Popen([str(Path(sys.executable).parent / "audioflow"), "serve", str(model), "--port", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        return until_healthy(port, lambda: proc.poll() is None) - start
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def paired(name: str, times: list[float], base_name: str, base: list[float], ratio: str, digits: int) -> dict:
    """The medians of a measurement and its baseline from the same run, and their ratio."""
    m, b = round(statistics.median(times), digits), round(statistics.median(base), digits)
    return {name: m, base_name: b, ratio: round(m / b, digits)}


def rebuild_seconds(context: Path, env: dict, change: bool, n: int) -> float:
    if change:
        init = context / "audioflow" / "__init__.py"
        init.write_text(init.read_text() + f"# benchmark edit {n}\n")
    start = time.perf_counter()
    subprocess.run(["bash", str(context / "docker" / "build.sh"), "--only", "steps", "--no-smoke", "--tag", BENCH],
                   env=env, check=True, capture_output=True, timeout=1800)
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=5, help="timed runs of each measurement (default 5)")
    ap.add_argument("--no-rebuild", action="store_true", help="skip the code-only rebuild measurement")
    ap.add_argument("--json", type=Path, help="write the figures here")
    args = ap.parse_args(argv)
    client, env = engine()
    print(f"images: engine {client}, {platform.machine()}, {os.cpu_count()} CPUs, {args.repeats} repeats", flush=True)
    with tempfile.TemporaryDirectory(prefix="audioflow-bench-images-") as tmp:
        # buildah keeps its cache mounts under $TMPDIR: a private one goes with this run.
        (Path(tmp) / "build-tmp").mkdir()
        return measure(args, client, env | {"TMPDIR": str(Path(tmp) / "build-tmp")}, Path(tmp))


def measure(args, client: str, env: dict, tmp: Path) -> int:
    subprocess.run(["bash", str(REPO / "docker" / "build.sh"), "--no-smoke"], env=env, check=True,
                   capture_output=True, timeout=3600)

    def size_mb(image: str) -> float:
        out = subprocess.run([client, "image", "inspect", "--format", "{{.Size}}", image], env=env, check=True,
                             capture_output=True, text=True).stdout
        return int(out) / 1e6

    r: dict = {"benchmark": "images", "engine": client, "repeats": args.repeats,
               "steps_image_mb": round(size_mb(STEPS), 1), "serve_image_mb": round(size_mb(SERVE), 1)}
    print(f"size         steps {r['steps_image_mb']:.0f} MB, serve {r['serve_image_mb']:.0f} MB "
          f"(goal: serve <= {GOALS['serve_image_mb']} MB)", flush=True)

    model = tiny_model(tmp)
    host, container = [], []
    for _ in range(args.repeats):  # interleaved, so that drift hits both alike
        host.append(cold_start_host(model))
        container.append(cold_start_container(client, env, model))
    r |= paired("serve_cold_start_s", container, "host_cold_start_s", host, "cold_start_ratio", 3)
    print(f"cold start   serve image {r['serve_cold_start_s']:.2f} s to a healthy /health, `audioflow serve` "
          f"on the host {r['host_cold_start_s']:.2f} s: {r['cold_start_ratio']:.2f}x "
          f"(goal: <= {GOALS['serve_cold_start_s']} s)", flush=True)

    if not args.no_rebuild:
        context = tmp / "context"
        for name in CONTEXT:
            src = REPO / name
            if src.is_dir():
                shutil.copytree(src, context / name, ignore=shutil.ignore_patterns("__pycache__"))
            else:
                context.mkdir(exist_ok=True)
                shutil.copyfile(src, context / name)
        try:
            rebuild_seconds(context, env, change=False, n=0)  # tags BENCH: every layer cached
            same, edited = [], []
            for i in range(args.repeats):
                same.append(rebuild_seconds(context, env, change=False, n=i))
                edited.append(rebuild_seconds(context, env, change=True, n=i))
        finally:
            subprocess.run([client, "image", "rm", BENCH], env=env, capture_output=True, timeout=300)
        r |= paired("code_rebuild_s", edited, "cached_rebuild_s", same, "rebuild_ratio", 2)
        print(f"rebuild      steps image after a one-line code change {r['code_rebuild_s']:.1f} s, nothing "
              f"changed {r['cached_rebuild_s']:.1f} s: {r['rebuild_ratio']:.1f}x "
              f"(goal: well under {GOALS['code_rebuild_s']:.0f} s)", flush=True)

    r["goals"] = GOALS
    if args.json:
        args.json.write_text(json.dumps(r, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
