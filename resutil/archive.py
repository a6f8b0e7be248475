"""Experiment archives: one standard zip per experiment, streamed both ways.

Writing never holds an archive in memory: files are streamed through a hashing writer
with data descriptors, so the archive hash and every file's manifest hash come out of one
pass. Incompressible files are stored, compressible ones deflated at level 1. Reading
rejects any member that would land outside the target folder.
"""

from __future__ import annotations

import os
import stat
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import BinaryIO, Callable

from .errors import ArchiveError
from .metadata import EXP_FILE, Manifest, new_hasher, walk_files
from .progress import NO_PROGRESS, Callback

CHUNK = 4 << 20
SAMPLE = 64 << 10
# Content that is compressed already: deflating it costs time and gains nothing.
STORED_SUFFIXES = frozenset(
    ".zip .gz .tgz .bz2 .xz .zst .lz4 .7z .rar .png .jpg .jpeg .gif .webp .avif .heic .mp3 "
    ".mp4 .m4a .mkv .mov .avi .webm .ogg .flac .pt .pth .ckpt .safetensors .npz .parquet "
    ".feather .arrow .orc .h5 .hdf5 .jar .whl .pdf .docx .xlsx .pptx".split()
)
DEFAULT_DEFLATE_LIMIT = 64 << 20


@dataclass(frozen=True)
class ArchiveInfo:
    """What building an archive produced."""

    manifest: Manifest
    size: int
    hash: str


class _HashingWriter:
    """A write-only, unseekable stream: zipfile then writes data descriptors, in order."""

    def __init__(self, raw: BinaryIO, callback: Callback) -> None:
        self.raw = raw
        self.hash = new_hasher()
        self.size = 0
        self.callback = callback

    def write(self, data: bytes) -> int:
        self.raw.write(data)
        self.hash.update(data)
        n = len(data)
        self.size += n
        return n

    def flush(self) -> None:
        self.raw.flush()

    def tell(self) -> int:  # zipfile asks once, at the start
        return self.size

    def seekable(self) -> bool:
        return False


def choose_compression(path: Path, size: int, deflate_limit: int | None) -> int:
    """ZIP_STORED or ZIP_DEFLATED for one file, whichever costs less."""
    if size < 256 or path.suffix.lower() in STORED_SUFFIXES:
        return zipfile.ZIP_STORED
    if deflate_limit is not None and size > deflate_limit:
        return zipfile.ZIP_STORED
    with open(path, "rb") as f:
        sample = f.read(SAMPLE)
    if len(zlib.compress(sample, 1)) > 0.9 * len(sample):
        return zipfile.ZIP_STORED
    return zipfile.ZIP_DEFLATED


def build_archive(
    folder: Path,
    out: BinaryIO,
    finish_meta: Callable[[Manifest], bytes] | None = None,
    callback: Callback = NO_PROGRESS,
    deflate_limit: int | None = DEFAULT_DEFLATE_LIMIT,
) -> ArchiveInfo:
    """Zip ``folder`` into ``out``; ``finish_meta(manifest)`` supplies the metadata file.

    The metadata file is written last so that it can carry the manifest of every other
    file, computed while they were being archived.
    """
    files = [(rel, p) for rel, p in walk_files(folder) if rel != EXP_FILE]
    total = 0
    stats = []
    for rel, p in files:
        st = p.stat()
        stats.append(st)
        total += st.st_size
    callback.set_total(total)
    writer = _HashingWriter(out, callback)
    manifest: dict[str, tuple[int, str]] = {}
    buf = bytearray(CHUNK)
    view = memoryview(buf)
    with zipfile.ZipFile(writer, "w", allowZip64=True) as zf:  # type: ignore[arg-type]
        for (rel, path), st in zip(files, stats):
            info = zipfile.ZipInfo(rel, _date_time(st.st_mtime))
            info.external_attr = (stat.S_IMODE(st.st_mode) | stat.S_IFREG) << 16
            info.file_size = st.st_size
            info.compress_type = choose_compression(path, st.st_size, deflate_limit)
            info._compresslevel = 1  # type: ignore[attr-defined]  # read by ZipFile.open
            h = new_hasher()
            size = 0
            with open(path, "rb", buffering=0) as src, zf.open(info, "w") as dst:
                while n := src.readinto(buf):
                    chunk = view[:n]
                    h.update(chunk)
                    dst.write(chunk)
                    size += n
                    callback.advance(n)
            manifest[rel] = (size, h.hexdigest())
        man = Manifest(manifest)
        meta_bytes = finish_meta(man) if finish_meta else _existing(folder / EXP_FILE)
        if meta_bytes is not None:
            info = zipfile.ZipInfo(EXP_FILE, _date_time(None))
            info.external_attr = 0o644 << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            zf.writestr(info, meta_bytes)
    writer.flush()
    return ArchiveInfo(man, writer.size, writer.hash.hexdigest())


def _existing(path: Path) -> bytes | None:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        return None


def _date_time(mtime: float | None) -> tuple[int, int, int, int, int, int]:
    import time

    t = time.localtime(mtime)
    if t.tm_year < 1980:
        return (1980, 1, 1, 0, 0, 0)
    return t[:6]


def safe_member_path(name: str) -> PurePosixPath:
    """The relative path a member may be extracted to, or ArchiveError if unsafe."""
    clean = name.replace("\\", "/")
    p = PurePosixPath(clean)
    if (
        not clean
        or clean.startswith("/")
        or (len(clean) > 1 and clean[1] == ":")
        or any(part in ("..",) for part in p.parts)
        or "\x00" in clean
    ):
        raise ArchiveError(f"archive member '{name}' points outside the experiment folder; refusing to extract")
    return p


def extract_archive(archive: Path, dest: Path, callback: Callback = NO_PROGRESS) -> int:
    """Extract a zip into the empty folder ``dest``, checking every path and CRC.

    Returns the number of bytes written. Raises ArchiveError for a corrupt or unsafe
    archive; the caller removes ``dest`` then.
    """
    try:
        zf = zipfile.ZipFile(archive)
    except (zipfile.BadZipFile, OSError) as e:
        raise ArchiveError(f"{archive.name} is not a readable zip archive ({e})") from None
    written = 0
    root = dest.resolve()
    with zf:
        members = zf.infolist()
        for info in members:
            safe_member_path(info.filename)
            if stat.S_ISLNK(info.external_attr >> 16):
                raise ArchiveError(f"archive member '{info.filename}' is a symlink; refusing to extract")
        callback.set_total(sum(i.file_size for i in members))
        made: set[Path] = {root}
        buf = bytearray(CHUNK)
        view = memoryview(buf)
        for info in members:
            rel = safe_member_path(info.filename)
            target = root.joinpath(*rel.parts)
            if info.is_dir():
                target.mkdir(parents=True, exist_ok=True)
                made.add(target)
                continue
            parent = target.parent
            if parent not in made:
                parent.mkdir(parents=True, exist_ok=True)
                made.add(parent)
            try:
                with zf.open(info) as src, open(target, "xb", buffering=0) as dst:
                    while n := src.readinto(buf):  # type: ignore[attr-defined]
                        dst.write(view[:n])
                        written += n
                        callback.advance(n)
            except (zipfile.BadZipFile, zlib.error, EOFError) as e:
                raise ArchiveError(f"{archive.name} is corrupt at '{info.filename}' ({e})") from None
            except FileExistsError:
                raise ArchiveError(f"{archive.name} holds '{info.filename}' twice") from None
            mode = (info.external_attr >> 16) & 0o777
            if mode:
                os.chmod(target, mode | 0o600)
    return written
