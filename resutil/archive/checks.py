"""The checks every reader applies to an untrusted archive: where a member may land, which
declared sizes can be true, whether they fit the disk, whether it is the archive recorded."""

from __future__ import annotations

import os
from pathlib import Path

from ..errors import ArchiveError
from .deflate import DEFLATED, STORED

# Deflate encodes at most 258 bytes in 2 bits: an archive that declares more per byte lies.
# (All-zero files reach 1030:1 with ISA-L level 1 and zlib alike, so no lower bound.)
MAX_RATIO = 1032
INFLATE_STEP = 4 << 20  # most bytes one inflate call may produce while streaming


def safe_member_path(name: str) -> str:
    """The relative path a member may be extracted to, or ArchiveError if unsafe."""
    clean = name.replace("\\", "/")
    parts = clean.split("/")
    if (
        not clean
        or clean.startswith("/")
        or (len(clean) > 1 and clean[1] == ":")
        or ".." in parts
        or "\x00" in clean
    ):
        raise ArchiveError(f"archive member '{name}' points outside the experiment folder; refusing to extract")
    return "/".join(p for p in parts if p not in ("", "."))


def check_declared(label: str, name: str, method: int, csize: int, usize: int) -> None:
    """ArchiveError unless a member's declared sizes can be true: a stored member is as
    large as its data, a deflated one at most MAX_RATIO times (deflate cannot encode more)."""
    if method == STORED and csize != usize:
        raise ArchiveError(f"{label} is corrupt at '{name}' (stored, yet its sizes differ)")
    if method == DEFLATED and usize > MAX_RATIO * max(csize, 1):
        raise ArchiveError(
            f"{label} declares {size_text(usize)} for '{name}' from {size_text(csize)} of "
            f"deflated data, more than deflate can encode ({MAX_RATIO}:1): its headers lie; "
            "refusing to extract it - push it again from a machine that has it"
        )


def free_space(folder: str | Path) -> tuple[int, int]:
    """(bytes free to this user, block size) on the file system of ``folder``."""
    st = os.statvfs(folder)
    block = st.f_frsize or st.f_bsize or 4096
    return st.f_bavail * block, block


def space_error(label: str, need: int, free: int) -> ArchiveError:
    return ArchiveError(
        f"no space left for {label}: it needs {size_text(need)}, the results folder's "
        f"disk has {size_text(free)} free; nothing was kept - free some space and pull again"
    )


def size_text(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if n < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n} B"


def hash_mismatch(label: str) -> ArchiveError:
    """The error for an archive that is not the one its sidecar recorded."""
    return ArchiveError(
        f"{label} on the remote does not match its recorded hash (corrupt, or its push was "
        "interrupted); push it again from a machine that has it"
    )
