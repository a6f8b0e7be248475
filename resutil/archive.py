"""Experiment archives: one standard zip per experiment, streamed both ways.

Writing never holds an archive in memory: files are streamed through a hashing writer
with data descriptors, so the archive hash and every file's manifest hash come out of one
pass. Incompressible files are stored, compressible ones deflated at level 1. Reading
rejects any member that would land outside the target folder.
"""

from __future__ import annotations

import errno
import functools
import mmap
import os
import stat
import struct
import time
import zipfile
import zlib
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Callable, Iterator

from .errors import ArchiveError
from .metadata import EXP_FILE, Manifest, new_hasher, scan_files
from .progress import NO_PROGRESS, Callback
from .zipstream import DEFLATED, STORED, ZipStreamWriter, deflate_raw

CHUNK = 256 << 10  # larger buffers fall out of the CPU cache: 4 MiB was 3-4x slower here
SAMPLE = 64 << 10
# Content that is compressed already: deflating it costs time and gains nothing.
STORED_SUFFIXES = frozenset(
    ".zip .gz .tgz .bz2 .xz .zst .lz4 .7z .rar .png .jpg .jpeg .gif .webp .avif .heic .mp3 "
    ".mp4 .m4a .mkv .mov .avi .webm .ogg .flac .pt .pth .ckpt .safetensors .npz .parquet "
    ".feather .arrow .orc .h5 .hdf5 .jar .whl .pdf .docx .xlsx .pptx".split()
)
DEFAULT_DEFLATE_LIMIT = 64 << 20
SMALL_FILE = 1 << 20


@dataclass(frozen=True)
class ArchiveInfo:
    """What building an archive produced."""

    manifest: Manifest
    size: int
    hash: str


class _HashingWriter:
    """Hashes and counts everything written to the archive file."""

    def __init__(self, raw: BinaryIO, callback: Callback) -> None:
        self.raw = raw
        self.hash = new_hasher()
        self.size = 0
        self.callback = callback

    def write(self, data: bytes) -> int:
        self.raw.write(data)
        self.hash.update(data)
        n = len(data)
        self.size += n
        return n

    def flush(self) -> None:
        self.raw.flush()



def choose_compression(path: str | Path, size: int, deflate_limit: int | None, head: bytes | None = None) -> int:
    """ZIP_STORED or ZIP_DEFLATED for one file, whichever costs less.

    ``head`` is the file's first bytes when the caller has read them already.
    """
    if size < 256 or os.path.splitext(path)[1].lower() in STORED_SUFFIXES:
        return zipfile.ZIP_STORED
    if deflate_limit is not None and size > deflate_limit:
        return zipfile.ZIP_STORED
    if head is None:
        with open(path, "rb") as f:
            head = f.read(SAMPLE)
    sample = head[:SAMPLE]
    if sample[:4096].isascii():  # text (CSV, JSON, logs) deflates well; skip the trial
        return zipfile.ZIP_DEFLATED
    if len(set(sample[:512])) > 200:  # near-uniform bytes: random, encrypted, compressed
        return zipfile.ZIP_STORED
    trial = sample[:16384]
    if len(deflate_raw(trial)) > 0.9 * len(trial):
        return zipfile.ZIP_STORED
    return zipfile.ZIP_DEFLATED


def _prepare_small(rel: str, path: str, st: os.stat_result, deflate_limit: int | None):
    """Read, hash, checksum and (maybe) deflate one small file, and build its zip member.

    Runs in worker threads (deflate, xxhash and reads release the GIL). Returns
    (size, hash, member) where member is what ``ZipStreamWriter.add_members`` takes.
    """
    fd = os.open(path, os.O_RDONLY)
    try:
        data = os.read(fd, st.st_size + 1)
        if len(data) > st.st_size:  # grew since it was listed: take all of it
            data = b"".join([data, *iter(lambda: os.read(fd, 1 << 20), b"")])
    finally:
        os.close(fd)
    method = choose_compression(path, len(data), deflate_limit, data)
    payload = deflate_raw(data) if method == DEFLATED else data
    if method == DEFLATED and len(payload) >= len(data):
        method, payload = STORED, data
    member = ZipStreamWriter.member(rel, _date_time(st.st_mtime), _mode(st), method,
                                    zlib.crc32(data), len(data), payload)
    return len(data), new_hasher(data).hexdigest(), member


def _batches(items: list, stats: list, limit: int = 4 << 20, count: int = 256) -> Iterator[list]:
    batch: list = []
    size = 0
    for item, st in zip(items, stats):
        batch.append(item)
        size += st.st_size
        if size >= limit or len(batch) >= count:
            yield batch
            batch, size = [], 0
    if batch:
        yield batch


def build_archive(
    folder: Path,
    out: BinaryIO,
    finish_meta: Callable[[Manifest], bytes] | None = None,
    callback: Callback = NO_PROGRESS,
    deflate_limit: int | None = DEFAULT_DEFLATE_LIMIT,
) -> ArchiveInfo:
    """Zip ``folder`` into ``out``; ``finish_meta(manifest)`` supplies the metadata file.

    Small files are prepared by two worker threads (read, hash, deflate) while this thread
    writes; large files are streamed. The metadata file is written last so that it can
    carry the manifest of every other file, computed in the same pass.
    """
    scanned = [f for f in scan_files(folder) if f[0] != EXP_FILE]
    files = [(rel, path) for rel, path, _ in scanned]
    stats = [st for _, _, st in scanned]
    callback.set_total(sum(st.st_size for st in stats))
    writer = _HashingWriter(out, callback)
    zw = ZipStreamWriter(writer)  # type: ignore[arg-type]
    manifest: dict[str, tuple[int, str]] = {}
    meta_of = {rel: st for (rel, _), st in zip(files, stats)}
    small = [(rel, p) for (rel, p), st in zip(files, stats) if st.st_size <= SMALL_FILE]
    small_stats = [meta_of[rel] for rel, _ in small]

    def prepare(batch: list) -> list:
        return [(rel, _prepare_small(rel, p, meta_of[rel], deflate_limit)) for rel, p in batch]

    with ThreadPoolExecutor(2) as pool:
        pending: deque = deque()
        batches = _batches(small, small_stats)
        for batch in batches:  # keep a bounded number of batches in flight
            pending.append(pool.submit(prepare, batch))
            if len(pending) >= 8:
                _write_prepared(zw, pending.popleft().result(), manifest, callback)
        while pending:
            _write_prepared(zw, pending.popleft().result(), manifest, callback)
    for (rel, path), st in zip(files, stats):
        if st.st_size <= SMALL_FILE:
            continue
        method = DEFLATED if choose_compression(path, st.st_size, deflate_limit) == zipfile.ZIP_DEFLATED else STORED
        h = new_hasher()
        if method == STORED and _has_fd(out):
            size = _append_stored(zw, writer, out, rel, st, path, h, callback)
        else:
            chunks = _read_chunks(path, h, callback)
            size, _ = zw.add_stream(rel, _date_time(st.st_mtime), _mode(st), method, chunks)
        manifest[rel] = (size, h.hexdigest())
    man = Manifest(manifest)
    meta_bytes = finish_meta(man) if finish_meta else _existing(folder / EXP_FILE)
    if meta_bytes is not None:
        payload = deflate_raw(meta_bytes)
        zw.add(EXP_FILE, _date_time(None), 0o100644, DEFLATED, zlib.crc32(meta_bytes),
               len(meta_bytes), payload)
    zw.close()
    writer.flush()
    return ArchiveInfo(man, writer.size, writer.hash.hexdigest())


def _has_fd(out: BinaryIO) -> bool:
    try:
        out.fileno()
    except (AttributeError, OSError, ValueError):
        return False
    return True


def _append_stored(zw: ZipStreamWriter, writer: _HashingWriter, out: BinaryIO, rel: str,
                   st: os.stat_result, path: str | Path, h, callback: Callback) -> int:
    """Store a large file: the kernel copies it (copy_file_range) while this thread reads
    the same pages from a memory map for the CRC and hashes. Returns its size."""
    e = zw.begin_stream(rel, _date_time(st.st_mtime), _mode(st), STORED)
    out.flush()
    size = st.st_size
    crc = 0
    with open(path, "rb") as src, ThreadPoolExecutor(1) as pool:
        copying = pool.submit(copy_range, src.fileno(), out.fileno(), size, 0, None)
        if size:
            with mmap.mmap(src.fileno(), size, access=mmap.ACCESS_READ) as mm, memoryview(mm) as mv:
                for off in range(0, size, CHUNK):
                    chunk = mv[off:off + CHUNK]
                    crc = zlib.crc32(chunk, crc)
                    h.update(chunk)
                    writer.hash.update(chunk)
                    callback.advance(len(chunk))
                    chunk.release()
        copying.result()
    out.seek(0, os.SEEK_END)
    writer.size += size
    zw.appended(size)
    zw.end_stream(e, crc, size, size)
    return size


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


def _write_prepared(zw: ZipStreamWriter, prepared: list, manifest: dict, callback: Callback) -> None:
    zw.add_members([member for _, (_, _, member) in prepared])
    for rel, (size, digest, _) in prepared:
        manifest[rel] = (size, digest)
    callback.advance(sum(size for _, (size, _, _) in prepared))


def _read_chunks(path: str | Path, h, callback: Callback) -> Iterator[bytes]:
    with open(path, "rb", buffering=0) as f:
        while chunk := f.read(CHUNK):
            h.update(chunk)
            callback.advance(len(chunk))
            yield chunk


def _existing(path: Path) -> bytes | None:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        return None


@functools.lru_cache(maxsize=4096)
def _local_time(second: int) -> tuple[int, int, int, int, int, int]:
    t = time.localtime(second)
    if t.tm_year < 1980:
        return (1980, 1, 1, 0, 0, 0)
    return t[:6]


def _date_time(mtime: float | None) -> tuple[int, int, int, int, int, int]:
    """A zip timestamp (local time, 2 s resolution) for a file's mtime (None: now)."""
    return _local_time(int(time.time() if mtime is None else mtime))


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
    try:
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    except FileExistsError:
        raise ArchiveError(f"{label} holds '{info.filename}' twice") from None
    size = info.file_size
    crc = 0
    try:
        with ThreadPoolExecutor(1) as pool, memoryview(mm) as mv:
            copying = pool.submit(copy_range, archive_fd, fd, size, start, 0)
            for off in range(start, start + size, CHUNK):
                chunk = mv[off:min(off + CHUNK, start + size)]
                crc = zlib.crc32(chunk, crc)
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
        data = zlib.decompress(payload, -15) if info.compress_type == 8 else payload
        if len(data) != info.file_size or zlib.crc32(data) != info.CRC:
            raise ValueError("CRC or size mismatch")
    except (ValueError, zlib.error, struct.error) as e:
        raise ArchiveError(f"{label} is corrupt at '{info.filename}' ({e})") from None
    try:
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    except FileExistsError:
        raise ArchiveError(f"{label} holds '{info.filename}' twice") from None
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
    mode = (info.external_attr >> 16) & 0o777
    if mode and mode != 0o644:
        os.chmod(target, mode | 0o600)
