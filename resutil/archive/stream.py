"""Extracting an archive as its bytes arrive, so a pull writes every file once, straight
from the download (``StreamExtractor``); the same checks as ``extract``, plus the archive's
hash at the end."""

from __future__ import annotations

import errno
import os
import stat
import struct
import zlib
from collections.abc import Callable
from pathlib import Path

from ..errors import ArchiveError
from ..hashing import new_hasher
from .checks import (
    INFLATE_STEP,
    MAX_RATIO,
    check_declared,
    free_space,
    hash_mismatch,
    safe_member_path,
    space_error,
)
from .deflate import STORED, InflateError, crc32, inflater
from .fileio import apply_mode, create_member, write_all

_U32 = 0xFFFFFFFF


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
                raise space_error(self.label, self.committed, self.free)
            parent = os.path.dirname(target)
            if parent not in self.dirs:
                os.makedirs(parent, exist_ok=True)
                self.dirs.add(parent)
            self.fd = create_member(target, name, self.label)
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
            raise space_error(self.label, self.total + self.written + n, self.free)
        self.crc = crc32(data, self.crc)
        write_all(self.fd, data)
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
                apply_mode(self.root + safe_member_path(name), mode)
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
