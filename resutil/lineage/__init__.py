"""The lineage over experiments, local and remote, built from metadata only.

- ``index``: the cached metadata index (``collect``: identity -> ``Record`` for every
  experiment; a local head is read once per change, a remote sidecar once per version).
- ``graph``: the networkx DAG over those records (``build_graph``), the views the front
  ends draw (``lineage_view``) and their problems (cycles, dangling references,
  experiments whose metadata cannot be used).
- ``tree``: the model of the ``resutil lineage`` tree (``lineage_tree``).
"""

from __future__ import annotations

from typing import Any

from .index import (
    BROKEN,
    INDEX_VERSION,
    LOCAL_INDEX,
    REMOTE_INDEX,
    Record,
    collect,
    dependents,
    local_records,
    unreadable,
)

# networkx takes ~0.1 s to import: ``graph`` and ``tree`` load when first used, so that
# commands that only need the index (list, rm, show) do without it.
_LAZY = {
    "DIRECTIONS": "graph", "LineageView": "graph", "Problems": "graph", "build_graph": "graph",
    "decorate": "graph", "find_problems": "graph",
    "lineage_view": "graph", "mark_cycles": "graph", "resolve_nodes": "graph",
    "select": "graph", "TreeNode": "tree", "lineage_tree": "tree",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "BROKEN", "DIRECTIONS", "INDEX_VERSION", "LOCAL_INDEX", "REMOTE_INDEX", "LineageView",
    "Problems", "Record", "TreeNode", "build_graph", "collect", "decorate", "dependents",
    "find_problems", "lineage_tree", "lineage_view", "local_records", "mark_cycles",
    "resolve_nodes", "select", "unreadable",
]
