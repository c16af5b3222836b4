"""Real Google Cloud Storage and Azure Blob servers for tests, beside SeaweedFS's S3 (s3server.py).

- ``GcsServer``: gcp-storage-emulator (a dev dependency on PyPI), the GCS JSON API that gcsfs
  and google-cloud-storage reach through the standard ``STORAGE_EMULATOR_HOST`` variable.
- ``AzuriteServer``: Azurite, Microsoft's Azure Storage emulator (npm, ``tools/azurite``; `make
  test` installs it with ``npm ci``), reached through the standard
  ``AZURE_STORAGE_CONNECTION_STRING`` that adlfs and the Azure SDK read.

    with GcsServer.start(tmp_path) as gcs:
        url = gcs.make_bucket("demo")          # gs://demo-1a2b3c4d
        gcs.upload(local_folder, url)
        subprocess.run(cmd, env=os.environ | gcs.env())

Both listen on 127.0.0.1 only, on a free port, keep whatever they write under the folder they
are given (their working directory) and are stopped by process id: terminate, a bounded wait,
then kill.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

from tests.s3server import files_and_keys, free_ports, ready_or_stopped, stop_process

ROOT = Path(__file__).resolve().parents[1]
GCS_EMULATOR = Path(sys.executable).parent / "gcp-storage-emulator"
AZURITE = ROOT / "tools" / "azurite" / "node_modules" / ".bin" / "azurite-blob"
# Azurite's fixed development account: documented by Microsoft, valid only against the emulator.
AZURITE_ACCOUNT = "devstoreaccount1"
AZURITE_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="


class BlobServer:
    """A server process on 127.0.0.1 holding an fsspec-reachable object store."""

    scheme = ""
    name = ""

    def __init__(self, proc: subprocess.Popen, port: int, log: Path):
        self.proc, self.port, self.log = proc, port, log

    @classmethod
    def command(cls, port: int, workdir: Path) -> list[str]:
        raise NotImplementedError

    @classmethod
    def available(cls) -> bool:
        raise NotImplementedError

    @classmethod
    def start(cls, workdir: Path, timeout: float = 60.0):
        workdir.mkdir(parents=True, exist_ok=True)
        (port,) = free_ports(1)
        log = workdir / "server.log"
        with open(log, "wb") as out:
            proc = subprocess.Popen(cls.command(port, workdir), cwd=workdir, stdout=out,
                                    stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                    env=os.environ | {"TMPDIR": str(workdir), "HOME": str(workdir)})
        return ready_or_stopped(cls(proc, port, log), timeout)

    def _wait_ready(self, timeout: float) -> None:
        """Until a bucket can be made and an object written and read back."""
        deadline, last = time.monotonic() + timeout, None
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.proc.returncode}:\n{self.tail()}")
            try:
                url = self.make_bucket("ready")
                fs = self.fs()
                fs.pipe(f"{url.split('://')[1]}/probe", b"ok")
                assert fs.cat(f"{url.split('://')[1]}/probe") == b"ok"
                return
            except Exception as exc:  # not listening yet
                last = exc
                time.sleep(0.3)
        raise TimeoutError(f"{self.name} on port {self.port} not ready after {timeout}s ({last}):\n{self.tail()}")

    def env(self) -> dict[str, str]:
        """The standard variables a user sets to reach this store."""
        raise NotImplementedError

    def fs(self):
        """A fresh fsspec filesystem on this server (no instance or listing cache)."""
        raise NotImplementedError

    def make_bucket(self, prefix: str = "bucket") -> str:
        """A new, empty bucket (container) with a unique name, as a URL."""
        name = f"{prefix}-{uuid.uuid4().hex[:8]}"
        self.fs().mkdir(name)
        return f"{self.scheme}://{name}"

    def upload(self, local: Path, url: str) -> None:
        """Every file under the folder ``local`` to ``url`` (same relative keys)."""
        fs = self.fs()
        for p, key in files_and_keys(local, url):
            fs.pipe(key, p.read_bytes())

    def tail(self, n: int = 30) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-n:])

    def stop(self, grace: float = 5.0) -> None:
        stop_process(self.proc, grace)

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


class GcsServer(BlobServer):
    scheme, name = "gs", "gcp-storage-emulator"

    @classmethod
    def available(cls) -> bool:
        return GCS_EMULATOR.is_file()

    @classmethod
    def command(cls, port: int, workdir: Path) -> list[str]:
        return [str(GCS_EMULATOR), "start", "--host", "127.0.0.1", "--port", str(port), "--in-memory"]

    def env(self) -> dict[str, str]:
        return {"STORAGE_EMULATOR_HOST": f"http://127.0.0.1:{self.port}"}

    def fs(self):
        # The plain filesystem: gcsfs's default (ExtendedGcsFileSystem) asks the gRPC storage
        # control API for each bucket's layout, which anonymous credentials wait 60 s on here.
        from gcsfs.core import GCSFileSystem

        return GCSFileSystem(endpoint_url=self.env()["STORAGE_EMULATOR_HOST"], token="anon",
                                   skip_instance_cache=True, use_listings_cache=False)


class AzuriteServer(BlobServer):
    scheme, name = "az", "Azurite"

    @classmethod
    def available(cls) -> bool:
        return AZURITE.is_file()

    @classmethod
    def command(cls, port: int, workdir: Path) -> list[str]:
        return [str(AZURITE), "--blobHost", "127.0.0.1", "--blobPort", str(port),
                "--location", str(workdir / "data"), "--skipApiVersionCheck", "--loose",
                "--disableTelemetry"]

    def env(self) -> dict[str, str]:
        return {"AZURE_STORAGE_CONNECTION_STRING": (
            f"DefaultEndpointsProtocol=http;AccountName={AZURITE_ACCOUNT};AccountKey={AZURITE_KEY};"
            f"BlobEndpoint=http://127.0.0.1:{self.port}/{AZURITE_ACCOUNT};")}

    def fs(self):
        import adlfs

        return adlfs.AzureBlobFileSystem(connection_string=self.env()["AZURE_STORAGE_CONNECTION_STRING"],
                                         skip_instance_cache=True, use_listings_cache=False)
