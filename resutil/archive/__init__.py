"""Experiment archives: one standard zip per experiment, streamed both ways.

Writing (a push):

- ``build``: ``build_archive`` zips an experiment folder in one pass, computing the archive
  hash and every file's manifest entry as it goes (``ArchiveInfo``);
- ``packer``: many small files packed whole, in this process and in a helper process
  (``python -m resutil.archive.packer``);
- ``unchanged``: files opened without following links, and checked not to have changed
  while they were read (``FileChanged``);
- ``writer``: ``ZipStreamWriter``, the zip format itself (headers, data descriptors,
  central directory, zip64);
- ``deflate``: the codec (ISA-L or zlib) and whether a file is worth deflating.

Reading (a pull, or one file of a remote archive). Archives are untrusted:

- ``checks``: what every reader checks first (member paths, declared sizes, free space,
  the recorded hash);
- ``extract``: ``extract_archive``, a downloaded zip into an empty folder;
- ``stream``: ``StreamExtractor``, a zip extracted as its bytes arrive;
- ``read``: one member of a remote archive through ranged reads (``MemberReader``), and
  the head of its metadata file (``meta_head_of``).

``fileio`` holds the file I/O both sides share (kernel copies checked by CRC).

The names below are re-exported here and loaded on first use, so that the packer's helper
process, which imports this package, loads only what packing needs.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .build import DEFAULT_DEFLATE_LIMIT, ArchiveInfo, build_archive
    from .checks import hash_mismatch, safe_member_path
    from .extract import extract_archive
    from .read import Member, MemberReader, meta_head_of, read_central_directory
    from .stream import LocalWriteError, NotStreamable, StreamExtractor

_HOMES = {
    "ArchiveInfo": "build", "DEFAULT_DEFLATE_LIMIT": "build", "build_archive": "build",
    "hash_mismatch": "checks", "safe_member_path": "checks",
    "extract_archive": "extract",
    "Member": "read", "MemberReader": "read", "meta_head_of": "read",
    "read_central_directory": "read",
    "LocalWriteError": "stream", "NotStreamable": "stream", "StreamExtractor": "stream",
}

__all__ = [
    "DEFAULT_DEFLATE_LIMIT", "ArchiveInfo", "LocalWriteError", "Member", "MemberReader",
    "NotStreamable", "StreamExtractor", "build_archive", "extract_archive", "hash_mismatch",
    "meta_head_of", "read_central_directory", "safe_member_path",
]


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(import_module(f".{home}", __name__), name)
    globals()[name] = value
    return value
