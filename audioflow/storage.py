"""Where the recordings live: a local folder or an fsspec URL (``s3://``, ``gs://``, ``az://``, ``file://``).

The data root is kept exactly as configured (a relative path stays relative, a URL stays a
URL) and recorded that way, so no artifact refers to one machine's folders. Credentials and
endpoints come from each filesystem's standard configuration: botocore's for S3
(``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``, ``AWS_ENDPOINT_URL_S3`` or ``AWS_ENDPOINT_URL``,
``AWS_PROFILE``), Google's Application Default Credentials and ``STORAGE_EMULATOR_HOST`` for
``gs://`` (gcsfs), ``AZURE_STORAGE_CONNECTION_STRING`` or ``AZURE_STORAGE_ACCOUNT_NAME`` with a
key, SAS token or azure-identity credential for ``az://`` (adlfs). fsspec is imported only for
URLs: local folders take the plain ``pathlib`` path.
"""

from __future__ import annotations

import os
import stat
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import IO
from urllib.parse import unquote, urlparse

from audioflow.errors import AudioflowError


class StorageError(AudioflowError, OSError):
    """An object store that cannot be reached or listed; the message names the URL."""


def is_url(location: str | Path) -> bool:
    """True for ``scheme://...`` (a string); a ``Path`` is always local."""
    return isinstance(location, str) and "://" in location


def url_to_fs(url: str):
    """(filesystem, path inside it) for a URL; fsspec caches one filesystem per configuration."""
    import fsspec

    return fsspec.core.url_to_fs(url)


@dataclass(frozen=True)
class DataRoot:
    """The data root as configured; ``location(rel)`` is a ``Path`` locally, a URL otherwise."""

    spec: str

    @classmethod
    def of(cls, root: str | Path | DataRoot) -> DataRoot:
        return root if isinstance(root, DataRoot) else cls(str(root))

    def __str__(self) -> str:
        return self.spec

    @cached_property
    def local(self) -> Path | None:
        """The folder for a local root (``file://`` URLs included), None for an object store."""
        if not is_url(self.spec):
            return Path(self.spec)
        if self.spec.startswith("file://"):
            return Path(unquote(urlparse(self.spec).path))
        return None

    @property
    def _base(self) -> str:
        return self.spec.rstrip("/")

    def location(self, rel: str) -> Path | str:
        """Where ``rel`` (POSIX, relative to the root) is: what audio.read and messages take."""
        local = self.local
        return local / rel if local is not None else f"{self._base}/{rel}"

    def _fs(self, fresh: bool = False):
        fs, path = url_to_fs(self._base)
        path = path.rstrip("/")
        if fresh:  # fsspec caches listings for the life of the process: see what is there now
            fs.invalidate_cache(path)
        return fs, path

    def is_dir(self) -> bool:
        if (local := self.local) is not None:
            return local.is_dir()
        fs, path = self._fs(fresh=True)
        return self._remote(lambda: fs.isdir(path))

    def is_file(self, rel: str) -> bool:
        if (local := self.local) is not None:
            return (local / rel).is_file()
        fs, path = self._fs()
        return self._remote(lambda: fs.isfile(f"{path}/{rel}"))

    @contextmanager
    def open(self, rel: str) -> IO[bytes]:
        """Open ``rel`` for reading bytes."""
        if (local := self.local) is not None:
            with open(local / rel, "rb") as f:
                yield f
            return
        fs, path = self._fs()
        with fs.open(f"{path}/{rel}", "rb") as f:
            yield f

    def sizes(self, rels, listing: dict[str, int] | None = None) -> dict[str, int]:
        """Size in bytes of each of ``rels`` that exists as a file; absent ones are left out.

        ``listing``: the files already found (an object store's ``files()``, a local folder's walk:
        one listing serves the sizes and the unlisted files); a local file it lacks (a hidden
        folder, another suffix, a linked folder) is asked for.
        """
        if (local := self.local) is not None:
            sizes = {}
            for rel in rels:
                if listing is not None and rel in listing:
                    sizes[rel] = listing[rel]
                    continue
                try:
                    st = os.stat(os.path.join(local, rel))
                except OSError:
                    continue
                if stat.S_ISREG(st.st_mode):
                    sizes[rel] = st.st_size
            return sizes
        listing = self.files() if listing is None else listing
        return {rel: listing[rel] for rel in rels if rel in listing}

    def files(self) -> dict[str, int]:
        """Every object under an object-store root, recursively: relative POSIX path -> bytes.

        One listing instead of one request per file. Local folders are walked by the caller.
        """
        fs, path = self._fs(fresh=True)
        found = self._remote(lambda: fs.find(path, detail=True))
        return {name[len(path) + 1:]: int(info.get("size") or 0) for name, info in found.items()
                if info.get("type", "file") == "file" and name.startswith(path + "/")}

    def _remote(self, call):
        try:
            return call()
        except FileNotFoundError:
            raise
        except Exception as exc:  # credentials, endpoint, network: say which root failed and why
            text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise StorageError(f"{self.spec}: cannot read the data root ({text[:200]})") from exc


class FsspecFolder:
    """Files under a folder or URL, through fsspec: what ``mirrored_checkpoint`` writes to."""

    def __init__(self, url: str):
        self.fs, self.base = url_to_fs(url.rstrip("/"))

    def _p(self, name: str) -> str:
        return f"{self.base}/{name}"

    def exists(self, name: str) -> bool:
        self.fs.invalidate_cache(self.base)
        return self.fs.exists(self._p(name))

    def download(self, name: str, local: Path) -> None:
        self.fs.get(self._p(name), str(local))

    def upload(self, local: Path, name: str) -> None:
        self.fs.makedirs(self.base, exist_ok=True)
        self.fs.put(str(local), self._p(name))

    def rename(self, src: str, dst: str) -> None:
        self.fs.mv(self._p(src), self._p(dst))

    def remove(self) -> None:
        if self.fs.exists(self.base):
            self.fs.rm(self.base, recursive=True)


@contextmanager
def mirrored_checkpoint(remote, local: Path):
    """Keep the training checkpoint ``local/last.pt`` mirrored in ``remote`` (a folder of the
    artifact store or object storage, named for the run), where a restarted job finds it.

    ``remote`` has ``exists``, ``download``, ``upload``, ``rename`` and ``remove`` (see
    ``FsspecFolder``). Before training, the stored copy (if any) is restored, so a job killed
    mid-training (a pod evicted, a machine lost) resumes from its last finished epoch when it
    runs again. The yielded function uploads each new checkpoint, to a partial name and then
    renamed, so a kill mid-upload leaves the previous one. A run that finishes removes the
    stored copy; one that fails keeps it.
    """
    local.mkdir(parents=True, exist_ok=True)
    if remote.exists("last.pt"):
        remote.download("last.pt", local / "last.pt")

    def upload(path: Path) -> None:
        remote.upload(path, "last.pt.partial")
        remote.rename("last.pt.partial", "last.pt")

    yield upload
    remote.remove()
