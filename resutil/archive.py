"""Experiment archives: one standard zip per experiment, streamed both ways.

Writing never holds an archive in memory: small files are packed whole (``packer``), large
ones streamed with data descriptors, all through a hashing writer, so the archive hash and
every file's manifest hash come out of one pass. Incompressible files are stored,
compressible ones deflated at level 1.

Writing takes nothing from outside the experiment folder (links are followed only inside
it, see ``metadata.iter_files``) and stores no file torn: each one is read once, into the
buffers that are checksummed, hashed and written, and must still be the file the scan saw
once it is read, else the build fails naming it.

Archives are untrusted when read: extraction rejects any member that would land outside
the target folder, any CRC or size that does not hold, and archives that declare more
than the disk can take or more than deflate can encode, before writing anything.
"""

from __future__ import annotations

import contextlib
import errno
import mmap
import os
import queue
import stat
import struct
import zipfile
import zlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, Callable, Iterator

from .capture import STDERR_LOG, STDOUT_LOG
from .errors import ArchiveError
from .hashing import new_hasher
from .liveness import remove_dead_scratch
from .metadata import EXP_FILE, Manifest, iter_files
from .packer import (
    SAMPLE, STORED, FileChanged, Helper, Item, check_unchanged, choose_compression, facts_of,
    open_checked, pack, split, worth_a_helper,
)
from .progress import NO_PROGRESS, Callback
from .zipstream import (
    DEFLATED, DESCRIPTOR, InflateError, ZipStreamWriter, crc32, deflate_raw, inflate_raw, inflater,
    stamp_of,
)

CHUNK = 256 << 10  # larger buffers fall out of the CPU cache: 4 MiB was 3-4x slower here
_BUFFERS = 4  # chunks in flight between the reading and the writing thread of a large file
# resutil's own output logs, written in append mode by the run that may push a checkpoint
# while it prints: their first bytes (as much as the scan saw) are a consistent copy.
APPEND_ONLY = frozenset({STDOUT_LOG, STDERR_LOG})
DEFAULT_DEFLATE_LIMIT = 64 << 20
SMALL_FILE = 1 << 20
_U32 = 0xFFFFFFFF


@dataclass(frozen=True)
class ArchiveInfo:
    """What building an archive produced."""

    manifest: Manifest
    size: int
    hash: str
    # header offset -> compressed size of each member whose sizes follow its data
    described: dict[int, int] = field(default_factory=dict)


class _HashingWriter:
    """Hashes and counts everything written to the archive file."""

    def __init__(self, raw: BinaryIO) -> None:
        self.raw = raw
        self.hash = new_hasher()
        self.size = 0

    def write(self, data: bytes) -> int:
        self.raw.write(data)
        self.hash.update(data)
        n = len(data)
        self.size += n
        return n

    def flush(self) -> None:
        self.raw.flush()


def build_archive(
    folder: Path,
    out: BinaryIO,
    finish_meta: Callable[[Manifest], bytes] | None = None,
    callback: Callback = NO_PROGRESS,
    deflate_limit: int | None = DEFAULT_DEFLATE_LIMIT,
    scratch_dir: Path | None = None,
) -> ArchiveInfo:
    """Zip ``folder`` into ``out``; ``finish_meta(manifest)`` supplies the metadata file.

    Small files are packed whole, one share by this thread and, when there are many, one
    by a helper process (see ``packer``) into a segment file in ``scratch_dir`` (default:
    the system's temporary folder) that is appended after. Large files are streamed. The
    metadata file is written last so that it can carry the manifest of every other file,
    computed in the same pass. A file that cannot be read raises ArchiveError.
    """
    try:
        return _build(folder, out, finish_meta, callback, deflate_limit, scratch_dir)
    except FileChanged as e:
        raise ArchiveError(
            f"{e.rel} in {folder.name} changed while it was being archived; nothing was "
            "stored - wait for the writer to finish and push again"
        ) from None
    except OSError as e:
        where = os.fspath(e.filename) if e.filename else ""
        for base in (os.fspath(folder), os.path.realpath(folder)):
            if where.startswith(base + os.sep):
                break
        else:
            raise  # the archive's side (disk full, storage gone): the storage reports it
        rel = os.path.relpath(where, base)
        raise ArchiveError(
            f"cannot read {rel} in {folder.name}: {e.strerror or e}; nothing was stored "
            "- fix the file (or remove it) and try again"
        ) from None


def _build(folder: Path, out: BinaryIO, finish_meta: Callable[[Manifest], bytes] | None,
           callback: Callback, deflate_limit: int | None, scratch_dir: Path | None
           ) -> ArchiveInfo:
    if os.path.islink(folder):
        raise ArchiveError(
            f"{folder} is a symbolic link (to {os.path.realpath(folder)}); resutil archives "
            "only folders inside the results folder - move the folder there instead of "
            "linking it, and push again"
        )

    def refuse(rel: str, why: str) -> None:
        raise ArchiveError(
            f"{rel} in {folder.name} is a symbolic link that {why}; nothing was stored - "
            "replace it with a copy of what it should hold (or remove it) and push again"
        )

    if scratch_dir is not None:
        remove_dead_scratch(scratch_dir)  # segments of killed pushes on this host
    small: list[Item] = []
    large: list[tuple[str, str, os.stat_result]] = []
    total = small_size = 0
    helper: Helper | None = None
    scratch = None if scratch_dir is None else str(scratch_dir)
    for rel, path, st in iter_files(folder, refuse):
        if rel == EXP_FILE:
            continue
        total += st.st_size
        if st.st_size > SMALL_FILE:
            large.append((rel, path, st))
            continue
        small.append((rel, path, _mode(st), facts_of(st), rel in APPEND_ONLY))
        small_size += st.st_size
        if helper is None and worth_a_helper(len(small), small_size):
            helper = Helper(deflate_limit, scratch)  # it loads while the scan goes on
    callback.set_total(total)
    writer = _HashingWriter(out)
    zw = ZipStreamWriter(writer)  # type: ignore[arg-type]
    manifest: dict[str, tuple[int, str]] = {}
    mine, theirs = split(small)
    with helper if helper is not None else contextlib.nullcontext():
        if helper is not None:
            helper.send(theirs)
        _pack_here(zw, mine, deflate_limit, manifest, callback)
        done = helper.result() if helper is not None else None
        if done is not None:
            entries, hashed = done
            base = zw.pos
            with open(helper.segment, "rb") as seg:  # type: ignore[union-attr]
                size = os.fstat(seg.fileno()).st_size
                _, copied = _copy_in(seg.fileno(), size, out, writer, (), NO_PROGRESS)
            zw.appended(copied)
            zw.adopt(entries, base)
            _record(manifest, hashed, callback)
        elif theirs:  # no helper after all: pack its share here
            _pack_here(zw, theirs, deflate_limit, manifest, callback)
    for rel, path, st in large:
        manifest[rel] = _add_large(zw, writer, out, rel, path, st, deflate_limit, callback)
    man = Manifest(manifest)
    meta_bytes = finish_meta(man) if finish_meta else _existing(folder / EXP_FILE)
    if meta_bytes is not None:
        zw.add(EXP_FILE, stamp_of(None), 0o100644, DEFLATED, crc32(meta_bytes),
               len(meta_bytes), deflate_raw(meta_bytes))
    zw.close()
    writer.flush()
    described = {e[7]: e[5] for e in zw.entries if e[9] & DESCRIPTOR}
    return ArchiveInfo(man, writer.size, writer.hash.hexdigest(), described)


def _add_large(zw: ZipStreamWriter, writer: _HashingWriter, out: BinaryIO, rel: str, path: str,
               st: os.stat_result, deflate_limit: int | None, callback: Callback
               ) -> tuple[int, str]:
    """Stream one large file into the archive; (size, content hash) for the manifest."""
    facts, append_only = facts_of(st), rel in APPEND_ONLY
    size = st.st_size
    h = new_hasher()
    fd = open_checked(rel, path)
    try:
        method = choose_compression(rel, size, deflate_limit, os.pread(fd, SAMPLE, 0))
        if method == STORED and _has_fd(out):
            e = zw.begin_stream(rel, stamp_of(st.st_mtime), _mode(st), STORED)
            crc, n = _copy_in(fd, size, out, writer, (h.update,), callback)
            zw.appended(n)
            check_unchanged(rel, facts, fd, n, append_only)
            zw.end_stream(e, crc, n, n)
        else:
            chunks = _read_chunks(fd, size, h, callback)
            n, _ = zw.add_stream(rel, stamp_of(st.st_mtime), _mode(st), method, chunks)
            check_unchanged(rel, facts, fd, n, append_only)
    finally:
        os.close(fd)
    return n, h.hexdigest()


def _pack_here(zw: ZipStreamWriter, items: list, deflate_limit: int | None,
               manifest: dict, callback: Callback) -> None:
    base = zw.pos
    entries, hashed = pack(items, zw.write, deflate_limit)
    zw.adopt(entries, base)
    _record(manifest, hashed, callback)


def _record(manifest: dict, hashed: list, callback: Callback) -> None:
    total = 0
    for rel, size, digest in hashed:
        manifest[rel] = (size, digest)
        total += size
    callback.advance(total)


def _has_fd(out: BinaryIO) -> bool:
    try:
        out.fileno()
    except (AttributeError, OSError, ValueError):
        return False
    return True


def _copy_in(src_fd: int, size: int, out: BinaryIO, writer: _HashingWriter,
             updates: tuple, callback: Callback) -> tuple[int, int]:
    """Append up to ``size`` bytes of ``src_fd`` (from its position) to the archive; returns
    (CRC, bytes appended), fewer only if the file ended early.

    Each chunk is read once into a buffer that is checksummed, hashed (archive hash and
    ``updates``) and then written by a second thread, so the archive holds exactly the
    bytes its CRC and hash describe whatever another process does to the file meanwhile
    (a memory map of it would die of SIGBUS if the file were truncated)."""
    crc = done = 0
    if not _has_fd(out):  # an in-memory archive: one thread
        while done < size:
            chunk = os.read(src_fd, min(CHUNK, size - done))
            if not chunk:
                break
            crc = crc32(chunk, crc)
            for update in updates:
                update(chunk)
            writer.write(chunk)
            callback.advance(len(chunk))
            done += len(chunk)
        return crc, done
    out.flush()
    dst = out.fileno()
    free: queue.SimpleQueue = queue.SimpleQueue()
    full: queue.SimpleQueue = queue.SimpleQueue()
    for _ in range(_BUFFERS):
        free.put(bytearray(CHUNK))

    def drain() -> None:
        try:
            while (item := full.get()) is not None:
                _write_all(dst, memoryview(item[0])[:item[1]])
                free.put(item[0])
        except BaseException:
            free.put(None)  # wakes the reader; the error is raised below
            raise

    hashes = (writer.hash.update, *updates)
    with ThreadPoolExecutor(1) as pool:
        writing = pool.submit(drain)
        try:
            while done < size:
                buf = free.get()
                if buf is None:
                    break
                with memoryview(buf) as view:
                    n = os.readv(src_fd, [view[:min(CHUNK, size - done)]])
                    if n:
                        crc = crc32(view[:n], crc)
                        for update in hashes:
                            update(view[:n])
                if not n:
                    break
                full.put((buf, n))
                callback.advance(n)
                done += n
        finally:
            full.put(None)
        writing.result()
    out.seek(0, os.SEEK_END)
    writer.size += done
    return crc, done


def copy_range(src_fd: int, dst_fd: int, count: int, src_off: int, dst_off: int | None) -> None:
    """Copy ``count`` bytes between files in the kernel, falling back to read/write.

    ``dst_off=None`` writes at (and advances) the destination's file position.
    """
    done = 0
    while done < count:
        try:
            n = os.copy_file_range(src_fd, dst_fd, count - done, src_off + done,
                                   None if dst_off is None else dst_off + done)
        except (OSError, AttributeError) as e:
            if done or (isinstance(e, OSError) and e.errno not in _NO_COPY_RANGE):
                raise
            break  # not supported here (other filesystem, old kernel): copy by hand
        if n == 0:
            raise OSError(errno.EIO, "file shrank while it was being copied")
        done += n
    while done < count:
        data = os.pread(src_fd, min(CHUNK, count - done), src_off + done)
        if not data:
            raise OSError(errno.EIO, "file shrank while it was being copied")
        if dst_off is None:
            _write_all(dst_fd, data)
        else:
            written = 0
            while written < len(data):
                n = os.pwrite(dst_fd, memoryview(data)[written:], dst_off + done + written)
                if n <= 0:
                    raise OSError(errno.ENOSPC, "No space left on device")
                written += n
        done += len(data)


_NO_COPY_RANGE = {errno.EXDEV, errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP, errno.EBADF}


def _mode(st: os.stat_result) -> int:
    return stat.S_IMODE(st.st_mode) | stat.S_IFREG


def _read_chunks(fd: int, size: int, h, callback: Callback) -> Iterator[bytes]:
    """At most ``size`` bytes of ``fd`` (a file that grows is not read on forever)."""
    done = 0
    while done < size:
        chunk = os.read(fd, min(CHUNK, size - done))
        if not chunk:
            return
        h.update(chunk)
        callback.advance(len(chunk))
        done += len(chunk)
        yield chunk


def _existing(path: Path) -> bytes | None:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        return None


def safe_member_path(name: str) -> str:
    """The relative path a member may be extracted to, or ArchiveError if unsafe."""
    clean = name.replace("\\", "/")
    parts = clean.split("/")
    if (
        not clean
        or clean.startswith("/")
        or (len(clean) > 1 and clean[1] == ":")
        or ".." in parts
        or "\x00" in clean
    ):
        raise ArchiveError(f"archive member '{name}' points outside the experiment folder; refusing to extract")
    return "/".join(p for p in parts if p not in ("", "."))


def extract_archive(archive: Path, dest: Path, callback: Callback = NO_PROGRESS) -> int:
    """Extract a zip into the empty folder ``dest``, checking every path and CRC.

    Small members are read straight from a memory map and inflated by two worker threads;
    large ones are streamed. Returns the bytes written. Raises ArchiveError for a corrupt
    or unsafe archive; the caller removes ``dest`` then.
    """
    try:
        zf = zipfile.ZipFile(archive)
    except (zipfile.BadZipFile, OSError, ValueError) as e:
        raise ArchiveError(f"{archive.name} is not a readable zip archive ({e})") from None
    root = str(dest.resolve()) + os.sep
    with zf, open(archive, "rb") as raw:
        members = [i for i in zf.infolist() if not i.is_dir()]
        targets = {}
        for info in zf.infolist():
            rel = safe_member_path(info.filename)
            if stat.S_ISLNK(info.external_attr >> 16):
                raise ArchiveError(f"archive member '{info.filename}' is a symlink; refusing to extract")
            targets[info.filename] = root + rel
        for d in sorted({os.path.dirname(targets[i.filename]) for i in members} |
                        {targets[i.filename] for i in zf.infolist() if i.is_dir()}):
            os.makedirs(d, exist_ok=True)
        callback.set_total(sum(i.file_size for i in members))
        size = os.fstat(raw.fileno()).st_size
        mm = mmap.mmap(raw.fileno(), 0, access=mmap.ACCESS_READ) if size else None
        small = [i for i in members if i.compress_size <= SMALL_FILE and i.compress_type in (0, 8)]
        large = [i for i in members if not (i.compress_size <= SMALL_FILE and i.compress_type in (0, 8))]

        def work(batch: list) -> int:
            return sum(_extract_small(mm, i, targets[i.filename], archive.name) for i in batch)  # type: ignore[arg-type]

        written = 0
        try:
            with ThreadPoolExecutor(2) as pool:
                batches = [small[k:k + 256] for k in range(0, len(small), 256)]
                for n in pool.map(work, batches):
                    written += n
                    callback.advance(n)
            buf = bytearray(CHUNK)
            view = memoryview(buf)
            for info in large:
                if info.compress_type == zipfile.ZIP_STORED and mm is not None:
                    written += _extract_stored(mm, raw.fileno(), info, targets[info.filename],
                                               archive.name, callback)
                    _chmod(targets[info.filename], info)
                    continue
                try:
                    with zf.open(info) as src, open(targets[info.filename], "xb", buffering=0) as dst:
                        while n := src.readinto(buf):  # type: ignore[attr-defined]
                            _write_all(dst.fileno(), view[:n])
                            written += n
                            callback.advance(n)
                except (zipfile.BadZipFile, zlib.error, EOFError, NotImplementedError) as e:
                    raise ArchiveError(f"{archive.name} is corrupt at '{info.filename}' ({e})") from None
                except FileExistsError:
                    raise ArchiveError(f"{archive.name} holds '{info.filename}' twice") from None
                _chmod(targets[info.filename], info)
        finally:
            if mm is not None:
                mm.close()
    return written


def _data_offset(mm: mmap.mmap, info: zipfile.ZipInfo) -> int:
    """Where a member's data starts (after its local header); ValueError if malformed."""
    off = info.header_offset
    if mm[off:off + 4] != b"PK\x03\x04":
        raise ValueError("bad local header")
    name_len, extra_len = struct.unpack_from("<HH", mm, off + 26)
    start = off + 30 + name_len + extra_len
    if start + info.compress_size > len(mm):
        raise ValueError("member runs past the end of the archive")
    return start


def _extract_stored(mm: mmap.mmap, archive_fd: int, info: zipfile.ZipInfo, target: str,
                    label: str, callback: Callback) -> int:
    """A large stored member: the kernel copies it while this thread checks its CRC."""
    try:
        start = _data_offset(mm, info)
    except (ValueError, struct.error) as e:
        raise ArchiveError(f"{label} is corrupt at '{info.filename}' ({e})") from None
    fd = _create(target, info.filename, label)
    size = info.file_size
    crc = 0
    try:
        with ThreadPoolExecutor(1) as pool, memoryview(mm) as mv:
            copying = pool.submit(copy_range, archive_fd, fd, size, start, 0)
            for off in range(start, start + size, CHUNK):
                chunk = mv[off:min(off + CHUNK, start + size)]
                crc = crc32(chunk, crc)
                callback.advance(len(chunk))
                chunk.release()
            copying.result()
    finally:
        os.close(fd)
    if crc != info.CRC or info.compress_size != size:
        raise ArchiveError(f"{label} is corrupt at '{info.filename}' (CRC mismatch)")
    return size


def _extract_small(mm: mmap.mmap, info: zipfile.ZipInfo, target: str, label: str) -> int:
    try:
        start = _data_offset(mm, info)
        payload = mm[start:start + info.compress_size]
        data = inflate_raw(payload) if info.compress_type == 8 else payload
        if len(data) != info.file_size or crc32(data) != info.CRC:
            raise ValueError("CRC or size mismatch")
    except (ValueError, zlib.error, InflateError, struct.error) as e:
        raise ArchiveError(f"{label} is corrupt at '{info.filename}' ({e})") from None
    fd = _create(target, info.filename, label)
    try:
        _write_all(fd, data)
    finally:
        os.close(fd)
    _chmod(target, info)
    return len(data)


def _write_all(fd: int, data: bytes | memoryview) -> None:
    """Write every byte: ``os.write`` may write less (a full disk reports it only on the
    next call), which would leave a silently truncated file."""
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        if n <= 0:
            raise OSError(28, "No space left on device")  # ENOSPC
        view = view[n:]


def _chmod(target: str, info: zipfile.ZipInfo) -> None:
    _apply_mode(target, info.external_attr >> 16)


def _apply_mode(target: str, mode: int) -> None:
    """A member's permission bits (a zip's external attributes >> 16), kept user-writable."""
    mode &= 0o777
    if mode and mode != 0o644:
        os.chmod(target, mode | 0o600)


def _create(target: str, name: str, label: str) -> int:
    """Open a new file for a member; a second member of the same name is an error."""
    try:
        return os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    except FileExistsError:
        raise ArchiveError(f"{label} holds '{name}' twice") from None


def hash_mismatch(label: str) -> ArchiveError:
    """The error for an archive that is not the one its sidecar recorded."""
    return ArchiveError(
        f"{label} on the remote does not match its recorded hash (corrupt, or its push was "
        "interrupted); push it again from a machine that has it"
    )


class LocalWriteError(ArchiveError):
    """Writing an extracted file failed (disk full, permissions): ``oserror`` says why."""

    def __init__(self, oserror: OSError) -> None:
        super().__init__(str(oserror))
        self.oserror = oserror


_LOCAL_HEADER = struct.Struct("<4sHHHHHIIIHH")
_CENTRAL_HEADER = struct.Struct("<4sHHHHHHIIIHHHHHII")
_SIG_LOCAL, _SIG_CENTRAL = b"PK\x03\x04", b"PK\x01\x02"
_SIG_END = (b"PK\x05\x06", b"PK\x06\x06")


class NotStreamable(ArchiveError):
    """The sidecar lacks what extracting during the download needs: fetch, then extract."""


class StreamExtractor:
    """A write-only sink that extracts a zip into the empty folder ``dest`` as its bytes
    arrive, so a pull writes every file once, straight from the download.

    ``facts()`` gives (the archive's recorded hash, the layout: header offset -> compressed
    size of each member whose sizes follow its data), both from the sidecar; it is called
    at the first byte, so the sidecar can be fetched while the download starts. Without a
    hash, or without the layout when a member needs it, writing raises NotStreamable.

    Members are found by their local headers in file order. The central directory at the
    end is kept, to apply file modes and to check that every member was seen. Nothing is
    CRC-checked on the way: ``finish()`` compares the hash of every byte received with the
    recorded archive hash instead.
    """

    def __init__(self, dest: Path, facts: Callable[[], tuple[str | None, dict[int, int] | None]],
                 label: str) -> None:
        self.root = str(dest.resolve()) + os.sep
        self.facts = facts
        self.expected: str | None = None
        self.described: dict[int, int] | None = None
        self.label = label
        self.hash = new_hasher()
        self.pos = 0  # bytes received (and handed on)
        self.at = 0  # offset of the next byte to parse
        self.state = "header"
        self.need = 4
        self.buf = bytearray()
        self.tail = bytearray()
        self.fd = -1
        self.remaining = 0
        self.inflater = None
        self.member = ("", 0, 0, 0)  # name, flags, expected size, start offset
        self.written = 0
        self.total = 0
        self.names: list[str] = []
        self.dirs: set[str] = set()

    # -- the file-like side ----------------------------------------------------------------
    def write(self, data: bytes) -> int:
        if self.expected is None:
            self.expected, self.described = self.facts()
            if self.expected is None:  # nothing to check the bytes against: use the CRCs
                raise NotStreamable(f"{self.label} has no recorded hash")
        n = len(data)
        self.hash.update(data)
        view = memoryview(data)
        try:
            while view:
                if self.state == "data":
                    take = min(self.remaining, len(view))
                    self._data(view[:take])
                    view = view[take:]
                    self.at += take
                    self.remaining -= take
                    if not self.remaining:
                        self._end_data()
                elif self.state == "tail":
                    self.tail += view
                    self.at += len(view)
                    break
                else:
                    take = min(self.need - len(self.buf), len(view))
                    self.buf += view[:take]
                    view = view[take:]
                    self.at += take
                    if len(self.buf) == self.need:
                        self._parse()
        except OSError as e:
            self._close_member()
            raise LocalWriteError(e) from None
        except ArchiveError:
            self._close_member()
            raise
        self.pos += n
        return n

    def tell(self) -> int:
        return self.pos

    def flush(self) -> None:
        pass

    def seek(self, *args: object) -> int:
        raise OSError(errno.ESPIPE, "an extracting download cannot seek; start over")

    truncate = seek

    def finish(self) -> int:
        """Check the archive was whole and is the one recorded; returns the bytes written."""
        self._close_member()
        if self.expected is None:  # not one byte arrived
            raise ArchiveError(f"{self.label} on the remote is empty")
        if self.hash.hexdigest() != self.expected:
            raise hash_mismatch(self.label)
        if self.state != "tail":
            raise ArchiveError(f"{self.label} ends in the middle of a member")
        listed = self._central_directory()
        if sorted(listed) != sorted(self.names):
            raise ArchiveError(f"{self.label}: its members and its central directory disagree")
        return self.total

    # -- parsing -------------------------------------------------------------------------
    def _bad(self, why: str) -> ArchiveError:
        return ArchiveError(f"{self.label} is corrupt at byte {self.at} ({why})")

    def _parse(self) -> None:
        buf = self.buf
        if self.state == "descriptor":
            if buf[:4] != b"PK\x07\x08" or struct.unpack_from("<Q", buf, 16)[0] != self.written:
                raise self._bad("bad data descriptor")
            self._next_header()
            return
        if len(buf) == 4:  # which record comes next
            if buf == _SIG_LOCAL:
                self.need = 30
            elif buf == _SIG_CENTRAL or bytes(buf) in _SIG_END:
                self.state = "tail"
                self.tail += buf
            else:
                raise self._bad("no local header where one should start")
            return
        _, _, flags, method, _, _, _, csize, usize, name_len, extra_len = _LOCAL_HEADER.unpack_from(buf)
        if len(buf) == 30 and name_len + extra_len:
            self.need = 30 + name_len + extra_len
            return
        start = self.at - len(buf)
        raw_name = bytes(buf[30:30 + name_len])
        name = raw_name.decode("utf-8" if flags & 0x800 else "cp437")
        if flags & 0x1:
            raise ArchiveError(f"{self.label}: '{name}' is encrypted; resutil cannot extract it")
        if flags & 0x8:
            if self.described is None:
                raise NotStreamable(f"{self.label}: no layout recorded for '{name}'")
            if start not in self.described:
                raise ArchiveError(f"{self.label}: the size of '{name}' is not recorded")
            csize, usize = self.described[start], -1
        elif csize == _U32 or usize == _U32:
            usize, csize = _zip64_sizes(bytes(buf[30 + name_len:]), usize, csize)
        if method not in (0, 8):
            raise ArchiveError(f"{self.label}: '{name}' uses compression method {method}, "
                               "which resutil cannot extract")
        rel = safe_member_path(name)
        target = self.root + rel
        self.buf = bytearray()
        self.member = (name, flags, usize, start)
        self.written = 0
        if name.endswith("/"):
            os.makedirs(target, exist_ok=True)
            self.dirs.add(name)
            self.names.append(name)
            self.remaining = csize
            self.inflater = None
        else:
            parent = os.path.dirname(target)
            if parent not in self.dirs:
                os.makedirs(parent, exist_ok=True)
                self.dirs.add(parent)
            self.fd = _create(target, name, self.label)
            self.names.append(name)
            self.inflater = inflater() if method == 8 else None
            self.remaining = csize
        self.state = "data"
        if not csize:
            self._end_data()

    def _data(self, chunk: memoryview) -> None:
        if self.fd < 0:
            if len(chunk):
                raise self._bad("a folder entry with content")
            return
        if self.inflater is not None:
            try:
                out = self.inflater.decompress(chunk)
            except (zlib.error, InflateError) as e:
                raise self._bad(str(e)) from None
            _write_all(self.fd, out)
            self.written += len(out)
        else:
            _write_all(self.fd, chunk)
            self.written += len(chunk)

    def _end_data(self) -> None:
        name, flags, usize, _ = self.member
        if self.inflater is not None:
            if not self.inflater.eof:
                raise self._bad(f"'{name}' is truncated")
            self.inflater = None
        self._close_member()
        self.total += self.written
        if flags & 0x8:
            self.state, self.need = "descriptor", 24
        else:
            if self.written != usize:
                raise self._bad(f"'{name}' has the wrong size")
            self._next_header()

    def _next_header(self) -> None:
        self.buf = bytearray()
        self.state, self.need = "header", 4

    def _close_member(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def _central_directory(self) -> list[str]:
        """Member names from the central directory; applies modes, refuses symlinks."""
        names = []
        tail, off = self.tail, 0
        while tail[off:off + 4] == _SIG_CENTRAL:
            fields = _CENTRAL_HEADER.unpack_from(tail, off)
            name_len, extra_len, comment_len, external = fields[10], fields[11], fields[12], fields[15]
            raw = bytes(tail[off + 46:off + 46 + name_len])
            name = raw.decode("utf-8" if fields[3] & 0x800 else "cp437")
            mode = external >> 16
            if stat.S_ISLNK(mode):
                raise ArchiveError(f"archive member '{name}' is a symlink; refusing to extract")
            if not name.endswith("/"):
                _apply_mode(self.root + safe_member_path(name), mode)
            names.append(name)
            off += 46 + name_len + extra_len + comment_len
        return names


def _zip64_sizes(extra: bytes, usize: int, csize: int) -> tuple[int, int]:
    """(usize, csize) from a local header's zip64 extra field."""
    off = 0
    while off + 4 <= len(extra):
        tag, size = struct.unpack_from("<HH", extra, off)
        if tag == 1:
            values = list(struct.unpack_from(f"<{size // 8}Q", extra, off + 4))
            if usize == _U32 and values:
                usize = values.pop(0)
            if csize == _U32 and values:
                csize = values.pop(0)
            break
        off += 4 + size
    return usize, csize
