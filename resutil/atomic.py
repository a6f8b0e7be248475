"""Writing a file so that readers see its old content or its new one, never a part of it.

The data goes to a hidden sibling (``.<name>.tmp<pid>-<thread>``, on the same disk) and is
renamed over the file; on any failure the sibling is removed and the file is untouched.
"""

from __future__ import annotations

import contextlib
import os
import threading
from pathlib import Path

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
