"""File I/O shared by writing and extracting archives: kernel copies checked by CRC, writes
that never silently stop short, the files extracted members become.

Nothing is memory-mapped: a source truncated meanwhile (a checkpoint being rewritten, an
archive replaced in place) would kill the process with SIGBUS.
"""

from __future__ import annotations

import errno
import os
from concurrent.futures import ThreadPoolExecutor

from ..errors import ArchiveError
from ..progress import Callback
from .deflate import crc32

CHUNK = 256 << 10  # larger buffers fall out of the CPU cache: 4 MiB was 3-4x slower here


def copy_with_crc(src_fd: int, offset: int, count: int, dst_fd: int, updates: tuple,
                  callback: Callback, crc: bool = True) -> tuple[int, int]:
    """Copy ``count`` bytes of ``src_fd`` from ``offset`` to the position of ``dst_fd``:
    the kernel copies them (copy_file_range) while this thread reads the same bytes for
    the CRC and ``updates``. Returns (CRC, bytes copied), fewer only if the source ended;
    ``crc=False``: bytes whose members carry their CRCs already (the CRC returned is 0).

    Read with pread, not through a memory map: a source truncated meanwhile (a checkpoint
    being rewritten, an archive replaced in place) would kill the process with SIGBUS. A
    source that changes meanwhile is the caller's to detect (the push compares its stat).
    Writing from this thread's buffers instead was as fast for 700 MB, but 1.5-2x slower
    and erratic for 2 GB of new files on this VM."""
    value = done = 0
    buf = bytearray(CHUNK)
    with ThreadPoolExecutor(1) as pool, memoryview(buf) as view:
        copying = pool.submit(copy_range, src_fd, dst_fd, count, offset, None)
        while done < count:
            n = os.preadv(src_fd, [view[:min(CHUNK, count - done)]], offset + done)
            if not n:
                break
            chunk = view[:n]
            if crc:
                value = crc32(chunk, value)
            for update in updates:
                update(chunk)
            chunk.release()
            callback.advance(n)
            done += n
        copied = copying.result()
    return value, min(done, copied)


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
            write_all(dst_fd, data)
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


def write_all(fd: int, data: bytes | memoryview) -> None:
    """Write every byte: ``os.write`` may write less (a full disk reports it only on the
    next call), which would leave a silently truncated file."""
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        if n <= 0:
            raise OSError(28, "No space left on device")  # ENOSPC
        view = view[n:]


def apply_mode(target: str, mode: int) -> None:
    """A member's permission bits (a zip's external attributes >> 16), kept user-writable."""
    mode &= 0o777
    if mode and mode != 0o644:
        os.chmod(target, mode | 0o600)


def create_member(target: str, name: str, label: str) -> int:
    """Open a new file for a member; a second member of the same name is an error."""
    try:
        return os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    except FileExistsError:
        raise ArchiveError(f"{label} holds '{name}' twice") from None

