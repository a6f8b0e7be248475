"""Writing a file so that readers see its old content or its new one, never a part of it.

The data goes to a hidden sibling (``.<name>.tmp<pid>-<thread>``, on the same disk) and is
renamed over the file; on any failure the sibling is removed and the file is untouched.
Caches (the lineage and metrics indexes) are JSON files written this way (``write_cache``).
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
from pathlib import Path
from typing import Any

TMP_MARK = ".tmp"


def write_atomic(path: Path, data: bytes) -> None:
    """Replace ``path`` with ``data`` in one step (raises what writing raised)."""
    tmp = path.with_name(f".{path.name}{TMP_MARK}{os.getpid()}-{threading.get_ident()}")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()  # a full disk must not keep a partial copy
        raise


def read_cache(path: Path, version: str) -> dict[str, Any]:
    """The entries of a JSON cache file written by ``write_cache`` with the same
    ``version``; {} when it is missing, unreadable or of another version."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    if not isinstance(data, dict) or data.get("version") != version:
        return {}
    entries = data.get("entries")
    return entries if isinstance(entries, dict) else {}


def write_cache(path: Path, version: str, entries: dict[str, Any]) -> None:
    """Replace a JSON cache file; a cache is an optimisation, so a folder that cannot be
    written (read-only results, a full disk) is no error."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(path, json.dumps({"version": version, "entries": entries},
                                      separators=(",", ":"), default=str).encode("utf-8"))
    except OSError:
        pass
