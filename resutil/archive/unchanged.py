"""Reading the files an archive takes: none torn, no link followed.

Every file is checked against what the scan saw of it (size, mtime, ctime, inode) after it
was read: a file that changed meanwhile fails the archive (``FileChanged``) instead of
being stored torn, with a CRC and hash of bytes that were never all on disk at once. A file
the scan only listed (many files: see ``archive.build``) is seen by ``fstat`` once open,
and fails too when its ctime says it changed after the scan began (``open_facts``).
"""

from __future__ import annotations

import errno
import os
import stat

# What the scan saw of a file: (size, mtime_ns, ctime_ns, inode, device)
Facts = tuple[int, int, int, int, int]

# No link is followed (the scan resolved links already: one now is a file swapped since), and
# a file swapped for a FIFO must not block the open.
OPEN_FLAGS = (os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0)
              | getattr(os, "O_CLOEXEC", 0))


class FileChanged(Exception):
    """A file changed between the scan and the end of its reading."""

    def __init__(self, rel: str) -> None:
        super().__init__(rel)
        self.rel = rel


def facts_of(st: os.stat_result) -> Facts:
    return st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino, st.st_dev


def open_checked(rel: str, path: str) -> int:
    """Open a scanned file for reading without following a link (FileChanged if it is
    one now)."""
    try:
        return os.open(path, OPEN_FLAGS)
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise FileChanged(rel) from None
        raise


def open_facts(rel: str, fd: int, since: int | None, append_only: bool) -> tuple[int, Facts]:
    """(mode, facts) of a file the scan only listed, from ``fstat`` of its open ``fd``.

    FileChanged when it is no longer a regular file, or when it changed after ``since``
    (when the scan began, ns of the wall clock): the facts are taken later than a scan
    takes them, and a change between the two must fail all the same. An append-only file
    may change (see ``check_unchanged``)."""
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode) or (
            not append_only and since is not None and st.st_ctime_ns >= since):
        raise FileChanged(rel)
    return (stat.S_IMODE(st.st_mode) | stat.S_IFREG,
            (st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino, st.st_dev))


def check_unchanged(rel: str, facts: Facts, after: os.stat_result, nread: int,
                    append_only: bool) -> None:
    """FileChanged unless the file whose ``fstat`` after reading ``nread`` bytes of it is
    ``after`` is the one the scan saw, as it was then (an append-only file may have grown)."""
    if append_only:
        same = (after.st_ino, after.st_dev) == facts[3:] and after.st_size >= facts[0]
    else:
        same = facts_of(after) == facts
    if not same or nread != facts[0]:
        raise FileChanged(rel)
