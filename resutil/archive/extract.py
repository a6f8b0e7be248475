"""Extracting a downloaded archive (a local zip file) into an empty folder.

Every member's path, declared sizes, CRC and size are checked (``checks``); small members
are read in batches and inflated by two threads, large ones streamed or copied by the
kernel. A pull that extracts as the bytes arrive uses ``stream`` instead.
"""

from __future__ import annotations

import os
import stat
import struct
import zipfile
import zlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from ..errors import ArchiveError
from ..progress import NO_PROGRESS, Callback
from .checks import check_declared, free_space, safe_member_path, space_error
from .deflate import DEFLATED, InflateError, crc32, inflater
from .fileio import CHUNK, apply_mode, copy_with_crc, create_member, write_all

SMALL_MEMBER = 1 << 20  # members up to this size (compressed) are read in batches
_BATCH_BYTES = 8 << 20  # most archive bytes read at once for a batch of small members


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
            raise space_error(label, need, free)
        top = root.rstrip(os.sep)
        for d in sorted({os.path.dirname(targets[i.filename]) for i in members} |
                        {targets[i.filename] for i in zf.infolist() if i.is_dir()}):
            if d.rstrip(os.sep) != top:  # (dest itself exists)
                os.makedirs(d, exist_ok=True)
        callback.set_total(sum(i.file_size for i in members))
        fd = raw.fileno()
        size = os.fstat(fd).st_size
        small = [i for i in members if i.compress_size <= SMALL_MEMBER and i.compress_type in (0, 8)]
        large = [i for i in members if not (i.compress_size <= SMALL_MEMBER and i.compress_type in (0, 8))]

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
                        write_all(dst.fileno(), view[:n])
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
            out = create_member(target, info.filename, label)
            try:
                write_all(out, data)
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
    out = create_member(target, info.filename, label)
    try:
        crc, n = copy_with_crc(fd, start, info.file_size, out, (), callback)
    finally:
        os.close(out)
    if crc != info.CRC or n != info.file_size:
        raise ArchiveError(f"{label} is corrupt at '{info.filename}' (CRC mismatch)")
    return n


def _chmod(target: str, info: zipfile.ZipInfo) -> None:
    apply_mode(target, info.external_attr >> 16)
