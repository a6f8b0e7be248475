"""The storage interface every backend implements.

A backend stores flat files in one level of folders under its root (a local folder, a
bucket, a Drive or Box folder): ``<folder>/<name>``. Backends implement a handful of
primitives (``_list``, ``_upload``, ``_download``, ``_download_range``, ``_delete``,
``_rename``, ``_create_exclusive``); the public methods here wrap each call with retries
and turn SDK exceptions into one-line ``StorageError``s through ``_translate``.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import tempfile
import threading
import time
import uuid
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, ClassVar, NamedTuple, TypeVar

from ..errors import ConfigError, ResutilError, StorageError, StorageNotFound, StorageUnavailable
from ..liveness import remove_dead_scratch, scratch_prefix
from ..progress import NO_PROGRESS, Callback

log = logging.getLogger(__name__)

T = TypeVar("T")
S = TypeVar("S")


class ObjectInfo(NamedTuple):
    """A stored file: its name within its folder, size in bytes, modification time, and
    ``version``: an opaque token that changes whenever the content is replaced (GCS
    generation, Drive and Box content checksums, inode and mtime of a local file), None
    where the backend cannot tell. Readers pair an archive with its sidecar by it.

    (A named tuple: a listing makes one per object, 20,000 for 10,000 experiments.)"""

    name: str
    size: int
    mtime: float | None = None
    version: str | None = None


@dataclass
class Staged:
    """A file being staged for upload: write ``path``; after the ``with`` block ``stored``
    describes what the storage holds (None where the backend cannot tell)."""

    path: Path
    stored: ObjectInfo | None = None


@dataclass(frozen=True)
class StorageSettings:
    """What a backend is configured with: ``storage_config`` plus where it came from."""

    values: Mapping[str, Any]
    storage_type: str
    config_path: Path | None = None
    scratch_dir: Path | None = None  # where to stage archives; same disk as results_dir
    retries: int = 3
    retry_wait: float = 0.5

    def get(self, key: str, *aliases: str, default: Any = None) -> Any:
        """An optional value."""
        for k in (key, *aliases):
            if self.values.get(k) not in (None, ""):
                return self.values[k]
        return default

    def require(self, key: str, *aliases: str) -> Any:
        """A required value, or ConfigError naming the key and the file."""
        value = self.get(key, *aliases)
        if value is None:
            import difflib

            where = self.config_path or "the config"
            close = difflib.get_close_matches(key, [str(k) for k in self.values], n=1, cutoff=0.7)
            hint = f" (found '{close[0]}': misspelt?)" if close else ""
            raise ConfigError(
                f"{where}: storage_config needs '{key}' for storage_type {self.storage_type}{hint}"
            )
        return value

    def path(self, key: str, *aliases: str, required: bool = True) -> Path | None:
        """A path value, expanded and made absolute against the config's folder."""
        value = self.require(key, *aliases) if required else self.get(key, *aliases)
        if value is None:
            return None
        p = Path(os.path.expandvars(str(value))).expanduser()
        if not p.is_absolute() and self.config_path is not None:
            p = self.config_path.parent / p
        return p


class Transient(Exception):
    """Raised by a backend (or its ``_translate``) for an error worth retrying."""

    def __init__(self, error: StorageError) -> None:
        super().__init__(str(error))
        self.error = error


class Storage(ABC):
    """A place experiments are stored; see the module docstring."""

    type_name: ClassVar[str] = ""
    extra: ClassVar[str | None] = None  # the pip extra this backend needs
    max_workers: ClassVar[int] = 4  # parallel transfers this backend handles well
    writes_in_place: ClassVar[bool] = False  # staged_upload writes straight to the storage
    # staged_upload uploads while the file is written (see _upload_growing)
    uploads_while_written: ClassVar[bool] = False

    def __init__(self, settings: StorageSettings) -> None:
        """Read settings only; never touch the network here (see ``check``)."""
        self.settings = settings

    # -- primitives a backend implements -------------------------------------------------
    @abstractmethod
    def describe(self) -> str:
        """Where the storage is, for messages: ``gs://bucket``, ``/mnt/team/resutil``."""

    @abstractmethod
    def _list(self, folder: str) -> list[ObjectInfo]:
        """The files in ``folder``; an empty list when the folder does not exist."""

    @abstractmethod
    def _upload(self, src: Path, folder: str, name: str, callback: Callback) -> ObjectInfo | None:
        """Store ``src`` as ``folder/name``, replacing it; all-or-nothing. Returns the
        stored object (with its version) when the backend's answer says it."""

    @abstractmethod
    def _download(self, folder: str, name: str, out: BinaryIO, callback: Callback,
                  checked: bool = False) -> None:
        """Write ``folder/name`` to ``out`` from its first byte on, in order; raise
        StorageNotFound if it does not exist. ``checked``: the caller verifies the content
        against its own hash, so a backend may skip a check of its own that costs time."""

    @abstractmethod
    def _download_range(self, folder: str, name: str, start: int, length: int, out: BinaryIO,
                        version: str | None = None) -> None:
        """Write ``length`` bytes of ``folder/name`` from byte ``start`` on to ``out``, with
        one ranged request (fewer bytes only where the object ends sooner); raise
        StorageNotFound if it does not exist. ``version`` (from a listing): where the
        backend can ask for that very version, it does, and raises StorageChanged when the
        object was replaced since; elsewhere the caller's checks catch a replacement."""

    def _after_growing_failed(self, exc: BaseException, target: str) -> None:
        """Raise ``exc`` as the error to report unless it is worth uploading again."""
        if isinstance(exc, Transient):
            return
        if not isinstance(exc, Exception):
            raise exc
        try:
            err = self._translate(exc, "upload", target)
        except Transient:
            return
        if err is None:
            raise exc
        raise err from None

    def _upload_growing(self, src: GrowingFile, folder: str, name: str, callback: Callback
                        ) -> ObjectInfo | None:
        """Store ``folder/name`` from a file that is still being written (its ``read``
        waits for more; its end is known only when the writer is done), all-or-nothing.
        Backends with ``uploads_while_written`` send it as it grows; by default, and for a
        file complete before one chunk fills, it waits for the writer and uploads whole."""
        src.wait_for_size(-1)
        return self._upload(src.path, folder, name, callback)

    @abstractmethod
    def _delete(self, folder: str, name: str) -> None:
        """Remove ``folder/name``; raise StorageNotFound if it does not exist."""

    @abstractmethod
    def _rename(self, folder: str, name: str, new_name: str) -> ObjectInfo | None:
        """Rename ``folder/name`` to ``folder/new_name``, replacing an existing one; returns
        the renamed object when the backend's answer says it."""

    @abstractmethod
    def _create_exclusive(self, folder: str, name: str, data: bytes) -> bool:
        """Store ``data`` as ``folder/name`` only if no object of that name exists, as one
        atomic step on the storage; False if one exists."""

    def _translate(self, exc: BaseException, action: str, target: str) -> ResutilError | None:
        """Turn a backend/SDK exception into a ResutilError (raise Transient to retry).

        Return None for exceptions that are bugs; they propagate with their traceback.
        """
        if isinstance(exc, ResutilError):
            return exc
        if isinstance(exc, (ConnectionError, TimeoutError)):
            raise Transient(StorageUnavailable(f"{self.describe()}: cannot {action} {target}: {exc}"))
        return None

    # -- public API: retries and error translation around the primitives -----------------
    def list(self, folder: str) -> list[ObjectInfo]:
        """The files in ``folder`` (empty when it does not exist)."""
        return self._call(lambda: self._list(folder), "list", folder)

    def stat(self, folder: str, name: str) -> ObjectInfo | None:
        """Facts about ``folder/name``, or None when it does not exist."""
        for info in self.list(folder):
            if info.name == name:
                return info
        return None

    def upload(self, src: Path, folder: str, name: str, callback: Callback = NO_PROGRESS
               ) -> ObjectInfo | None:
        """Store a local file as ``folder/name``, all-or-nothing; returns what was stored
        when the backend says it."""
        return self._call(lambda: self._upload(src, folder, name, callback), "upload",
                          f"{folder}/{name}", callback)

    def download(self, folder: str, name: str, dest: Path, callback: Callback = NO_PROGRESS) -> None:
        """Fetch ``folder/name`` into the local file ``dest``."""

        def attempt() -> None:
            with open(dest, "wb") as out:
                self._download(folder, name, out, callback)

        self._call(attempt, "download", f"{folder}/{name}", callback)

    def download_to(self, folder: str, name: str, open_sink: Callable[[], S],
                    callback: Callback = NO_PROGRESS) -> S:
        """Stream ``folder/name`` into ``open_sink()``, a fresh sink for every attempt (a
        writable object with ``write`` and ``tell``), and return the last one. The caller
        checks what the sink received against its own hash."""

        def attempt() -> S:
            sink = open_sink()
            self._download(folder, name, sink, callback, checked=True)  # type: ignore[arg-type]
            return sink

        return self._call(attempt, "download", f"{folder}/{name}", callback)

    def read_range(self, folder: str, name: str, start: int, length: int,
                   version: str | None = None) -> bytes:
        """``length`` bytes of ``folder/name`` from byte ``start`` (fewer only where it ends
        sooner), in one ranged request; never more: an answer longer than asked (a server
        or proxy that ignored the range) is refused as soon as it exceeds it."""
        if length <= 0:
            return b""

        def attempt() -> bytes:
            sink = _RangeSink(length, f"{self.describe()}: {folder}/{name}")
            self._download_range(folder, name, start, length,
                                 sink, version)  # type: ignore[arg-type]
            return bytes(sink.data)

        return self._call(attempt, "read", f"{folder}/{name}")

    def delete(self, folder: str, name: str) -> None:
        """Remove ``folder/name``."""
        self._call(lambda: self._delete(folder, name), "delete", f"{folder}/{name}")

    def rename(self, folder: str, name: str, new_name: str) -> ObjectInfo | None:
        """Rename ``folder/name`` within its folder; returns the renamed object when the
        backend says it."""
        return self._call(lambda: self._rename(folder, name, new_name), "rename",
                          f"{folder}/{name}")

    def create_exclusive(self, folder: str, name: str, data: bytes) -> bool:
        """Store a small object only if none of that name exists; True if this call stored
        it. A retried call whose first attempt did store it still answers True: the content
        decides, so ``data`` should be unique to the caller (e.g. hold a run id)."""
        target = f"{folder}/{name}"
        if self._call(lambda: self._create_exclusive(folder, name, data), "create", target):
            return True
        try:
            return self.read_bytes(folder, name) == data
        except StorageNotFound:  # removed in between: the name is free again
            return self._call(lambda: self._create_exclusive(folder, name, data), "create", target)

    def read_bytes(self, folder: str, name: str) -> bytes:
        """A small object's content."""
        with self.fetched(folder, name) as path:
            return path.read_bytes()

    def write_bytes(self, folder: str, name: str, data: bytes) -> ObjectInfo | None:
        """Store a small object, all-or-nothing; returns what was stored when known."""
        with self.staged_upload(folder, name) as staged:
            staged.path.write_bytes(data)
        return staged.stored

    @contextlib.contextmanager
    def staged_upload(
        self, folder: str, name: str, callback: Callback = NO_PROGRESS
    ) -> Iterator[Staged]:
        """Yield a ``Staged`` whose path to write; on a clean exit it is stored as
        ``folder/name`` and ``stored`` says what the storage holds.

        On an exception nothing is stored. Backends that can write in place (the local
        folder) override this to avoid a copy.
        """
        with self._scratch_file(name) as path:
            staged = Staged(path)
            if not self.uploads_while_written:
                yield staged
                staged.stored = self.upload(path, folder, name, callback)
                return
            with GrowingFile(path) as growing, ThreadPoolExecutor(1) as pool:
                upload = pool.submit(self._upload_growing, growing, folder, name, callback)
                try:
                    yield staged
                except BaseException:
                    growing.abandon()  # the upload stops before its last chunk: nothing stored
                    upload.exception()
                    raise
                growing.complete()
                failed = upload.exception()
                if failed is None:
                    staged.stored = upload.result()
                else:
                    self._after_growing_failed(failed, f"{folder}/{name}")
                    # transient: once more, whole
                    staged.stored = self.upload(path, folder, name, callback)

    @contextlib.contextmanager
    def fetched(self, folder: str, name: str, callback: Callback = NO_PROGRESS) -> Iterator[Path]:
        """Yield a local, read-only path holding ``folder/name`` for the ``with`` block."""
        with self._scratch_file(name) as path:
            self.download(folder, name, path, callback)
            yield path

    def check(self, folder: str) -> None:
        """Raise a StorageError unless ``folder`` can be written, read and deleted."""
        probe = f".resutil-probe-{uuid.uuid4().hex[:8]}"
        self.write_bytes(folder, probe, b"resutil probe\n")
        try:
            if self.read_bytes(folder, probe) != b"resutil probe\n":
                raise StorageError(f"{self.describe()}: a probe file read back differently")
        finally:
            self.delete(folder, probe)

    # -- shared machinery ----------------------------------------------------------------
    @contextlib.contextmanager
    def _scratch_file(self, name: str) -> Iterator[Path]:
        base = self.settings.scratch_dir
        if base is not None:
            base.mkdir(parents=True, exist_ok=True)
            remove_dead_scratch(base)  # left by killed pushes and pulls on this host
        # The owner tag in the name tells the next command whether this file's process lives.
        fd, tmp = tempfile.mkstemp(prefix=scratch_prefix(".resutil"), suffix=f"-{name}", dir=base)
        os.close(fd)
        path = Path(tmp)
        try:
            yield path
        finally:
            path.unlink(missing_ok=True)

    def _call(
        self, fn: Callable[[], T], action: str, target: str, callback: Callback = NO_PROGRESS
    ) -> T:
        attempts = max(1, self.settings.retries + 1)
        log.debug("%s %s on %s", action, target, self.describe())
        for attempt in range(attempts):
            try:
                try:
                    return fn()
                except (ResutilError, Transient):
                    raise
                except Exception as exc:  # noqa: BLE001 - the backend classifies it
                    err = self._translate(exc, action, target)  # may raise Transient
                    if err is None:
                        raise
                    raise err from None
            except Transient as t:
                if attempt + 1 >= attempts:
                    raise t.error from None
                wait = self.settings.retry_wait * 2**attempt
                log.info("%s - retrying in %.1fs (attempt %d of %d)", t.error, wait, attempt + 2,
                         attempts)
                callback.message(f"{t.error} - retrying in {wait:.1f}s")
                time.sleep(wait)
        raise AssertionError("unreachable")


class GrowingFile:
    """A reader of a file that another thread is still writing.

    ``read(n)`` returns n bytes, waiting for the writer if needed, or fewer only at the
    end, which is known once the writer calls ``complete()``. After ``abandon()`` a read
    raises, so an upload stops before its final chunk and nothing is stored.
    """

    POLL = 0.002

    def __init__(self, path: Path) -> None:
        self.path = path
        self._f = open(path, "rb")  # noqa: SIM115 - closed by __exit__
        self._done = threading.Event()
        self._abandoned = False

    def wait(self, n: int) -> bool:
        """Wait until ``n`` bytes past the position are written or the writer is done;
        True if it is done (the file is complete)."""
        return self.wait_for_size(self._f.tell() + n if n >= 0 else -1)

    def wait_for_size(self, size: int) -> bool:
        """Wait until the file holds ``size`` bytes (-1: all) or the writer is done;
        True if it is done."""
        while True:
            if self._abandoned:
                raise OSError(errno.ECANCELED, "the file being uploaded was abandoned")
            if self._done.is_set():
                return True
            if size >= 0 and os.fstat(self._f.fileno()).st_size >= size:
                return False
            self._done.wait(self.POLL)

    def read(self, n: int = -1) -> bytes:
        self.wait(n)
        return self._f.read(n)

    def complete(self) -> None:
        self._done.set()

    def abandon(self) -> None:
        self._abandoned = True
        self._done.set()

    def tell(self) -> int:
        return self._f.tell()

    def seek(self, offset: int, whence: int = 0) -> int:
        return self._f.seek(offset, whence)

    def seekable(self) -> bool:
        return True

    def __enter__(self) -> GrowingFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self._f.close()


class _RangeSink:
    """Collects the answer to a ranged request; refuses more bytes than were asked for."""

    def __init__(self, length: int, label: str) -> None:
        self.data = bytearray()
        self.length = length
        self.label = label

    def write(self, data: bytes | memoryview) -> int:
        if len(self.data) + len(data) > self.length:
            raise StorageError(f"{self.label}: the storage answered a request for "
                               f"{self.length} bytes with more (it ignored the byte range)")
        self.data += data
        return len(data)

    def tell(self) -> int:
        return len(self.data)

    def flush(self) -> None:
        pass


def not_found(storage: Storage, folder: str, name: str) -> StorageNotFound:
    """The standard error for a missing object."""
    return StorageNotFound(f"{storage.describe()}: {folder}/{name} does not exist")
