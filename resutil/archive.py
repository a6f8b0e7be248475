"""Experiment archives: one standard zip per experiment, streamed both ways.

Writing never holds an archive in memory: small files are packed whole (``packer``), large
ones streamed with data descriptors, all through a hashing writer, so the archive hash and
every file's manifest hash come out of one pass. Incompressible files are stored,
compressible ones deflated at level 1.

Writing takes nothing from outside the experiment folder (links are followed only inside
it, see ``metadata.iter_files``) and stores no file torn: each one must still be the file
the scan saw (size, times, inode) once it is read, else the build fails naming it. No
file is memory-mapped: a writer truncating it would kill the process with SIGBUS.

Archives are untrusted when read: extraction rejects any member that would land outside
the target folder, any CRC or size that does not hold, and archives that declare more
than the disk can take or more than deflate can encode, before writing anything.
"""

from __future__ import annotations

import contextlib
import errno
import os
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
from .metadata import _MANIFEST_MARK as MANIFEST_MARK
from .metadata import EXP_FILE, MAX_HEAD_BYTES, Manifest, iter_files
from .packer import (
    SAMPLE, STORED, FileChanged, Helper, Item, check_unchanged, choose_compression, facts_of,
    open_checked, pack, split, worth_a_helper,
)
from .progress import NO_PROGRESS, Callback
from .zipstream import (
    DEFLATED, DESCRIPTOR, InflateError, ZipStreamWriter, crc32, data_offset, deflate_raw,
    inflater, stamp_of,
)

CHUNK = 256 << 10  # larger buffers fall out of the CPU cache: 4 MiB was 3-4x slower here
# resutil's own output logs, written in append mode by the run that may push a checkpoint
# while it prints: their first bytes (as much as the scan saw) are a consistent copy.
APPEND_ONLY = frozenset({STDOUT_LOG, STDERR_LOG})
DEFAULT_DEFLATE_LIMIT = 64 << 20
SMALL_FILE = 1 << 20
_BATCH_BYTES = 8 << 20  # most archive bytes read at once for a batch of small members
# Deflate encodes at most 258 bytes in 2 bits: an archive that declares more per byte lies.
# (All-zero files reach 1030:1 with ISA-L level 1 and zlib alike, so no lower bound.)
MAX_RATIO = 1032
META_LIMIT = MAX_HEAD_BYTES  # of resutil-exp.yaml before its manifest, as for local files
INFLATE_STEP = 4 << 20  # most bytes one inflate call may produce while streaming
_U32 = 0xFFFFFFFF


@dataclass(frozen=True)
class ArchiveInfo:
    """What building an archive produced."""

    manifest: Manifest
    size: int
    hash: str
    # header offset -> compressed size of each member whose sizes follow its data
    described: dict[int, int] = field(default_factory=dict)
    # [name, data offset, compressed size, size, method, CRC] of every member, in order:
    # where a reader of one member finds it (see zipread.Member)
    members: list[list] = field(default_factory=list)


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
    computed in the same pass. ArchiveError, naming the file, for a file that cannot be
    read, a link out of the folder (see ``metadata.iter_files``) and a file that changed
    while it was archived; ``folder`` itself may not be a link.
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
        small.append((rel, path, stat.S_IMODE(st.st_mode) | stat.S_IFREG,
                      (st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino, st.st_dev),
                      rel in APPEND_ONLY))  # facts_of(st), inline: once per file
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
    members = [[e[0].decode("utf-8"), data_offset(e), e[5], e[6], e[1], e[4]]
               for e in zw.entries]
    return ArchiveInfo(man, writer.size, writer.hash.hexdigest(), described, members)


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
            check_unchanged(rel, facts, os.fstat(fd), n, append_only)
            zw.end_stream(e, crc, n, n)
        else:
            chunks = _read_chunks(fd, size, h, callback)
            n, _ = zw.add_stream(rel, stamp_of(st.st_mtime), _mode(st), method, chunks)
            check_unchanged(rel, facts, os.fstat(fd), n, append_only)
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
    """Append up to ``size`` bytes of ``src_fd`` (from offset 0) to the archive, also
    through the archive hash and ``updates``; returns (CRC, bytes appended), fewer only if
    the file ended early."""
    if not _has_fd(out):  # an in-memory archive: copy by hand
        crc = done = 0
        while done < size:
            chunk = os.pread(src_fd, min(CHUNK, size - done), done)
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
    crc, done = _copy(src_fd, 0, size, out.fileno(), (writer.hash.update, *updates), callback)
    out.seek(0, os.SEEK_END)
    writer.size += done
    return crc, done


def _copy(src_fd: int, offset: int, count: int, dst_fd: int, updates: tuple,
          callback: Callback) -> tuple[int, int]:
    """Copy ``count`` bytes of ``src_fd`` from ``offset`` to the position of ``dst_fd``:
    the kernel copies them (copy_file_range) while this thread reads the same bytes for
    the CRC and ``updates``. Returns (CRC, bytes copied), fewer only if the source ended.

    Read with pread, not through a memory map: a source truncated meanwhile (a checkpoint
    being rewritten, an archive replaced in place) would kill the process with SIGBUS. A
    source that changes meanwhile is the caller's to detect (the push compares its stat).
    Writing from this thread's buffers instead was as fast for 700 MB, but 1.5-2x slower
    and erratic for 2 GB of new files on this VM."""
    crc = done = 0
    buf = bytearray(CHUNK)
    with ThreadPoolExecutor(1) as pool, memoryview(buf) as view:
        copying = pool.submit(copy_range, src_fd, dst_fd, count, offset, None)
        while done < count:
            n = os.preadv(src_fd, [view[:min(CHUNK, count - done)]], offset + done)
            if not n:
                break
            chunk = view[:n]
            crc = crc32(chunk, crc)
            for update in updates:
                update(chunk)
            chunk.release()
            callback.advance(n)
            done += n
        copied = copying.result()
    return crc, min(done, copied)


def copy_range(src_fd: int, dst_fd: int, count: int, src_off: int, dst_off: int | None) -> int:
    """Copy ``count`` bytes between files in the kernel, falling back to read/write;
    returns the bytes copied, fewer only if the source ended.

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
            return done  # the source ended early
        done += n
    while done < count:
        data = os.pread(src_fd, min(CHUNK, count - done), src_off + done)
        if not data:
            return done
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
    return done


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


def check_declared(label: str, name: str, method: int, csize: int, usize: int) -> None:
    """ArchiveError unless a member's declared sizes can be true: a stored member is as
    large as its data, a deflated one at most MAX_RATIO times (deflate cannot encode more)."""
    if method == STORED and csize != usize:
        raise ArchiveError(f"{label} is corrupt at '{name}' (stored, yet its sizes differ)")
    if method == DEFLATED and usize > MAX_RATIO * max(csize, 1):
        raise ArchiveError(
            f"{label} declares {_size_text(usize)} for '{name}' from {_size_text(csize)} of "
            f"deflated data, more than deflate can encode ({MAX_RATIO}:1): its headers lie; "
            "refusing to extract it - push it again from a machine that has it"
        )


def free_space(folder: str | Path) -> tuple[int, int]:
    """(bytes free to this user, block size) on the file system of ``folder``."""
    st = os.statvfs(folder)
    block = st.f_frsize or st.f_bsize or 4096
    return st.f_bavail * block, block


def _space_error(label: str, need: int, free: int) -> ArchiveError:
    return ArchiveError(
        f"no space left for {label}: it needs {_size_text(need)}, the results folder's "
        f"disk has {_size_text(free)} free; nothing was kept - free some space and pull again"
    )


def _size_text(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if n < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n} B"


def extract_archive(archive: Path, dest: Path, callback: Callback = NO_PROGRESS) -> int:
    """Extract a zip into the empty folder ``dest``, checking every path, size and CRC.

    Before writing anything, the declared sizes must be possible (``check_declared``) and
    fit the free space; no member is ever inflated past its declared size. Small members
    are read in batches and inflated by two worker threads; large ones are streamed.
    Returns the bytes written. Raises ArchiveError for a corrupt, unsafe or oversized
    archive; the caller removes ``dest`` then.
    """
    label = archive.name
    try:
        zf = zipfile.ZipFile(archive)
    except (zipfile.BadZipFile, OSError, ValueError) as e:
        raise ArchiveError(f"{label} is not a readable zip archive ({e})") from None
    root = str(dest.resolve()) + os.sep
    with zf, open(archive, "rb") as raw:
        members = [i for i in zf.infolist() if not i.is_dir()]
        targets = {}
        for info in zf.infolist():
            rel = safe_member_path(info.filename)
            if stat.S_ISLNK(info.external_attr >> 16):
                raise ArchiveError(f"archive member '{info.filename}' is a symlink; refusing to extract")
            targets[info.filename] = root + rel
        for info in members:
            check_declared(label, info.filename, info.compress_type, info.compress_size,
                           info.file_size)
        free, block = free_space(dest)
        need = sum(-(-i.file_size // block) * block for i in members)
        if need > free:
            raise _space_error(label, need, free)
        top = root.rstrip(os.sep)
        for d in sorted({os.path.dirname(targets[i.filename]) for i in members} |
                        {targets[i.filename] for i in zf.infolist() if i.is_dir()}):
            if d.rstrip(os.sep) != top:  # (dest itself exists)
                os.makedirs(d, exist_ok=True)
        callback.set_total(sum(i.file_size for i in members))
        fd = raw.fileno()
        size = os.fstat(fd).st_size
        small = [i for i in members if i.compress_size <= SMALL_FILE and i.compress_type in (0, 8)]
        large = [i for i in members if not (i.compress_size <= SMALL_FILE and i.compress_type in (0, 8))]

        def work(batch: list) -> int:
            return _extract_batch(fd, size, batch, targets, label)

        written = 0
        batches = [small[k:k + 256] for k in range(0, len(small), 256)]
        if len(batches) == 1:  # (threads would cost more than they save)
            written = work(batches[0])
            callback.advance(written)
        elif batches:
            with ThreadPoolExecutor(2) as pool:
                for n in pool.map(work, batches):
                    written += n
                    callback.advance(n)
        buf = bytearray(CHUNK)
        view = memoryview(buf)
        for info in large:
            if info.compress_type == zipfile.ZIP_STORED:
                written += _extract_stored(fd, size, info, targets[info.filename], label, callback)
                _chmod(targets[info.filename], info)
                continue
            try:  # zipfile stops at the declared size and checks the CRC
                with zf.open(info) as src, open(targets[info.filename], "xb", buffering=0) as dst:
                    while n := src.readinto(buf):  # type: ignore[attr-defined]
                        _write_all(dst.fileno(), view[:n])
                        written += n
                        callback.advance(n)
            except (zipfile.BadZipFile, zlib.error, InflateError, EOFError, NotImplementedError,
                    ValueError, struct.error) as e:
                raise ArchiveError(f"{label} is corrupt at '{info.filename}' ({e})") from None
            except FileExistsError:
                raise ArchiveError(f"{label} holds '{info.filename}' twice") from None
            _chmod(targets[info.filename], info)
    return written


def _data_start(fd: int, size: int, info: zipfile.ZipInfo, buf: bytes, base: int) -> int:
    """Where a member's data starts in the archive (after its local header), read from
    ``buf`` (the archive's bytes from ``base`` on) or the file; ValueError if malformed."""
    off = info.header_offset
    head = buf[off - base:off - base + 30] if off >= base else b""
    if len(head) < 30:
        head = os.pread(fd, 30, off)
    if head[:4] != b"PK\x03\x04" or len(head) < 30:
        raise ValueError("bad local header")
    name_len, extra_len = struct.unpack_from("<HH", head, 26)
    start = off + 30 + name_len + extra_len
    if start + info.compress_size > size:
        raise ValueError("member runs past the end of the archive")
    return start


def _extract_batch(fd: int, size: int, batch: list[zipfile.ZipInfo], targets: dict[str, str],
                   label: str) -> int:
    """Small members: their bytes read with one pread when they lie together (as resutil
    writes them), inflated no further than their declared size, CRC-checked, written."""
    base = min(i.header_offset for i in batch)
    end = min(size, max(i.header_offset + i.compress_size for i in batch) + 30 + 4096)
    buf = os.pread(fd, end - base, base) if end - base <= _BATCH_BYTES else b""
    written = 0
    with memoryview(buf) as view:
        for info in batch:
            try:
                start = _data_start(fd, size, info, buf, base)
                csize = info.compress_size
                if base <= start and start + csize - base <= len(buf):
                    payload: bytes | memoryview = view[start - base:start - base + csize]
                else:
                    payload = os.pread(fd, csize, start)
                if info.compress_type == DEFLATED:
                    d = inflater()
                    data = d.decompress(payload, info.file_size + 1)
                    if not d.eof and len(data) <= info.file_size:
                        raise ValueError("truncated deflate data")
                else:
                    data = payload
                if len(data) != info.file_size or crc32(data) != info.CRC:
                    raise ValueError("CRC or size mismatch")
            except (ValueError, zlib.error, InflateError, struct.error) as e:
                raise ArchiveError(f"{label} is corrupt at '{info.filename}' ({e})") from None
            target = targets[info.filename]
            out = _create(target, info.filename, label)
            try:
                _write_all(out, data)
            finally:
                os.close(out)
            _chmod(target, info)
            written += len(data)
    return written


def _extract_stored(fd: int, size: int, info: zipfile.ZipInfo, target: str, label: str,
                    callback: Callback) -> int:
    """A large stored member: copied by the kernel while its CRC is checked (``_copy``)."""
    try:
        start = _data_start(fd, size, info, b"", 0)
    except (ValueError, struct.error) as e:
        raise ArchiveError(f"{label} is corrupt at '{info.filename}' ({e})") from None
    out = _create(target, info.filename, label)
    try:
        crc, n = _copy(fd, start, info.file_size, out, (), callback)
    finally:
        os.close(out)
    if crc != info.CRC or n != info.file_size:
        raise ArchiveError(f"{label} is corrupt at '{info.filename}' (CRC mismatch)")
    return n


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


def meta_head_of(f: BinaryIO, label: str) -> str:
    """The text of an archive's ``resutil-exp.yaml`` (``f``: a reader of that member) up to
    its manifest, which a reader of the rest skips. At most META_LIMIT bytes are read: a
    larger head raises ArchiveError, so a hostile archive cannot make a reader hold
    gigabytes."""
    mark = MANIFEST_MARK.encode()
    data = bytearray()
    while len(data) <= META_LIMIT:
        chunk = f.read(1 << 20)
        if not chunk:
            break
        data += chunk
        cut = data.find(mark, max(0, len(data) - len(chunk) - len(mark)))
        if cut >= 0:
            del data[cut + 1:]
            break
    else:
        raise ArchiveError(
            f"{label}: its {EXP_FILE} is larger than {META_LIMIT >> 20} MiB before its "
            "manifest, more than resutil reads; the archive is damaged or not an experiment"
        )
    return data.decode("utf-8")


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

    Members are found by their local headers in file order. Each one's declared sizes must
    be possible (``check_declared``) and, with every member before it, fit the free space
    before a byte of it is written; no member is inflated past its declared size (or, when
    its size follows its data, past what deflate can encode). Every member's CRC and size
    are checked as it ends, against its header or data descriptor; ``finish()`` checks the
    hash of every byte received against the recorded one and that the central directory
    at the end lists exactly the members seen, with the same CRCs and sizes.
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
        # name, flags, CRC and size from the header (None/-1: in the descriptor), csize
        self.member: tuple[str, int, int | None, int, int] = ("", 0, None, 0, 0)
        self.limit = 0  # most bytes the member may produce
        self.crc = 0
        self.written = 0
        self.total = 0
        self.free = self.block = 0  # set at the first byte
        self.committed = 0  # bytes (in whole blocks) the members so far declared
        self.seen: list[tuple[str, int, int]] = []  # (name, CRC, size) of every member
        self.dirs: set[str] = set()

    # -- the file-like side ----------------------------------------------------------------
    def write(self, data: bytes) -> int:
        if self.expected is None:
            self.expected, self.described = self.facts()
            if self.expected is None:  # nothing to check the bytes against: use the CRCs
                raise NotStreamable(f"{self.label} has no recorded hash")
            self.free, self.block = free_space(self.root)
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
        except (ValueError, struct.error) as e:  # a header that does not parse
            self._close_member()
            raise self._bad(str(e)) from None
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
        try:
            listed = self._central_directory()
        except (ValueError, struct.error) as e:
            raise ArchiveError(f"{self.label}: its central directory is damaged ({e})") from None
        if sorted(listed) != sorted(self.seen):
            raise ArchiveError(f"{self.label}: its members and its central directory disagree")
        return self.total

    # -- parsing -------------------------------------------------------------------------
    def _bad(self, why: str) -> ArchiveError:
        return ArchiveError(f"{self.label} is corrupt at byte {self.at} ({why}); push it "
                            "again from a machine that has it")

    def _parse(self) -> None:
        buf = self.buf
        if self.state == "descriptor":
            self._descriptor()
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
        _, _, flags, method, _, _, crc, csize, usize, name_len, extra_len = _LOCAL_HEADER.unpack_from(buf)
        if len(buf) == 30 and name_len + extra_len:
            self.need = 30 + name_len + extra_len
            return
        start = self.at - len(buf)
        name = _member_name(bytes(buf[30:30 + name_len]), flags)
        if flags & 0x1:
            raise ArchiveError(f"{self.label}: '{name}' is encrypted; resutil cannot extract it")
        if method not in (0, 8):
            raise ArchiveError(f"{self.label}: '{name}' uses compression method {method}, "
                               "which resutil cannot extract")
        header_crc: int | None = crc
        if flags & 0x8:
            if self.described is None:
                raise NotStreamable(f"{self.label}: no layout recorded for '{name}'")
            if start not in self.described:
                raise ArchiveError(f"{self.label}: the size of '{name}' is not recorded")
            csize, usize, header_crc = self.described[start], -1, None
        elif csize == _U32 or usize == _U32:
            usize, csize = _zip64_sizes(bytes(buf[30 + name_len:]), usize, csize)
        rel = safe_member_path(name)
        target = self.root + rel
        self.buf = bytearray()
        self.member = (name, flags, header_crc, usize, csize)
        self.written = self.crc = 0
        self.remaining = csize
        self.inflater = None
        if name.endswith("/"):
            os.makedirs(target, exist_ok=True)
            self.dirs.add(name)
            self.limit = 0
        else:
            if usize >= 0:
                check_declared(self.label, name, method, csize, usize)
            elif method == STORED:
                usize = csize
            self.limit = usize if usize >= 0 else MAX_RATIO * max(csize, 1)
            # Reserve what it declares (at least its stored bytes) before writing any.
            self.committed += -(-max(usize, csize if method == STORED else 0) // self.block) * self.block
            if self.committed > self.free:
                raise _space_error(self.label, self.committed, self.free)
            parent = os.path.dirname(target)
            if parent not in self.dirs:
                os.makedirs(parent, exist_ok=True)
                self.dirs.add(parent)
            self.fd = _create(target, name, self.label)
            self.inflater = inflater() if method == 8 else None
        self.state = "data"
        if not csize:
            self._end_data()

    def _data(self, chunk: memoryview) -> None:
        if self.fd < 0:
            if len(chunk):
                raise self._bad("a folder entry with content")
            return
        if self.inflater is None:
            self._out(chunk)
            return
        data: bytes | memoryview = chunk
        while True:
            room = self.limit - self.written
            step = min(room + 1, INFLATE_STEP)
            try:
                out = self.inflater.decompress(data, step)
            except (zlib.error, InflateError) as e:
                raise self._bad(str(e)) from None
            self._out(out)
            data = self.inflater.unconsumed_tail
            if not data and (len(out) < step or self.inflater.eof):
                return

    def _out(self, data: bytes | memoryview) -> None:
        """Write a member's next bytes: never past its limit, never past the free space."""
        n = len(data)
        if self.written + n > self.limit:
            raise self._bad(f"'{self.member[0]}' holds more than it declares")
        if self.total + self.written + n > self.free:
            raise _space_error(self.label, self.total + self.written + n, self.free)
        self.crc = crc32(data, self.crc)
        _write_all(self.fd, data)
        self.written += n

    def _end_data(self) -> None:
        name, flags, crc, usize, _ = self.member
        if self.inflater is not None:
            if not self.inflater.eof:
                raise self._bad(f"'{name}' is truncated")
            self.inflater = None
        self._close_member()
        self.total += self.written
        if flags & 0x8:
            self.state, self.need = "descriptor", 24
            return
        if self.written != usize:
            raise self._bad(f"'{name}' has the wrong size")
        if not name.endswith("/") and self.crc != crc:
            raise self._bad(f"CRC mismatch in '{name}'")
        self.seen.append((name, self.crc, self.written))
        self._next_header()

    def _descriptor(self) -> None:
        name, _, _, _, csize = self.member
        sig, crc, dcsize, dusize = struct.unpack_from("<4sIQQ", self.buf)
        if sig != b"PK\x07\x08" or dusize != self.written or dcsize != csize:
            raise self._bad("bad data descriptor")
        if crc != self.crc:
            raise self._bad(f"CRC mismatch in '{name}'")
        self.seen.append((name, crc, self.written))
        self._next_header()

    def _next_header(self) -> None:
        self.buf = bytearray()
        self.state, self.need = "header", 4

    def _close_member(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def _central_directory(self) -> list[tuple[str, int, int]]:
        """(name, CRC, size) of every member the central directory lists; applies modes,
        refuses symlinks."""
        listed = []
        tail, off = self.tail, 0
        while tail[off:off + 4] == _SIG_CENTRAL:
            fields = _CENTRAL_HEADER.unpack_from(tail, off)
            flags, crc, csize, usize = fields[3], fields[7], fields[8], fields[9]
            name_len, extra_len, comment_len, external = fields[10], fields[11], fields[12], fields[15]
            name = _member_name(bytes(tail[off + 46:off + 46 + name_len]), flags)
            if csize == _U32 or usize == _U32:
                extra = bytes(tail[off + 46 + name_len:off + 46 + name_len + extra_len])
                usize, csize = _zip64_sizes(extra, usize, csize)
            mode = external >> 16
            if stat.S_ISLNK(mode):
                raise ArchiveError(f"archive member '{name}' is a symlink; refusing to extract")
            if not name.endswith("/"):
                _apply_mode(self.root + safe_member_path(name), mode)
            listed.append((name, crc, usize))
            off += 46 + name_len + extra_len + comment_len
        return listed


def _member_name(raw: bytes, flags: int) -> str:
    """A member's name as its header spells it (ValueError if it is not valid UTF-8)."""
    return raw.decode("utf-8" if flags & 0x800 else "cp437")


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
