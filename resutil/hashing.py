"""The content hash of manifests and archives (a module of its own so that the archive
helper process imports nothing heavier)."""

from __future__ import annotations

from typing import Any

import xxhash

HASH_ALGORITHM = "xxh128"


def new_hasher(data: bytes = b"") -> Any:
    """The content hash used in manifests and for archives."""
    return xxhash.xxh3_128(data)


def hexdigest(data: bytes) -> str:
    """``new_hasher(data).hexdigest()`` in one call."""
    return xxhash.xxh3_128_hexdigest(data)
