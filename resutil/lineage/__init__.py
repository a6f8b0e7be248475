"""The lineage over experiments, local and remote, built from metadata only.

- ``index``: the cached metadata index (``collect``: identity -> ``Record`` for every
  experiment; a local head is read once per change, a remote sidecar once per version).
- ``graph``: the networkx DAG over those records (``build_graph``), the views the front
  ends draw (``lineage_view``) and their problems (cycles, dangling references,
  experiments whose metadata cannot be used).
- ``tree``: the model of the ``resutil lineage`` tree (``lineage_tree``).
"""

from __future__ import annotations

from .graph import (
    DIRECTIONS, LineageView, Problems, build_graph, decorate, dependents, find_problems,
    gc_paused, lineage_view, mark_cycles, resolve_nodes, select,
)
from .index import BROKEN, INDEX_VERSION, LOCAL_INDEX, REMOTE_INDEX, Record, collect, unreadable
from .tree import TreeNode, lineage_tree

__all__ = [
    "BROKEN", "DIRECTIONS", "INDEX_VERSION", "LOCAL_INDEX", "REMOTE_INDEX", "LineageView",
    "Problems", "Record", "TreeNode", "build_graph", "collect", "decorate", "dependents",
    "find_problems", "gc_paused", "lineage_tree", "lineage_view", "mark_cycles",
    "resolve_nodes", "select", "unreadable",
]
