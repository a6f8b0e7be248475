"""A folder as storage: a NAS mount, a shared disk, or any local path (the default)."""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from ..errors import (
    StorageChanged,
    StorageError,
    StorageNotFound,
    StoragePermission,
    StorageUnavailable,
)
from ..liveness import Owner
from ..progress import NO_PROGRESS, Callback, copy_stream
from .base import ObjectInfo, Staged, Storage, StorageSettings, not_found

PART_MARK = ".part-"
# A part file of another host's push, untouched this long, was left by a killed push
# (this host's are removed as soon as their writer is dead).
STALE_PART_AGE = 3600.0
CLEAN_EVERY = 60.0  # seconds between two searches of one folder for such part files


def _version(st: os.stat_result) -> str:
    # A replaced file is a new inode (the rename of a part file); mtime and size guard
    # against inode reuse after a delete.
    return f"{st.st_ino}-{st.st_mtime_ns}-{st.st_size}"


def _info(name: str, st: os.stat_result) -> ObjectInfo:
    return ObjectInfo(name, st.st_size, st.st_mtime, _version(st))


class LocalStorage(Storage):
    """Files under ``storage_config.path``; writes go to a hidden part file, then rename."""

    type_name = "local"
    max_workers = 4
    writes_in_place = True

    def __init__(self, settings: StorageSettings) -> None:
        super().__init__(settings)
        self.root = settings.path("path")  # type: ignore[assignment]
        # On a local disk, transfers in parallel threads only contend (for the interpreter
        # and the folders' locks): 1,000 small experiments push in 0.45 s one at a time,
        # 0.66 s four at a time. A network mount waits for round trips: there they overlap.
        if not _network_mount(str(self.root)):
            self.max_workers = 1  # type: ignore[misc]
        self._cleaned: dict[str, float] = {}  # folder -> when its part files were cleaned

    def describe(self) -> str:
        return str(self.root)

    def _folder(self, folder: str) -> Path:
        if not self.root.is_dir():
            raise StorageUnavailable(
                f"storage folder {self.root} does not exist or is not mounted; "
                "mount it or fix storage_config.path"
            )
        return self.root / folder

    def _list(self, folder: str) -> list[ObjectInfo]:
        out = []
        try:
            with os.scandir(self._folder(folder)) as it:
                for entry in it:
                    if entry.name.startswith(".") or not entry.is_file():
                        continue
                    out.append(_info(entry.name, entry.stat()))
        except FileNotFoundError:
            return []
        return out

    def stat(self, folder: str, name: str) -> ObjectInfo | None:
        try:
            st = (self._folder(folder) / name).stat()
        except FileNotFoundError:
            return None
        except OSError as e:
            raise self._os_error(e, "read", f"{folder}/{name}") from None
        return _info(name, st)

    @contextlib.contextmanager
    def staged_upload(
        self, folder: str, name: str, callback: Callback = NO_PROGRESS
    ) -> Iterator[Staged]:
        # Written in place under a hidden name and renamed: no second copy of the archive.
        d, part = self._part(folder, name)
        try:
            staged = Staged(part)
            yield staged
            st = os.stat(part)  # a rename keeps inode and mtime: this is the stored version
            os.replace(part, d / name)
            staged.stored = _info(name, st)
        except OSError as e:
            raise self._os_error(e, "write", f"{folder}/{name}") from None
        finally:
            try:
                part.unlink(missing_ok=True)
            except OSError:
                pass  # e.g. a read-only mount (EROFS even for a missing file): keep the real error

    def _part(self, folder: str, name: str) -> tuple[Path, Path]:
        """The folder and a fresh hidden part file name, owned by this process."""
        try:
            d = self._folder(folder)
            d.mkdir(exist_ok=True)
        except OSError as e:
            raise self._os_error(e, "write", folder) from None
        now = time.monotonic()
        if now - self._cleaned.get(folder, -STALE_PART_AGE) > CLEAN_EVERY:
            self._cleaned[folder] = now  # (a scan of the folder: not before every write)
            _remove_stale_parts(d)
        return d, d / f".{name}{PART_MARK}{Owner.current().tag}-{uuid.uuid4().hex[:8]}"

    def _create_exclusive(self, folder: str, name: str, data: bytes) -> bool:
        # Written whole under a hidden name, then linked: link() fails if the name exists,
        # so the object appears complete or not at all, and only once.
        d, part = self._part(folder, name)
        try:
            part.write_bytes(data)
            os.link(part, d / name)
            return True
        except FileExistsError:
            return False
        finally:
            with contextlib.suppress(OSError):
                part.unlink()

    @contextlib.contextmanager
    def fetched(self, folder: str, name: str, callback: Callback = NO_PROGRESS) -> Iterator[Path]:
        path = self._folder(folder) / name
        if not path.is_file():
            raise not_found(self, folder, name)
        yield path

    def _upload(self, src: Path, folder: str, name: str, callback: Callback) -> ObjectInfo | None:
        callback.set_total(src.stat().st_size)
        with self.staged_upload(folder, name, callback) as staged:
            with open(src, "rb") as fi, open(staged.path, "wb") as fo:
                copy_stream(fi, fo, callback)
        return staged.stored

    def _download(self, folder: str, name: str, out: BinaryIO, callback: Callback,
                  checked: bool = False) -> None:
        src = self._folder(folder) / name
        try:
            callback.set_total(src.stat().st_size)
            with open(src, "rb") as fi:
                copy_stream(fi, out, callback)
        except FileNotFoundError:
            raise not_found(self, folder, name) from None

    def _download_range(self, folder: str, name: str, start: int, length: int, out: BinaryIO,
                        version: str | None = None) -> None:
        try:
            fd = os.open(self._folder(folder) / name, os.O_RDONLY)
        except FileNotFoundError:
            raise not_found(self, folder, name) from None
        try:
            # The version names the inode, mtime and size: a file replaced since the
            # listing (renamed over) is another inode; reading stays on this one.
            if version is not None and _version(os.fstat(fd)) != version:
                raise StorageChanged(f"{self.root}/{folder}/{name} changed since it was "
                                     "listed; try again")
            done = 0
            while done < length:
                chunk = os.pread(fd, min(length - done, 1 << 20), start + done)
                if not chunk:
                    break
                out.write(chunk)
                done += len(chunk)
        finally:
            os.close(fd)

    def _delete(self, folder: str, name: str) -> None:
        try:
            (self._folder(folder) / name).unlink()
        except FileNotFoundError:
            raise not_found(self, folder, name) from None

    def _rename(self, folder: str, name: str, new_name: str) -> ObjectInfo | None:
        d = self._folder(folder)
        try:
            st = os.stat(d / name)
            os.replace(d / name, d / new_name)
        except FileNotFoundError:
            raise not_found(self, folder, name) from None
        return _info(new_name, st)

    def _translate(self, exc: BaseException, action: str, target: str) -> StorageError | None:
        if isinstance(exc, OSError):
            return self._os_error(exc, action, target)
        return super()._translate(exc, action, target)

    def _os_error(self, e: OSError, action: str, target: str) -> StorageError:
        where = f"{self.root}/{target}"
        if isinstance(e, FileNotFoundError):
            return StorageNotFound(f"{where} does not exist")
        if isinstance(e, PermissionError) or e.errno == errno.EROFS:
            return StoragePermission(
                f"cannot {action} {where}: the storage folder is read-only or not yours; "
                "fix its permissions or choose another path"
            )
        if e.errno in (errno.ENOSPC, errno.EDQUOT):
            local = self._local_disk_ran_out(e)
            if local is not None:
                return StorageError(
                    f"no space left on the local disk at {local} (not on the storage, "
                    f"{self.root}) while storing {target}; free some space there and try again"
                )
            return StorageError(f"cannot {action} {where}: no space left on the storage")
        return StorageUnavailable(f"cannot {action} {where}: {e.strerror or e}")

    def _local_disk_ran_out(self, e: OSError) -> Path | None:
        """Where the local disk is mounted if a full disk error came from it, not from the
        storage. A push writes the archive on the storage but the finished metadata (and any
        scratch file) beside the results; an error from ``write()`` names no file, so then
        the disk with less room left (measured before the partial archive is removed) is
        the one that ran out."""
        local = self.settings.scratch_dir  # on the results folder's disk
        failed = e.filename or e.filename2
        root = self.root
        if root is None:
            return None
        try:
            storage_dev = os.stat(root).st_dev
            if failed:
                path = _existing(Path(os.fsdecode(failed)))
                return None if os.stat(path).st_dev == storage_dev else _mount_point(path)
            if local is None:
                return None
            path = _existing(local)
            if os.stat(path).st_dev == storage_dev or _room(path) >= _room(root):
                return None
            return _mount_point(path)
        except (OSError, AttributeError):  # (no statvfs on Windows)
            return None


NETWORK_FILE_SYSTEMS = ("nfs", "nfs4", "cifs", "smb3", "smbfs", "9p", "afs", "ceph",
                        "glusterfs", "lustre", "gpfs", "beegfs", "fuse.")  # fuse.sshfs, ...


def _network_mount(path: str) -> bool:
    """Whether ``path`` (absolute) lies on a network file system, by /proc/self/mounts;
    nothing is stat'ed (a dead mount must not hang a command). True when unknown."""
    try:
        with open("/proc/self/mounts", encoding="utf-8", errors="replace") as f:
            mounts = [line.split()[1:3] for line in f if len(line.split()) > 2]
    except OSError:
        return True
    path = os.path.normpath(os.path.abspath(path))
    best, kind = "", ""
    for point, fs in mounts:
        point = point.replace("\\040", " ")
        if (path == point or path.startswith(point.rstrip("/") + "/")) and len(point) >= len(best):
            best, kind = point, fs
    return kind.startswith(NETWORK_FILE_SYSTEMS) if best else True


def _existing(path: Path) -> Path:
    """``path`` or its nearest ancestor that exists."""
    path = path.absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def _room(path: Path) -> int:
    """Bytes this process may still write on the file system of ``path``."""
    st = os.statvfs(path)
    root = getattr(os, "geteuid", lambda: -1)() == 0  # root may use the reserved blocks
    return (st.f_bfree if root else st.f_bavail) * st.f_frsize


def _mount_point(path: Path) -> Path:
    """The folder the file system holding ``path`` is mounted at."""
    path = path.resolve()
    dev = os.stat(path).st_dev
    while path != path.parent and os.stat(path.parent).st_dev == dev:
        path = path.parent
    return path


def _remove_stale_parts(folder: Path) -> None:
    """Delete part files of killed pushes: at once when their writer (named in the part's
    name) was a process of this host that is gone, else when untouched for an hour."""
    cutoff = time.time() - STALE_PART_AGE
    try:
        with os.scandir(folder) as it:
            for entry in it:
                if not (entry.name.startswith(".") and PART_MARK in entry.name):
                    continue
                owner = Owner.parse(entry.name.rsplit(PART_MARK, 1)[1].rsplit("-", 1)[0])
                alive = owner.alive() if owner else None
                with contextlib.suppress(OSError):
                    if alive is False or (alive is None and entry.stat().st_mtime < cutoff):
                        os.unlink(entry.path)
    except OSError:
        pass  # cleaning up is best effort


def remove_tree(path: Path) -> None:
    """Delete a folder tree (used to clean partial downloads)."""
    shutil.rmtree(path, ignore_errors=True)
