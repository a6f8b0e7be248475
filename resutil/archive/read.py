"""Reading one member of a zip archive through byte ranges, for archives that stay remote.

Where each member lies comes from a member index: the sidecar's (``ArchiveInfo.members``,
as ``build_archive`` records it) or the archive's own central directory, read from its end
(``read_central_directory``: archives without a sidecar, as resutil 0.1.x wrote them).
``MemberReader`` then streams that one member through ranged reads.

Archives are untrusted here as everywhere: the end records and the central directory are
size-bounded and must describe an archive that fits the listed size; a member's declared
sizes must be possible (``check_declared``); it is never inflated past its declared size;
its size, CRC and (when one was recorded) content hash are checked before its last bytes
are handed out, and a member that fails is refused with one line naming it.
"""

from __future__ import annotations

import io
import stat
import struct
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, BinaryIO

from ..errors import ArchiveError
from ..hashing import new_hasher
from ..metadata import _MANIFEST_MARK as MANIFEST_MARK
from ..metadata import EXP_FILE, MAX_HEAD_BYTES
from .checks import INFLATE_STEP, check_declared
from .deflate import DEFLATED, STORED, InflateError, crc32, inflater

Fetch = Callable[[int, int], bytes]  # (start, length) -> exactly those bytes of the archive

WINDOW = 16 << 20  # most archive bytes one ranged read asks for
TAIL = (64 << 10) + 22 + 20  # the end record with the longest comment, and a zip64 locator
MAX_DIRECTORY = 64 << 20  # a central directory larger than this is not read (~500,000 members)
META_LIMIT = MAX_HEAD_BYTES  # of resutil-exp.yaml before its manifest, as for local files
HEAD_SLACK = 1024  # local extra fields longer than their central copies, read in one request
_U16, _U32 = 0xFFFF, 0xFFFFFFFF
_EOCD = struct.Struct("<4sHHHHIIH")
_EOCD64 = struct.Struct("<4sQHHIIQQQQ")
_LOCATOR = struct.Struct("<4sIQI")
_CENTRAL = struct.Struct("<4sHHHHHHIIIHHHHHII")
_LOCAL = struct.Struct("<4sHHHHHIIIHH")


@dataclass(frozen=True)
class Member:
    """Where one member lies in an archive and what it must turn out to be.

    ``offset`` is where its data starts, or -1 when only its local ``header`` offset is
    known (a central directory): the header is then read with the first bytes of data."""

    name: str
    offset: int
    csize: int
    usize: int
    method: int
    crc: int
    header: int = -1
    mode: int = 0  # the Unix mode from the central directory (0: not recorded)
    flags: int = 0

    def row(self) -> list[Any]:
        """The compact form the sidecar and the cache keep (see ``from_row``)."""
        return [self.name, self.offset, self.csize, self.usize, self.method, self.crc,
                self.header, self.mode, self.flags]

    @classmethod
    def from_row(cls, row: Any) -> Member:
        """A member from ``row()``'s form; ValueError for any other shape (remote data)."""
        if not isinstance(row, list) or not 6 <= len(row) <= 9 or not isinstance(row[0], str) \
                or not all(isinstance(v, int) and not isinstance(v, bool) for v in row[1:]):
            raise ValueError("a member entry is not [name, offset, sizes, method, crc, ...]")
        m = cls(*row)
        if m.csize < 0 or m.usize < 0 or (m.offset < 0 and m.header < 0) \
                or not 0 <= m.crc <= _U32:
            raise ValueError(f"the entry of '{m.name}' has impossible numbers")
        return m


def read_central_directory(fetch: Fetch, size: int, label: str) -> list[Member]:
    """Every member the archive's central directory lists, read with one ranged request
    from the end (two when the directory is longer than that request); ArchiveError when
    the end records or the directory are damaged or do not fit an archive of ``size``."""
    if size < 22:
        raise ArchiveError(f"{label} is not a zip archive ({size} bytes)")
    first = max(0, size - TAIL)
    tail = fetch(first, size - first)
    if len(tail) != size - first:
        raise _changed(label)
    at = tail.rfind(b"PK\x05\x06")
    if at < 0 or at + 22 > len(tail):
        raise ArchiveError(f"{label} is not a zip archive (no end of central directory)")
    try:
        _, disk, cd_disk, _, count, cd_size, cd_offset, _ = _EOCD.unpack_from(tail, at)
        end = first + at  # where the central directory (and any zip64 records) must end
        if _U16 in (count,) or _U32 in (cd_size, cd_offset) or \
                tail[max(0, at - 20):at - 16] == b"PK\x06\x07":
            count, cd_size, cd_offset, end = _zip64_end(fetch, tail, first, at, label)
        elif disk or cd_disk:
            raise ValueError("a multi-disk archive")
        if cd_offset + cd_size > end or cd_size > MAX_DIRECTORY or count * 46 > cd_size:
            raise ValueError(f"a central directory of {count} entries in {cd_size} bytes at "
                             f"{cd_offset} does not fit")
        if cd_offset >= first:
            directory = tail[cd_offset - first:cd_offset - first + cd_size]
        else:
            directory = fetch(cd_offset, cd_size)
            if len(directory) != cd_size:
                raise _changed(label)
        return _parse_directory(directory, count, cd_offset, label)
    except (ValueError, struct.error, UnicodeDecodeError) as e:
        raise ArchiveError(f"{label}: its central directory is damaged ({e}); it cannot be "
                           "read in part - pull it, or push it again") from None


def _zip64_end(fetch: Fetch, tail: bytes, first: int, at: int, label: str
               ) -> tuple[int, int, int, int]:
    """(count, directory size, directory offset, where the directory ends) from the zip64
    end record that the locator before the end record points to."""
    sig, disk, z64, disks = _LOCATOR.unpack_from(tail, at - 20)
    if sig != b"PK\x06\x07" or disk or disks > 1:
        raise ValueError("no usable zip64 end locator")
    if z64 + 56 > first + at - 20:
        raise ValueError("the zip64 end record lies past its locator")
    if z64 >= first:
        record = tail[z64 - first:z64 - first + 56]
    else:
        record = fetch(z64, 56)
        if len(record) != 56:
            raise _changed(label)
    sig, _, _, _, disk, cd_disk, _, count, cd_size, cd_offset = _EOCD64.unpack_from(record)
    if sig != b"PK\x06\x06" or disk or cd_disk:
        raise ValueError("a damaged zip64 end record")
    return count, cd_size, cd_offset, z64


def _parse_directory(data: bytes, count: int, cd_offset: int, label: str) -> list[Member]:
    members = []
    off = 0
    for _ in range(count):
        (sig, _, _, flags, method, _, _, crc, csize, usize, name_len, extra_len, comment_len,
         _, _, external, header) = _CENTRAL.unpack_from(data, off)
        if sig != b"PK\x01\x02":
            raise ValueError(f"entry {len(members) + 1} has no header")
        raw = data[off + 46:off + 46 + name_len]
        if len(raw) != name_len:
            raise ValueError("an entry runs past the directory's end")
        name = raw.decode("utf-8" if flags & 0x800 else "cp437")
        extra = data[off + 46 + name_len:off + 46 + name_len + extra_len]
        usize, csize, header = _zip64_fields(extra, usize, csize, header)
        if header + 30 + name_len > cd_offset:
            raise ValueError(f"'{name}' starts past the members' end")
        members.append(Member(name, -1, csize, usize, method, crc, header, external >> 16,
                              flags))
        off += 46 + name_len + extra_len + comment_len
    return members


def _zip64_fields(extra: bytes, usize: int, csize: int, header: int) -> tuple[int, int, int]:
    off = 0
    while off + 4 <= len(extra):
        tag, n = struct.unpack_from("<HH", extra, off)
        if tag == 1:
            values = list(struct.unpack_from(f"<{n // 8}Q", extra, off + 4))
            if usize == _U32:
                usize = values.pop(0)
            if csize == _U32:
                csize = values.pop(0)
            if header == _U32:
                header = values.pop(0)
            break
        off += 4 + n
    if _U32 in (usize, csize, header):
        raise ValueError("a zip64 size or offset is missing")
    return usize, csize, header


def _changed(label: str) -> ArchiveError:
    return ArchiveError(f"{label} is shorter than listed: it was replaced or removed "
                        "meanwhile; try again")


class MemberReader(io.RawIOBase):
    """One member's content, read from the archive through ``fetch`` (ranged reads of at
    most WINDOW bytes) as the caller reads it.

    The member's declared sizes must be possible and fit the archive before anything is
    read; its size, CRC and ``digest`` (its content hash, when recorded) are checked when
    its last compressed byte has been read, before the output of that read is handed out:
    a damaged member raises ArchiveError instead of ending. Use through ``open``-like
    wrappers (``io.BufferedReader``) or ``read_all``.
    """

    def __init__(self, fetch: Fetch, member: Member, archive_size: int, label: str,
                 digest: str | None = None, window: int | None = None) -> None:
        super().__init__()
        self.fetch, self.m, self.size, self.label = fetch, member, archive_size, label
        self.digest = digest
        self.window = window or WINDOW
        m = member
        what = f"'{m.name}' in {label}"
        if m.flags & 0x1:
            raise ArchiveError(f"{what} is encrypted; resutil cannot read it")
        if m.method not in (STORED, DEFLATED):
            raise ArchiveError(f"{what} uses compression method {m.method}, which resutil "
                               "cannot read")
        if stat.S_ISLNK(m.mode):
            raise ArchiveError(f"{what} is a symbolic link; resutil does not read links")
        check_declared(label, m.name, m.method, m.csize, m.usize)
        start = m.offset if m.offset >= 0 else m.header
        if start + m.csize > archive_size:
            raise self._damaged("it runs past the archive's end")
        self._next = m.offset  # archive offset of the next compressed byte to fetch
        self._left = m.csize  # compressed bytes not fetched yet
        self._tail: bytes | memoryview = b""  # fetched, not inflated yet
        self._out = memoryview(b"")
        self._inflater = inflater() if m.method == DEFLATED else None
        self._produced = self._crc = 0
        self._hash = new_hasher() if digest else None
        self._done = False

    def readable(self) -> bool:
        return True

    def readinto(self, b: Any) -> int:
        while not self._out and not self._done:
            self._fill()
        n = min(len(b), len(self._out))
        b[:n] = self._out[:n]
        self._out = self._out[n:]
        return n

    def read_all(self) -> bytes:
        """The whole content (check it is small enough first: ``Member.usize``)."""
        parts = []
        while not self._done:
            self._fill()
            parts.append(bytes(self._out))
            self._out = memoryview(b"")
        return b"".join(parts)

    # -- internals -----------------------------------------------------------------------
    def _damaged(self, why: str) -> ArchiveError:
        return ArchiveError(f"'{self.m.name}' in {self.label} is damaged ({why}); refusing "
                            "it - push the experiment again from a machine that has it")

    def _get(self, start: int, length: int) -> bytes:
        data = self.fetch(start, length)
        if len(data) != length:
            raise _changed(self.label)
        return data

    def _input(self) -> None:
        """Fetch the next window of compressed bytes into ``_tail``."""
        if self._next < 0:  # the data starts after a local header not read yet
            m = self.m
            head_len = min(30 + len(m.name.encode("utf-8")) + HEAD_SLACK, self.size - m.header)
            want = min(head_len + min(m.csize, self.window), self.size - m.header)
            data = self._get(m.header, want)
            try:
                sig, _, _, _, _, _, _, _, _, name_len, extra_len = _LOCAL.unpack_from(data)
            except struct.error:
                raise self._damaged("its local header is cut short") from None
            if sig != b"PK\x03\x04":
                raise self._damaged("no local header where the directory says")
            self._next = m.header + 30 + name_len + extra_len
            if self._next + m.csize > self.size:
                raise self._damaged("it runs past the archive's end")
            got = data[30 + name_len + extra_len:][:m.csize]
            self._tail = got
            self._next += len(got)
            self._left -= len(got)
            return
        n = min(self._left, self.window)
        self._tail = self._get(self._next, n)
        self._next += n
        self._left -= n

    def _fill(self) -> None:
        """Produce the next piece of output into ``_out`` (at most WINDOW or INFLATE_STEP
        bytes); the last piece only once the member checked out."""
        m = self.m
        if not self._tail and self._left:
            self._input()
        if self._inflater is None:
            out: bytes | memoryview = self._tail
            self._tail = b""
            last = not self._left
        else:
            step = min(INFLATE_STEP, m.usize - self._produced + 1)
            try:
                out = self._inflater.decompress(self._tail, step)
            except (zlib.error, InflateError, ValueError) as e:
                raise self._damaged(str(e)) from None
            self._tail = self._inflater.unconsumed_tail
            last = not self._tail and not self._left and (len(out) < step or self._inflater.eof)
        self._produced += len(out)
        if self._produced > m.usize:
            raise self._damaged(f"it holds more than the {m.usize} bytes it declares")
        self._crc = crc32(out, self._crc)
        if self._hash is not None:
            self._hash.update(out)
        if last:
            self._check()
            self._done = True
        self._out = memoryview(out)

    def _check(self) -> None:
        if self._inflater is not None and not self._inflater.eof:
            raise self._damaged("its compressed data is cut short")
        if self._produced != self.m.usize:
            raise self._damaged(f"{self._produced} bytes instead of {self.m.usize}")
        if self._crc != self.m.crc:
            raise self._damaged("CRC mismatch")
        if self._hash is not None and self._hash.hexdigest() != self.digest:
            raise self._damaged("its content hash is not the recorded one")


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


