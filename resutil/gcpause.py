"""Pausing Python's cyclic garbage collector while many long-lived objects are built.

The collector starts every 700 new objects and walks the young ones, and now and then every
live object: building 10,000 metadata records, two graphs, or an archive of 20,000 files
triggers it again and again over objects that live until the work ends and hold no
reference cycles. (Mercurial's ``util.nogc`` does the same for its large indexes.)
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def gc_paused() -> Iterator[None]:
    """The collector paused for the block (nested blocks: only the outermost resumes it)."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            if gc.get_freeze_count() == 0:  # (someone else's freeze must not be undone)
                # Move everything built straight to the oldest generation; else the first
                # collection after enabling walks all of it at once.
                gc.freeze()
                gc.unfreeze()
            gc.enable()
