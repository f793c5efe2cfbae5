"""A store in a local directory (``file:///path``): the embedded default for local work.

Create-only writes put the bytes in a uniquely named temporary file and ``link`` it to its
name, which fails if the name exists: readers never see a partial object and nothing is
ever overwritten. Compare-and-swap holds an ``flock`` on a sidecar file while it compares
and renames; that is sound on a local disk, which is what this backend is for.
"""

import fcntl
import hashlib
import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from podenv.errors import NotFoundError, StoreError
from podenv.fileio import read_file_chunks
from podenv.progress import Progress
from podenv.store.backend import ObjectInfo, PreconditionFailed

_COPY_CHUNK = 1 << 20


def _version_tag(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class FileBackend:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.url = f"file://{root}"
        if not root.is_dir():
            raise StoreError(
                f"the store directory {root} does not exist", fix="create it or fix the store URL."
            )

    def _path(self, key: str) -> Path:
        return self.root / key

    def _temporary(self, path: Path) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        return path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")

    def head(self, key: str) -> ObjectInfo | None:
        try:
            return ObjectInfo(size=self._path(key).stat().st_size)
        except FileNotFoundError:
            return None

    def get(self, key: str) -> tuple[bytes, str]:
        try:
            data = self._path(key).read_bytes()
        except FileNotFoundError:
            raise NotFoundError(f"{key} does not exist in {self.url}.") from None
        return data, _version_tag(data)

    def iter_chunks(self, key: str, size: int, progress: Progress | None) -> Iterator[bytes]:
        for chunk in read_file_chunks(self._path(key)):
            if progress is not None:
                progress.update(len(chunk))
            yield chunk

    def put_bytes(
        self, key: str, data: bytes, *, if_none_match: bool = False, if_match: str | None = None
    ) -> str:
        path = self._path(key)
        temporary = self._temporary(path)
        try:
            temporary.write_bytes(data)
            if if_none_match:
                self._link_new(temporary, path)
            else:
                with self._locked(path):
                    if if_match is not None:
                        self._check_version(path, if_match)
                    os.replace(temporary, path)
        finally:
            temporary.unlink(missing_ok=True)
        return _version_tag(data)

    def put_file(self, key: str, path: Path, progress: Progress | None) -> None:
        destination = self._path(key)
        temporary = self._temporary(destination)
        try:
            with open(path, "rb") as source, open(temporary, "wb") as sink:
                while chunk := source.read(_COPY_CHUNK):
                    sink.write(chunk)
                    if progress is not None:
                        progress.update(len(chunk))
            self._link_new(temporary, destination)
        finally:
            temporary.unlink(missing_ok=True)

    def list_keys(self, prefix: str) -> list[str]:
        base = self._path(prefix)
        if not base.is_dir():
            return []
        return sorted(
            path.relative_to(self.root).as_posix()
            for path in base.rglob("*")
            if path.is_file() and not path.name.startswith(".")
        )

    @staticmethod
    def _link_new(temporary: Path, path: Path) -> None:
        try:
            os.link(temporary, path)
        except FileExistsError:
            raise PreconditionFailed(path.name) from None

    @staticmethod
    def _check_version(path: Path, expected: str) -> None:
        try:
            current = _version_tag(path.read_bytes())
        except FileNotFoundError:
            raise PreconditionFailed(path.name) from None
        if current != expected:
            raise PreconditionFailed(path.name)

    @staticmethod
    @contextmanager
    def _locked(path: Path) -> Iterator[None]:
        with open(path.with_name(f".{path.name}.lock"), "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)
