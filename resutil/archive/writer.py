"""A minimal streaming writer for standard zip archives (PKWARE APPNOTE 6.3, zip64).

Why not ``zipfile``: it compresses in the writing thread and cannot take data that was
compressed elsewhere, so a folder of many small files could use only one core. This
writer takes finished members, members that another process wrote (``adopt``: see
``packer``) and streamed members (large files, with a data descriptor), and never seeks,
so its output can be hashed as it is written. Reading a whole archive stays with
``zipfile`` (``extract``); members of a remote one are read by ``read``.
"""

from __future__ import annotations

import functools
import struct
import time
from collections.abc import Iterable
from typing import BinaryIO

from .deflate import DEFLATED, crc32, deflater

_U32 = 0xFFFFFFFF
_U16 = 0xFFFF
UTF8 = 0x0800  # flag bit 11: the name is UTF-8
DESCRIPTOR = 0x0008  # flag bit 3: sizes and CRC follow the data
LOCAL_SIGNATURE = 0x04034B50
LOCAL_HEADER = struct.Struct("<IHHHHHIIIHH")  # then the name (and any extra field)
LOCAL_SIZE = LOCAL_HEADER.size


@functools.lru_cache(maxsize=4096)
def dos_stamp(second: int) -> tuple[int, int]:
    """The zip (time, date) fields for a Unix time: local time, 2 s resolution, >= 1980."""
    t = time.localtime(second)
    if t.tm_year < 1980:
        return 0, (1 << 5) | 1  # 1980-01-01 00:00:00
    return (t.tm_hour << 11) | (t.tm_min << 5) | (t.tm_sec // 2), \
        ((t.tm_year - 1980) << 9) | (t.tm_mon << 5) | t.tm_mday


def stamp_of(mtime: float | None) -> tuple[int, int]:
    """``dos_stamp`` of a file's mtime (None: now)."""
    return dos_stamp(int(time.time() if mtime is None else mtime))


# One central-directory entry: (name, method, time, date, crc, csize, usize, offset, mode, flags)
Entry = tuple


def member_bytes(name: bytes, method: int, stamp: tuple[int, int], crc: int, usize: int,
                 payload: bytes) -> bytes:
    """Local header + payload of a complete member smaller than 4 GiB (no zip64 needed)."""
    return b"".join((LOCAL_HEADER.pack(LOCAL_SIGNATURE, 20, UTF8, method, stamp[0], stamp[1],
                                       crc, len(payload), usize, len(name), 0), name, payload))


_STREAM_EXTRA = 20  # begin_stream's zip64 extra field: tag, size, two 8-byte sizes


def member_rows(entries: list[Entry]) -> list[list]:
    """[name, data offset, compressed size, size, method, CRC] of each member written here
    (``ZipStreamWriter.entries``), in order: where a reader of one member finds its data
    (after its local header, its name and, for a streamed member, its zip64 extra field)."""
    return [[name.decode("utf-8"),
             offset + LOCAL_SIZE + len(name) + (_STREAM_EXTRA if flags & DESCRIPTOR else 0),
             csize, usize, method, crc]
            for name, method, _, _, crc, csize, usize, offset, _, flags in entries]


class ZipStreamWriter:
    """Append members to ``out`` (only ``write`` is used), then ``close()``."""

    def __init__(self, out: BinaryIO) -> None:
        self.out = out
        self.pos = 0
        self.entries: list[Entry] = []
        self._central: tuple[int, list[bytes]] = (0, [])  # see prepare_central

    def write(self, data: bytes | memoryview) -> None:
        """Raw bytes into the archive (members packed by the caller)."""
        self.out.write(data)
        self.pos += len(data)

    def add(self, name: str, stamp: tuple[int, int], mode: int, method: int, crc: int,
            usize: int, payload: bytes) -> None:
        """A complete member: ``payload`` is the stored or raw-deflated content."""
        if len(payload) >= _U32 or usize >= _U32:
            e = self.begin_stream(name, stamp, mode, method)
            self.write(payload)
            self.end_stream(e, crc, len(payload), usize)
            return
        raw = name.encode("utf-8")
        self.entries.append((raw, method, stamp[0], stamp[1], crc, len(payload), usize,
                             self.pos, mode, UTF8))
        self.write(member_bytes(raw, method, stamp, crc, usize, payload))

    def adopt(self, entries: list[Entry], base: int) -> None:
        """Members that someone else wrote at ``base`` (their offsets count from there);
        the caller has advanced the output with ``appended``."""
        if base == 0:
            self.entries.extend(entries)
        else:
            self.entries.extend((name, method, tm, dt, crc, csize, usize, offset + base, mode, flags)
                                for name, method, tm, dt, crc, csize, usize, offset, mode, flags
                                in entries)

    def begin_stream(self, name: str, stamp: tuple[int, int], mode: int, method: int) -> Entry:
        """Write the local header of a member whose sizes follow in a data descriptor."""
        raw = name.encode("utf-8")
        e = (raw, method, stamp[0], stamp[1], 0, 0, 0, self.pos, mode, UTF8 | DESCRIPTOR)
        extra = struct.pack("<HHQQ", 1, 16, 0, 0)  # _STREAM_EXTRA bytes
        self.write(LOCAL_HEADER.pack(LOCAL_SIGNATURE, 45, e[9], method, stamp[0], stamp[1], 0,
                                     _U32, _U32, len(raw), len(extra)) + raw + extra)
        return e

    def appended(self, n: int) -> None:
        """``n`` bytes of member data were written to the output by someone else."""
        self.pos += n

    def end_stream(self, e: Entry, crc: int, csize: int, usize: int) -> None:
        """Finish a member begun with ``begin_stream`` (zip64 data descriptor)."""
        self.write(struct.pack("<IIQQ", 0x08074B50, crc, csize, usize))
        self.entries.append(e[:4] + (crc, csize, usize) + e[7:])

    def add_stream(self, name: str, stamp: tuple[int, int], mode: int, method: int,
                   chunks: Iterable[bytes]) -> tuple[int, int]:
        """A member whose content arrives in chunks (large files); returns (usize, crc).

        Sizes follow in a zip64 data descriptor, so nothing is held in memory.
        """
        e = self.begin_stream(name, stamp, mode, method)
        comp = deflater() if method == DEFLATED else None
        crc = usize = csize = 0
        for chunk in chunks:
            crc = crc32(chunk, crc)
            usize += len(chunk)
            out = comp.compress(chunk) if comp else chunk
            if out:
                self.write(out)
                csize += len(out)
        if comp:
            tail = comp.flush()
            self.write(tail)
            csize += len(tail)
        self.end_stream(e, crc, csize, usize)
        return usize, crc

    def described(self) -> dict[int, int]:
        """Header offset -> compressed size of each member whose sizes follow its data."""
        return {e[7]: e[5] for e in self.entries if e[9] & DESCRIPTOR}

    def prepare_central(self) -> None:
        """Make the central-directory records of the members so far now (while waiting for
        something else), for ``close`` to write."""
        done, made = self._central
        more = b"".join(_central_records(self.entries[done:]))
        self._central = (len(self.entries), [*made, more])

    def close(self) -> None:
        """Write the central directory and end records."""
        start = self.pos
        done, made = self._central
        self.write(b"".join([*made, *_central_records(self.entries[done:])]))
        size = self.pos - start
        count = len(self.entries)
        if count >= _U16 or start >= _U32 or size >= _U32:
            z64 = self.pos
            self.write(struct.pack("<IQHHIIQQQQ", 0x06064B50, 44, (3 << 8) | 45, 45, 0, 0,
                                    count, count, size, start))
            self.write(struct.pack("<IIQI", 0x07064B50, 0, z64, 1))
        self.write(struct.pack(
            "<IHHHHIIH", 0x06054B50, 0, 0, min(count, _U16), min(count, _U16),
            min(size, _U32), min(start, _U32), 0,
        ))


def _central_records(entries: list[Entry]) -> list[bytes]:
    """The central-directory records of ``entries`` (parts to join)."""
    central = _CENTRAL.pack
    parts: list[bytes] = []
    for name, method, tm, dt, crc, csize, usize, offset, mode, flags in entries:
        described = flags & DESCRIPTOR
        if not described and csize < _U32 and usize < _U32 and offset < _U32:
            parts += (central(0x02014B50, (3 << 8) | 45, 20, flags, method, tm, dt, crc,
                              csize, usize, len(name), 0, 0, 0, 0, (mode & 0xFFFF) << 16,
                              offset), name)  # the common case: no zip64 field
            continue
        fields = []
        if usize >= _U32 or described:
            fields.append(usize)
        if csize >= _U32 or described:
            fields.append(csize)
        if offset >= _U32:
            fields.append(offset)
        extra = struct.pack(f"<HH{len(fields)}Q", 1, 8 * len(fields), *fields) if fields else b""
        parts.append(central(
            0x02014B50, (3 << 8) | 45, 45 if fields else 20, flags, method, tm, dt, crc,
            _U32 if (csize >= _U32 or described) else csize,
            _U32 if (usize >= _U32 or described) else usize,
            len(name), len(extra), 0, 0, 0, (mode & 0xFFFF) << 16,
            _U32 if offset >= _U32 else offset,
        ))
        parts.append(name)
        parts.append(extra)
    return parts


_CENTRAL = struct.Struct("<IHHHHHHIIIHHHHHII")
