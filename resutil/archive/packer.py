"""Zip members for many small files, packed in this process and in one helper process.

A folder of many small files costs per-file work (open, read, checksum, hash, deflate,
header) that threads cannot share out: the GIL serialises the Python between the C calls,
and on two cores two threads packed 20,000 files slower than one. So a helper process
(``python -m resutil.archive.packer``) packs one share of the files into a segment file
while this process packs the rest. Local headers hold no absolute offsets, so the archive
writer appends the segment as it is and adopts its entries (``ZipStreamWriter.adopt``).

If the helper cannot start or fails for any reason but an unreadable or changing file, its
share is packed in this process: the archive is the same, only slower. The helper dies with
the process that started it (and removes its segment), so a killed push leaves no packer
behind; the segment's name carries its owner's tag (``liveness``) for the next command to
remove it if both were killed at once.

Every file is checked as ``unchanged`` describes: one that changed while it was read fails
the archive instead of being stored torn.
"""

from __future__ import annotations

import gc
import marshal
import os
import signal
import sys
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from ..hashing import hexdigest
from .deflate import (
    DEFLATED,
    STORED,
    STORED_SUFFIXES,
    TRIAL,
    choose_compression,
    crc32,
    deflate_raw,
)
from .unchanged import Facts, FileChanged, check_unchanged, open_checked, open_facts
from .writer import LOCAL_HEADER, LOCAL_SIGNATURE, LOCAL_SIZE, UTF8, Entry, dos_stamp

if TYPE_CHECKING:  # the helper process imports only what packing needs
    import subprocess
    import threading

FLUSH = 1 << 20  # bytes of packed members gathered per write
# A helper pays ~40 ms to start; below this much work one process is as fast.
HELPER_MIN_FILES = 2000
HELPER_MIN_BYTES = 24 << 20
PER_FILE_COST = 4096  # the per-file work, in bytes of content that cost as much to pack
# The helper's part of that work: half. It also writes a segment and sends its reply, but
# this process makes its central-directory records while it waits (A, in-process: 0.47
# left the helper done ~15 ms first, 260-272 ms in all; 0.49-0.51 258-265 ms).
HELPER_SHARE = 0.5
SEGMENT = ".resutil-segment"  # how a segment file's name begins
LISTED_SIZE = 4096  # what ``split`` counts for a file whose size is not known yet
SMALL_FILE = 1 << 20  # files up to this size are packed whole, larger ones streamed

# (relative path, path, mode, facts, append-only) of one file to pack; an append-only file
# (resutil's own output logs) may grow while it is read: its first ``size`` bytes are taken.
Item = tuple[str, str, int, Facts, bool]
# (relative path, size, content hash) of one packed file
Hashed = tuple[str, int, str]


def _encode(rel: str, data: bytes, deflate_limit: int | None) -> tuple[int, bytes]:
    """(method, payload) for a file read whole; a small file is its own deflate trial."""
    n = len(data)
    if n > TRIAL:
        if choose_compression(rel, n, deflate_limit, data) == STORED:
            return STORED, data
    elif n < 256 or (deflate_limit is not None and n > deflate_limit):
        return STORED, data
    elif not data.isascii():
        # 128 random bytes hold ~101 distinct values (sd ~5), text and numbers far fewer;
        # deflating incompressible bytes is the slowest case, so catch them first.
        if len(set(data[:128])) > 85:
            return STORED, data
    if _stored_suffix(rel):
        return STORED, data
    payload = deflate_raw(data)
    return (STORED, data) if len(payload) > 0.9 * n else (DEFLATED, payload)


def pack(items: list[Item], write: Callable[[bytes], object], deflate_limit: int | None,
         since: int | None = None, deferred: list | None = None, level: int = 1
         ) -> tuple[list[Entry], list[Hashed]]:
    """Write each file as a complete member through ``write``, one after another.

    Returns the central-directory entries (offsets count from the first byte written) and
    the size and content hash of every file, for the manifest.

    An item without facts (mode 0, facts None: the scan only listed it) is a file whose
    facts are taken here, by ``fstat`` once it is open (``open_facts``); ``since`` is when
    the scan began (ns, wall clock): a file changed after it (``st_ctime_ns``) fails as
    if the scan had seen it before. One that is no longer a regular file fails too, and
    one larger than ``SMALL_FILE`` is not packed but added to ``deferred`` as (rel, path,
    mode, facts), for the caller to stream. ``level``: the deflate level of files up to TRIAL bytes
    (larger ones are deflated at level 1).

    This loop runs 20,000 times in a second: ``check_unchanged`` (its common case),
    ``_encode`` (for files up to TRIAL bytes) and ``member_bytes`` are written out here;
    the full check decides when anything differs.
    """
    entries: list[Entry] = []
    hashed: list[Hashed] = []
    pending: list[bytes] = []
    gathered = pos = 0
    read, fstat, close, header = os.read, os.fstat, os.close, LOCAL_HEADER.pack
    compress, digest = deflate_raw, hexdigest
    for rel, path, mode, facts, append_only in items:
        fd = open_checked(rel, path)
        try:
            if facts is None:
                mode, facts = open_facts(rel, fd, since, append_only)  # type: ignore[arg-type]
                if facts[0] > SMALL_FILE:
                    deferred.append((rel, path, mode, facts))  # type: ignore[union-attr]
                    continue
            size = facts[0]
            data = read(fd, size + 1)  # one byte more: a file that grew shows
            while len(data) < size:  # a short read (or it shrank: then the check fails)
                more = read(fd, size + 1 - len(data))
                if not more:
                    break
                data += more
            if append_only:
                data = data[:size]
            after = fstat(fd)
            if (len(data) != size or after.st_mtime_ns != facts[1] or after.st_size != size
                    or after.st_ctime_ns != facts[2] or after.st_ino != facts[3]
                    or after.st_dev != facts[4]):
                check_unchanged(rel, facts, after, len(data), append_only)
        finally:
            close(fd)
        n = len(data)
        crc = crc32(data)
        if n > TRIAL:
            method, payload = _encode(rel, data, deflate_limit)
        elif n < 256 or (deflate_limit is not None and n > deflate_limit) or (
                # 128 random bytes hold ~101 distinct values (sd ~5), text and numbers far
                # fewer; deflating incompressible bytes is the slowest case: caught first.
                not data.isascii() and len(set(data[:128])) > 85) or _stored_suffix(rel):
            method, payload = STORED, data
        else:
            payload = compress(data, level)
            method = DEFLATED
            if len(payload) > 0.9 * n:
                method, payload = STORED, data
        name = rel.encode("utf-8")
        t, d = dos_stamp(facts[1] // 1_000_000_000)
        csize = len(payload)
        entries.append((name, method, t, d, crc, csize, n, pos, mode, UTF8))
        hashed.append((rel, n, digest(data)))
        pending += (header(LOCAL_SIGNATURE, 20, UTF8, method, t, d, crc, csize, n, len(name), 0),
                    name, payload)
        grown = LOCAL_SIZE + len(name) + csize
        pos += grown
        gathered += grown
        if gathered >= FLUSH:
            write(b"".join(pending))
            pending.clear()
            gathered = 0
    if pending:
        write(b"".join(pending))
    return entries, hashed


def _stored_suffix(rel: str) -> bool:
    """Whether a file's suffix says it is compressed already."""
    dot = rel.rfind(".")
    return dot > rel.rfind("/") and rel[dot:].lower() in STORED_SUFFIXES


def worth_a_helper(count: int, size: int) -> bool:
    """Whether packing ``count`` files of ``size`` bytes in all pays for a helper."""
    return count >= HELPER_MIN_FILES or size >= HELPER_MIN_BYTES


def split(items: list[Item]) -> tuple[list[Item], list[Item]]:
    """(this process's share, the helper's share), or (items, []) when a helper would not
    pay for itself. Shares are contiguous, so the archive keeps the items' order. A file
    the scan only listed counts as ``LISTED_SIZE`` bytes."""
    sizes = [LISTED_SIZE if item[3] is None else item[3][0] for item in items]
    total = sum(sizes)
    if not worth_a_helper(len(items), total):
        return items, []
    cost = total + PER_FILE_COST * len(items)
    mine, done = cost * (1 - HELPER_SHARE), 0
    for k, size in enumerate(sizes):
        done += size + PER_FILE_COST
        if done >= mine:
            return items[:k + 1], items[k + 1:]
    return items, []


class Helper:
    """A helper process that packs a share of the files into a segment file.

    It starts at once (its interpreter loads while the caller still scans the folder);
    ``send`` hands it its share. Use it as a context manager: leaving it stops the process
    and removes the segment. The thread that starts it must outlive it: on Linux the
    helper is told to die with that thread (PR_SET_PDEATHSIG).
    """

    def __init__(self, deflate_limit: int | None, scratch_dir: str | None, level: int = 1
                 ) -> None:
        import subprocess
        import tempfile

        self.deflate_limit = deflate_limit
        self.level = level
        self.items: list[Item] = []
        self.deferred: list = []  # its share's files too large to pack (see ``pack``)
        # How far the clock of the scratch folder's file system (a file server's, for a
        # network file system) is ahead of this host's: its new segment's ctime - now.
        self.clock_skew = 0
        self.segment = ""
        self._reply: tuple | None = None
        self._thread = None
        self._remover: threading.Thread | None = None
        self.proc: subprocess.Popen | None = None
        if not sys.executable:
            return
        from ..liveness import scratch_prefix

        try:
            if scratch_dir is not None:
                os.makedirs(scratch_dir, exist_ok=True)
            before = time.time_ns()
            fd, self.segment = tempfile.mkstemp(prefix=scratch_prefix(SEGMENT),
                                                dir=scratch_dir)
            try:
                self.clock_skew = os.fstat(fd).st_ctime_ns - before
            finally:
                os.close(fd)
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "resutil.archive.packer", str(os.getpid()), self.segment],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                env=_helper_env(),
            )
        except OSError:
            self.proc = None

    def send(self, items: list[Item], since: int | None = None) -> None:
        """Give the helper its share; it packs while the caller packs the rest (``since``:
        see ``pack``)."""
        import threading

        self.items = items
        if self.proc is None:
            return
        # marshal, not pickle: the same interpreter on both sides, and only tuples, strings
        # and numbers to send, 3x faster (4 ms of a share of 10,000 files).
        job = marshal.dumps((self.deflate_limit, items, since, self.level))
        self._thread = threading.Thread(target=self._talk, args=(job,), daemon=True)
        self._thread.start()

    def _talk(self, job: bytes) -> None:
        assert self.proc is not None
        try:
            out, _ = self.proc.communicate(job)
            self._reply = marshal.loads(out)
        except Exception:  # noqa: BLE001 - any failure means: pack the share here
            self._reply = None

    def result(self) -> tuple[list[Entry], list[Hashed]] | None:
        """The helper's entries and hashes once its segment is complete; None when it
        failed and the caller must pack ``items`` itself. An unreadable file raises the
        OSError it raised in the helper, a file that changed FileChanged."""
        if self.proc is None or self._thread is None:
            return None
        self._thread.join()
        reply = self._reply
        if reply is not None and reply[0] == "oserror":
            raise OSError(reply[1], reply[2], reply[3])
        if reply is not None and reply[0] == "changed":
            raise FileChanged(reply[1])
        if reply is not None and reply[0] == "ok" and self.proc.returncode == 0:
            self.deferred = reply[3]
            return reply[1], reply[2]
        if self.proc.returncode == -signal.SIGINT:
            raise KeyboardInterrupt
        return None

    def __enter__(self) -> Helper:
        return self

    def discard(self) -> None:
        """Start removing the segment, copied by now: another thread waits for the file
        system to free it (7 ms for 28 MB here) while the caller finishes the archive."""
        import threading

        if self.segment and self._remover is None:
            self._remover = threading.Thread(target=_remove, args=(self.segment,), daemon=True)
            self._remover.start()

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None:
            if self.proc.poll() is None:
                self.proc.kill()
            if self._thread is not None:
                self._thread.join()
            else:
                self.proc.communicate()
        if self._remover is not None:
            self._remover.join()
        elif self.segment:
            _remove(self.segment)


def _remove(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass


def _helper_env() -> dict[str, str]:
    """The environment for the helper: this resutil's folder first on the path, so the
    helper runs this very code whatever the installation."""
    here = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (here, env.get("PYTHONPATH")) if p)
    return env


class _Orphaned(Exception):
    """The process that started the helper is gone."""


def _orphaned(signum: int, frame: object) -> None:
    raise _Orphaned


def _die_with_parent() -> None:
    """Have the kernel send SIGTERM when the parent (thread) dies (Linux only)."""
    if not sys.platform.startswith("linux"):
        return
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGTERM, 0, 0, 0)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass  # the parent-pid checks below still end an orphaned helper


def _helper_main() -> None:
    # An orphaned helper (its push was killed) removes its segment and exits: at once on
    # Linux (SIGTERM on the parent's death), elsewhere at its next write (the parent pid
    # changed) or when the job or the reply pipe is found closed.
    parent, segment = int(sys.argv[1]), sys.argv[2]
    gc.disable()  # what it makes lives until it exits (see gcpause)
    signal.signal(signal.SIGTERM, _orphaned)
    try:
        _die_with_parent()
        if os.getppid() != parent:
            raise _Orphaned
        # (EOFError if there is no job)
        deflate_limit, items, since, level = marshal.loads(sys.stdin.buffer.read())
        deferred: list = []
        try:
            with open(segment, "wb") as f:

                def write(data: bytes) -> None:
                    if os.getppid() != parent:
                        raise _Orphaned
                    f.write(data)

                entries, hashed = pack(items, write, deflate_limit, since, deferred, level)
            reply: tuple = ("ok", entries, hashed, deferred)
        except FileChanged as e:
            reply = ("changed", e.rel)
        except OSError as e:
            reply = ("oserror", e.errno, e.strerror, e.filename)
        sys.stdout.buffer.write(marshal.dumps(reply))
        sys.stdout.buffer.flush()
    except (_Orphaned, EOFError, BrokenPipeError):
        if os.path.basename(segment).startswith(SEGMENT):  # never anything else
            try:
                os.unlink(segment)
            except OSError:
                pass
        os._exit(1)


if __name__ == "__main__":
    _helper_main()
