"""The deflate codec zip members use, and whether a file is worth deflating.

ISA-L's implementation when its wheel is installed (the same format, ~3x faster than zlib
at level 1, the GIL released), else zlib. Every part of the archive layer compresses,
inflates and checksums through here.
"""

from __future__ import annotations

import os
import zlib

try:  # ISA-L's deflate: the same format, ~3x faster than zlib at level 1, GIL released
    from isal import isal_zlib as _deflate
except ImportError:  # pragma: no cover - platforms without an isal wheel
    _deflate = zlib  # type: ignore[assignment]

# The fastest level that still compresses: ISA-L's level 0 (zlib's stores). For a few KB of
# text it takes ~2/3 of level 1's time, its output ~40 % larger. Pushes to a local folder or
# NAS pack small files at this level (see ``remote.store``: CPU counts there, not bytes).
FAST_LEVEL = 0 if _deflate is not zlib else 1

STORED = 0
DEFLATED = 8
SAMPLE = 64 << 10  # the first bytes of a large file that decide its compression
TRIAL = 16 << 10
# Content that is compressed already: deflating it costs time and gains nothing.
STORED_SUFFIXES = frozenset(
    ".zip .gz .tgz .bz2 .xz .zst .lz4 .7z .rar .png .jpg .jpeg .gif .webp .avif .heic .mp3 "
    ".mp4 .m4a .mkv .mov .avi .webm .ogg .flac .pt .pth .ckpt .safetensors .npz .parquet "
    ".feather .arrow .orc .h5 .hdf5 .jar .whl .pdf .docx .xlsx .pptx".split()
)

crc32 = _deflate.crc32  # ISA-L's is ~9x faster than zlib's here; the same values
InflateError = _deflate.error  # what inflating a damaged stream raises


def inflate_raw(data: bytes) -> bytes:
    """Inverse of ``deflate_raw`` (ISA-L inflates small members ~1.5x faster than zlib)."""
    return _deflate.decompress(data, -15)


def inflater():
    """A streaming raw-deflate decompressor (``decompress``/``flush``/``eof``)."""
    return _deflate.decompressobj(-15)


def deflate_raw(data: bytes, level: int = 1) -> bytes:
    """Raw deflate (no zlib header), as zip stores it."""
    return _deflate.compress(data, level, -15)


def deflater(level: int = 1):
    """A streaming raw-deflate compressor (``compress``/``flush``)."""
    return _deflate.compressobj(level, zlib.DEFLATED, -15)


def choose_compression(path: str, size: int, deflate_limit: int | None,
                       head: bytes | None = None) -> int:
    """STORED or DEFLATED for one file, whichever costs less.

    ``head`` is the file's first bytes when the caller has read them already.
    """
    if size < 256 or os.path.splitext(path)[1].lower() in STORED_SUFFIXES:
        return STORED
    if deflate_limit is not None and size > deflate_limit:
        return STORED
    if head is None:
        with open(path, "rb") as f:
            head = f.read(SAMPLE)
    if head[:4096].isascii():  # text (CSV, JSON, logs) deflates well; skip the trial
        return DEFLATED
    if len(set(head[:512])) > 200:  # near-uniform bytes: random, encrypted, compressed
        return STORED
    trial = head[:TRIAL]
    return STORED if len(deflate_raw(trial)) > 0.9 * len(trial) else DEFLATED
