"""Building an experiment's archive: one standard zip, written in one streaming pass.

Writing never holds an archive in memory: small files are packed whole (``packer``), large
ones streamed with data descriptors, all through a hashing writer, so the archive hash and
every file's manifest hash come out of one pass. Incompressible files are stored,
compressible ones deflated at level 1 (small files packed whole at ``packed_level``).

Writing takes nothing from outside the experiment folder (links are followed only inside
it, see ``metadata.iter_files``) and stores no file torn: each one must still be the file
the scan saw (size, times, inode) once it is read, else the build fails naming it
(``unchanged``). For many files the scan only lists them and each packer takes a file's
facts where it opens it; a file changed since the scan began (by its ctime) fails as well.
No file is memory-mapped: a writer truncating it would kill the process with SIGBUS.
"""

from __future__ import annotations

import contextlib
import os
import stat
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import BinaryIO

from ..capture import STDERR_LOG, STDOUT_LOG
from ..errors import ArchiveError
from ..gcpause import gc_paused
from ..hashing import new_hasher
from ..liveness import remove_dead_scratch
from ..metadata import EXP_FILE, Manifest, list_files
from ..progress import NO_PROGRESS, Callback
from . import packer
from .deflate import DEFLATED, SAMPLE, STORED, choose_compression, crc32, deflate_raw
from .fileio import CHUNK, copy_with_crc
from .packer import SMALL_FILE, Helper, Item, pack, split, worth_a_helper
from .unchanged import Facts, FileChanged, check_unchanged, open_checked
from .writer import Entry, ZipStreamWriter, member_rows, stamp_of

# resutil's own output logs, written in append mode by the run that may push a checkpoint
# while it prints: their first bytes (as much as the scan saw) are a consistent copy.
APPEND_ONLY = frozenset({STDOUT_LOG, STDERR_LOG})
# A file system's clock this far from this host's (a file server's) is taken as its own;
# nearer, the difference is its coarse timestamps (a few ms) and this host's clock counts.
CLOCK_SLACK = 50_000_000  # ns
CLOCK_STEP = 10_000_000  # ns: the longest step of a kernel's coarse clock (HZ=100)
DEFAULT_DEFLATE_LIMIT = 64 << 20


@dataclass(frozen=True)
class ArchiveInfo:
    """What building an archive produced."""

    manifest: Manifest
    size: int
    hash: str
    # header offset -> compressed size of each member whose sizes follow its data
    described: dict[int, int] = field(default_factory=dict)
    # the central-directory entries of the members, in order (ZipStreamWriter.entries)
    entries: list[Entry] = field(default_factory=list, repr=False)

    @cached_property
    def members(self) -> list[list]:
        """[name, data offset, compressed size, size, method, CRC] of every member, in
        order: where a reader of one member finds it (see read.Member). Made when asked
        for: a sidecar records them only for archives of up to 10,000 files."""
        return member_rows(self.entries)


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
    packed_level: int = 1,
) -> ArchiveInfo:
    """Zip ``folder`` into ``out``; ``finish_meta(manifest)`` supplies the metadata file.

    Small files are packed whole, one share by this thread and, when there are many, one
    by a helper process (see ``packer``) into a segment file in ``scratch_dir`` (default:
    the system's temporary folder) that is appended after, deflated at ``packed_level``
    (``deflate.FAST_LEVEL`` trades bytes for CPU). Large files are streamed. The
    metadata file is written last so that it can carry the manifest of every other file,
    computed in the same pass. ArchiveError, naming the file, for a file that cannot be
    read, a link out of the folder (see ``metadata.iter_files``) and a file that changed
    while it was archived; ``folder`` itself may not be a link.
    """
    try:
        with gc_paused():
            return _build(folder, out, finish_meta, callback, deflate_limit, scratch_dir,
                          packed_level)
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
           callback: Callback, deflate_limit: int | None, scratch_dir: Path | None,
           level: int) -> ArchiveInfo:
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
    # Listed first, without a stat of each file (its directory entry's type says it is a
    # regular file): for many files, the packers take each one's facts where they open it
    # (see packer.pack), on both cores, instead of this process in one stat a file here.
    since = time.time_ns()
    listed = []
    helper: Helper | None = None
    scratch = None if scratch_dir is None else str(scratch_dir)
    for found in list_files(folder, refuse):
        if found[0] == EXP_FILE:
            continue
        listed.append(found)
        if helper is None and len(listed) >= packer.HELPER_MIN_FILES:
            helper = Helper(deflate_limit, scratch, level)  # it loads while the scan goes on
    many = helper is not None
    if many and scratch is not None and abs(helper.clock_skew) > CLOCK_SLACK:  # type: ignore[union-attr]
        # The scratch folder is on the results' disk: a file server whose clock is off
        # stamps changes with its own time, so "changed since the scan began" uses it
        # (one coarse step later: the segment's ctime may lag its creation by one).
        since += helper.clock_skew + CLOCK_STEP  # type: ignore[union-attr]
    elif many:
        _coarse_clock_past(since)
    small: list[Item] = []
    large: list[tuple[str, str, int, Facts]] = []
    total = small_size = 0
    for rel, path, st in listed:
        if st is None:
            if many:
                small.append((rel, path, 0, None, rel in APPEND_ONLY))  # type: ignore[arg-type]
                continue
            st = os.lstat(path)
            if not stat.S_ISREG(st.st_mode):
                raise FileChanged(rel)
        facts = (st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino, st.st_dev)
        mode = stat.S_IMODE(st.st_mode) | stat.S_IFREG
        total += st.st_size
        if st.st_size > SMALL_FILE:
            large.append((rel, path, mode, facts))
            continue
        small.append((rel, path, mode, facts, rel in APPEND_ONLY))
        small_size += st.st_size
        if helper is None and worth_a_helper(len(small), small_size):
            helper = Helper(deflate_limit, scratch, level)
    if many:
        total = None  # type: ignore[assignment]  # known once the packers took the facts
    callback.set_total(total)
    writer = _HashingWriter(out)
    zw = ZipStreamWriter(writer)  # type: ignore[arg-type]
    manifest: dict[str, tuple[int, str]] = {}
    mine, theirs = split(small)
    with helper if helper is not None else contextlib.nullcontext():
        if helper is not None:
            helper.send(theirs, since)
        deferred: list = []
        _pack_here(zw, mine, deflate_limit, manifest, callback, since, deferred, level)
        if helper is not None:
            zw.prepare_central()  # while the helper finishes its share
        done = helper.result() if helper is not None else None
        if done is not None:
            entries, hashed = done
            base = zw.pos
            with open(helper.segment, "rb") as seg:  # type: ignore[union-attr]
                size = os.fstat(seg.fileno()).st_size
                _, copied = _copy_in(seg.fileno(), size, out, writer, (), NO_PROGRESS, False)
            # Removed while the rest is built (the file system takes a while to free it).
            helper.discard()  # type: ignore[union-attr]
            zw.appended(copied)
            zw.adopt(entries, base)
            _record(manifest, hashed, callback)
            deferred += helper.deferred  # type: ignore[union-attr]
        elif theirs:  # no helper after all: pack its share here
            _pack_here(zw, theirs, deflate_limit, manifest, callback, since, deferred, level)
        if deferred:  # large files the packers found: streamed in the scan's order
            order = {found[0]: k for k, found in enumerate(listed)}
            large = sorted(large + deferred, key=lambda f: order[f[0]])
        if many and callback is not NO_PROGRESS:  # the total is known now
            callback.set_total(sum(size for size, _ in manifest.values())
                               + sum(facts[0] for _, _, _, facts in large))
        for rel, path, mode, facts in large:
            manifest[rel] = _add_large(zw, writer, out, rel, path, mode, facts, deflate_limit,
                                       callback)
        man = Manifest(manifest)
        meta_bytes = finish_meta(man) if finish_meta else _existing(folder / EXP_FILE)
        if meta_bytes is not None:
            crc, payload = _deflate_beside(meta_bytes, zw.prepare_central)
            zw.add(EXP_FILE, stamp_of(None), 0o100644, DEFLATED, crc, len(meta_bytes), payload)
        zw.close()
        writer.flush()
    return ArchiveInfo(man, writer.size, writer.hash.hexdigest(), zw.described(), zw.entries)


def _coarse_clock_past(since: int) -> None:
    """Wait until the clock that stamps file changes (Linux: the coarse real-time clock,
    4 ms steps here) has reached ``since``: a change from then on has a ctime of at least
    ``since``, one before it less (see ``unchanged.open_facts``). Listing thousands of
    files takes longer than a step: a push of many files hardly ever waits."""
    if not sys.platform.startswith("linux"):
        return
    try:
        while time.clock_gettime_ns(_CLOCK_REALTIME_COARSE) < since:
            time.sleep(0.0005)
    except OSError:
        pass


_CLOCK_REALTIME_COARSE = 5  # <linux/time.h>; Python's time module does not name it


def _deflate_beside(data: bytes, work: Callable[[], object]) -> tuple[int, bytes]:
    """(CRC, raw deflate) of ``data`` while this thread does ``work``: the metadata file
    of 20,000 files (1.6 MB) deflates in another thread (the codec releases the GIL) while
    this one makes central-directory records."""
    if len(data) < 256 << 10:
        work()
        return crc32(data), deflate_raw(data)
    import threading

    done: list = []

    def deflate() -> None:
        try:
            done.append((crc32(data), deflate_raw(data)))
        except BaseException as e:  # noqa: BLE001 - raised again in the caller
            done.append(e)

    thread = threading.Thread(target=deflate, daemon=True)
    thread.start()
    try:
        work()
    finally:
        thread.join()
    if isinstance(done[0], BaseException):
        raise done[0]
    return done[0]


def _add_large(zw: ZipStreamWriter, writer: _HashingWriter, out: BinaryIO, rel: str, path: str,
               mode: int, facts: Facts, deflate_limit: int | None, callback: Callback
               ) -> tuple[int, str]:
    """Stream one large file into the archive; (size, content hash) for the manifest."""
    append_only = rel in APPEND_ONLY
    size = facts[0]
    sec, ns = divmod(facts[1], 1_000_000_000)
    stamp = stamp_of(sec + ns * 1e-9)  # as os.stat_result.st_mtime has it
    h = new_hasher()
    fd = open_checked(rel, path)
    try:
        method = choose_compression(rel, size, deflate_limit, os.pread(fd, SAMPLE, 0))
        if method == STORED and _has_fd(out):
            e = zw.begin_stream(rel, stamp, mode, STORED)
            crc, n = _copy_in(fd, size, out, writer, (h.update,), callback)
            zw.appended(n)
            check_unchanged(rel, facts, os.fstat(fd), n, append_only)
            zw.end_stream(e, crc, n, n)
        else:
            chunks = _read_chunks(fd, size, h, callback)
            n, _ = zw.add_stream(rel, stamp, mode, method, chunks)
            check_unchanged(rel, facts, os.fstat(fd), n, append_only)
    finally:
        os.close(fd)
    return n, h.hexdigest()


def _pack_here(zw: ZipStreamWriter, items: list, deflate_limit: int | None,
               manifest: dict, callback: Callback, since: int | None = None,
               deferred: list | None = None, level: int = 1) -> None:
    base = zw.pos
    entries, hashed = pack(items, zw.write, deflate_limit, since, deferred, level)
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
             updates: tuple, callback: Callback, crc: bool = True) -> tuple[int, int]:
    """Append up to ``size`` bytes of ``src_fd`` (from offset 0) to the archive, also
    through the archive hash and ``updates``; returns (CRC, bytes appended), fewer only if
    the file ended early (``crc=False``: no CRC, 0)."""
    if not _has_fd(out):  # an in-memory archive: copy by hand
        value = done = 0
        while done < size:
            chunk = os.pread(src_fd, min(CHUNK, size - done), done)
            if not chunk:
                break
            if crc:
                value = crc32(chunk, value)
            for update in updates:
                update(chunk)
            writer.write(chunk)
            callback.advance(len(chunk))
            done += len(chunk)
        return value, done
    out.flush()
    value, done = copy_with_crc(src_fd, 0, size, out.fileno(), (writer.hash.update, *updates),
                                callback, crc)
    out.seek(0, os.SEEK_END)
    writer.size += done
    return value, done



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
