"""The terminal tree of ``resutil lineage``: one experiment's upstream (or downstream)
experiments, each shown once, as a model the front end renders."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import networkx as nx


@dataclass
class TreeNode:
    """One line of ``resutil lineage``: an experiment, the edge that led here, its children.

    ``repeat`` is "shown above" for an experiment already expanded elsewhere in the tree,
    "cycle" for one that is its own ancestor; neither is expanded again.
    """

    identity: str
    attrs: dict
    via: str | None = None
    children: list[TreeNode] = field(default_factory=list)
    repeat: str | None = None


def lineage_tree(g: nx.DiGraph, root: str, downstream: bool = False) -> TreeNode:
    """The upstream (or downstream) tree of ``root`` in a decorated graph; each node once."""
    nxt = g.successors if downstream else g.predecessors

    def via(parent: str, child: str) -> str | None:
        edge = g.edges[parent, child] if downstream else g.edges[child, parent]
        return edge.get("label")

    top = TreeNode(root, g.nodes[root])
    expanded, on_path = {root}, {root}
    stack = [(top, iter(sorted(nxt(root))))]
    while stack:  # iterative: a chain of thousands of experiments must not hit recursion limits
        parent, it = stack[-1]
        child_id = next(it, None)
        if child_id is None:
            on_path.discard(parent.identity)
            stack.pop()
            continue
        child = TreeNode(child_id, g.nodes[child_id], via(parent.identity, child_id))
        parent.children.append(child)
        if child_id in on_path:
            child.repeat = "cycle"
        elif child_id in expanded:
            child.repeat = "shown above"
        else:
            expanded.add(child_id)
            on_path.add(child_id)
            stack.append((child, iter(sorted(nxt(child_id)))))
    return top
