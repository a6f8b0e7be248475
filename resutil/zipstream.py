"""A minimal streaming writer for standard zip archives (PKWARE APPNOTE 6.3, zip64).

Why not ``zipfile``: it compresses in the writing thread and cannot take data that was
compressed elsewhere, so a folder of many small files could use only one core. This
writer takes finished members (already deflated by worker threads) and streamed members
(large files, with a data descriptor), and never seeks, so its output can be hashed as it
is written. Reading stays with ``zipfile``.
"""

from __future__ import annotations

import struct
import zlib
from typing import BinaryIO, Iterable

try:  # ISA-L's deflate: the same format, ~3x faster than zlib at level 1, GIL released
    from isal import isal_zlib as _deflate
except ImportError:  # pragma: no cover - platforms without an isal wheel
    _deflate = zlib  # type: ignore[assignment]

STORED = 0
DEFLATED = 8
_U32 = 0xFFFFFFFF
_U16 = 0xFFFF
_UTF8 = 0x0800
_DESCRIPTOR = 0x0008


def deflate_raw(data: bytes, level: int = 1) -> bytes:
    """Raw deflate (no zlib header), as zip stores it."""
    return _deflate.compress(data, level, -15)


def deflater(level: int = 1):
    """A streaming raw-deflate compressor (``compress``/``flush``)."""
    return _deflate.compressobj(level, zlib.DEFLATED, -15)


def _dos_time(dt: tuple[int, int, int, int, int, int]) -> tuple[int, int]:
    y, mo, d, h, mi, s = dt
    return (h << 11) | (mi << 5) | (s // 2), ((y - 1980) << 9) | (mo << 5) | d


class _Entry:
    __slots__ = ("name", "method", "time", "date", "crc", "csize", "usize", "offset", "mode", "flags")

    def __init__(self, name, method, dt, mode, offset, flags):
        self.name = name.encode("utf-8")
        self.method = method
        self.time, self.date = _dos_time(dt)
        self.mode = mode
        self.offset = offset
        self.flags = flags | _UTF8
        self.crc = self.csize = self.usize = 0


class ZipStreamWriter:
    """Append members to ``out`` (only ``write`` is used), then ``close()``."""

    def __init__(self, out: BinaryIO) -> None:
        self.out = out
        self.pos = 0
        self.entries: list[_Entry] = []

    def _write(self, data: bytes | memoryview) -> None:
        self.out.write(data)
        self.pos += len(data)

    @staticmethod
    def member(name: str, dt, mode: int, method: int, crc: int, usize: int, payload: bytes
               ) -> tuple[_Entry, bytes]:
        """A complete member as (entry, local header + payload), ready for ``add_members``.

        Needs no writer state, so worker threads can build members in parallel.
        """
        e = _Entry(name, method, dt, mode, 0, 0)
        e.crc, e.csize, e.usize = crc, len(payload), usize
        zip64 = e.csize >= _U32 or e.usize >= _U32
        extra = struct.pack("<HHQQ", 1, 16, e.usize, e.csize) if zip64 else b""
        header = struct.pack(
            "<IHHHHHIIIHH", 0x04034B50, 45 if zip64 else 20, e.flags, method, e.time, e.date,
            crc, _U32 if zip64 else e.csize, _U32 if zip64 else e.usize, len(e.name), len(extra),
        )
        return e, b"".join((header, e.name, extra, payload))

    def add_members(self, members: list[tuple[_Entry, bytes]]) -> None:
        """Append members built by ``member``, in one write."""
        pos = self.pos
        for e, data in members:
            e.offset = pos
            pos += len(data)
            self.entries.append(e)
        self._write(b"".join(data for _, data in members))

    def add(self, name: str, dt, mode: int, method: int, crc: int, usize: int, payload: bytes) -> None:
        """A complete member: ``payload`` is the stored or raw-deflated content."""
        self.add_members([self.member(name, dt, mode, method, crc, usize, payload)])

    def begin_stream(self, name: str, dt, mode: int, method: int) -> _Entry:
        """Write the local header of a member whose sizes follow in a data descriptor."""
        e = _Entry(name, method, dt, mode, self.pos, _DESCRIPTOR)
        extra = struct.pack("<HHQQ", 1, 16, 0, 0)
        self._write(struct.pack(
            "<IHHHHHIIIHH", 0x04034B50, 45, e.flags, method, e.time, e.date, 0, _U32, _U32,
            len(e.name), len(extra),
        ) + e.name + extra)
        return e

    def appended(self, n: int) -> None:
        """``n`` bytes of member data were written to the output by someone else."""
        self.pos += n

    def end_stream(self, e: _Entry, crc: int, csize: int, usize: int) -> None:
        """Finish a member begun with ``begin_stream`` (zip64 data descriptor)."""
        e.crc, e.csize, e.usize = crc, csize, usize
        self._write(struct.pack("<IIQQ", 0x08074B50, crc, csize, usize))
        self.entries.append(e)

    def add_stream(self, name: str, dt, mode: int, method: int, chunks: Iterable[bytes]) -> tuple[int, int]:
        """A member whose content arrives in chunks (large files); returns (usize, crc).

        Sizes follow in a zip64 data descriptor, so nothing is held in memory.
        """
        e = self.begin_stream(name, dt, mode, method)
        comp = deflater() if method == DEFLATED else None
        crc = usize = csize = 0
        for chunk in chunks:
            crc = zlib.crc32(chunk, crc)
            usize += len(chunk)
            out = comp.compress(chunk) if comp else chunk
            if out:
                self._write(out)
                csize += len(out)
        if comp:
            tail = comp.flush()
            self._write(tail)
            csize += len(tail)
        self.end_stream(e, crc, csize, usize)
        return usize, crc

    def close(self) -> None:
        """Write the central directory and end records."""
        start = self.pos
        for e in self.entries:
            fields = []
            if e.usize >= _U32 or e.flags & _DESCRIPTOR:
                fields.append(e.usize)
            if e.csize >= _U32 or e.flags & _DESCRIPTOR:
                fields.append(e.csize)
            if e.offset >= _U32:
                fields.append(e.offset)
            extra = struct.pack(f"<HH{len(fields)}Q", 1, 8 * len(fields), *fields) if fields else b""
            self._write(struct.pack(
                "<IHHHHHHIIIHHHHHII", 0x02014B50, (3 << 8) | 45, 45 if fields else 20, e.flags,
                e.method, e.time, e.date, e.crc,
                _U32 if (e.csize >= _U32 or e.flags & _DESCRIPTOR) else e.csize,
                _U32 if (e.usize >= _U32 or e.flags & _DESCRIPTOR) else e.usize,
                len(e.name), len(extra), 0, 0, 0, (e.mode & 0xFFFF) << 16,
                _U32 if e.offset >= _U32 else e.offset,
            ) + e.name + extra)
        size = self.pos - start
        count = len(self.entries)
        if count >= _U16 or start >= _U32 or size >= _U32:
            z64 = self.pos
            self._write(struct.pack("<IQHHIIQQQQ", 0x06064B50, 44, (3 << 8) | 45, 45, 0, 0,
                                    count, count, size, start))
            self._write(struct.pack("<IIQI", 0x07064B50, 0, z64, 1))
        self._write(struct.pack(
            "<IHHHHIIH", 0x06054B50, 0, 0, min(count, _U16), min(count, _U16),
            min(size, _U32), min(start, _U32), 0,
        ))
