"""The report's lineage graph as an SVG laid out here, in Python: no Graphviz needed.

Experiments are placed in columns by generation (``networkx.topological_generations``
over the graph with each dependency cycle collapsed into one node, so a cycle never stops
the layout: its members share a column and its edges are drawn red), upstream on the
left. Within a column, nodes are ordered by the mean row of their upstream experiments
(one barycentre pass), which keeps most edges short. Each node is a link to the
experiment's page; every text and attribute value is escaped.
"""

from __future__ import annotations

from dataclasses import dataclass
from html import escape

NODE_W, NODE_H = 230, 46
GAP_X, GAP_Y = 70, 14
PAD = 10
MAX_CHARS = 32  # a longer line is cut with "…" (the whole name is the node's tooltip)


@dataclass(frozen=True)
class Node:
    """One experiment of the graph: its key (identity), the link to its page, two lines of
    text, a tooltip, and a class for its colour (status)."""

    key: str
    href: str
    title: str
    line1: str
    line2: str
    css: str = ""


def layout(nodes: list[Node], edges: list[tuple[str, str]]
           ) -> tuple[dict[str, tuple[int, int]], set[tuple[str, str]]]:
    """Each node's (column, row), and the edges that lie on a dependency cycle."""
    import networkx as nx

    g = nx.DiGraph()
    g.add_nodes_from(n.key for n in nodes)
    g.add_edges_from((u, v) for u, v in edges if u in g and v in g)
    cond = nx.condensation(g)  # one node per strongly connected group: a DAG
    members = cond.graph["mapping"]  # node -> its group
    cyclic = {(u, v) for u, v in g.edges if members[u] == members[v]}
    order = {n.key: i for i, n in enumerate(nodes)}  # the given order (oldest first)
    column: dict[str, int] = {}
    rows: dict[str, int] = {}
    for col, groups in enumerate(nx.topological_generations(cond)):
        keys = [k for grp in groups for k in sorted(cond.nodes[grp]["members"], key=order.get)]

        def centre(k: str, col: int = col) -> tuple[float, int]:
            ups = [rows[u] for u in g.predecessors(k) if u in rows and column[u] < col]
            return (sum(ups) / len(ups) if ups else float("inf"), order[k])

        for row, k in enumerate(sorted(keys, key=centre)):
            column[k], rows[k] = col, row
    return {k: (column[k], rows[k]) for k in column}, cyclic


def lineage_svg(nodes: list[Node], edges: list[tuple[str, str]]) -> str:
    """The SVG markup (an ``<svg>`` element, for inlining in HTML or saving as a file)."""
    pos, cyclic = layout(nodes, edges)
    cols = max((c for c, _ in pos.values()), default=-1) + 1
    rows = max((r for _, r in pos.values()), default=-1) + 1
    width = max(cols * (NODE_W + GAP_X) - GAP_X + 2 * PAD, 2 * PAD)
    height = max(rows * (NODE_H + GAP_Y) - GAP_Y + 2 * PAD, 2 * PAD)

    def xy(key: str) -> tuple[int, int]:
        c, r = pos[key]
        return PAD + c * (NODE_W + GAP_X), PAD + r * (NODE_H + GAP_Y)

    out = [(f'<svg xmlns="http://www.w3.org/2000/svg" class="lineage" width="{width}" '
            f'height="{height}" viewBox="0 0 {width} {height}" role="img" '
            f'aria-label="lineage of {len(nodes)} experiments">'),
           ('<defs><marker id="arrow" viewBox="0 0 10 10" refX="10" refY="5" markerWidth="7" '
            'markerHeight="7" orient="auto-start-reverse"><path d="M 0 0 L 10 5 L 0 10 z" '
            'fill="#777"/></marker></defs>')]
    for u, v in edges:
        if u not in pos or v not in pos:
            continue
        (x1, y1), (x2, y2) = xy(u), xy(v)
        css = "edge cycle" if (u, v) in cyclic else "edge"
        if x2 > x1:  # the usual case: left to right
            sx, sy, ex, ey = x1 + NODE_W, y1 + NODE_H // 2, x2, y2 + NODE_H // 2
            mid = (sx + ex) / 2
            d = f"M {sx} {sy} C {mid} {sy}, {mid} {ey}, {ex} {ey}"
        else:  # within a cycle's column: loop out to the right
            sx, sy = x1 + NODE_W, y1 + NODE_H // 2
            ex, ey = x2 + NODE_W, y2 + NODE_H // 2
            bulge = x1 + NODE_W + GAP_X * 0.6
            d = f"M {sx} {sy} C {bulge} {sy}, {bulge} {ey}, {ex} {ey}"
        out.append(f'<path class="{css}" d="{d}" marker-end="url(#arrow)"/>')
    for n in nodes:
        x, y = xy(n.key)
        out.append(
            f'<a class="node" href="{_a(n.href)}" data-key="{_a(n.key)}">'
            f"<title>{_t(n.title)}</title>"
            f'<rect class="{_a(("box " + n.css).strip())}" x="{x}" y="{y}" width="{NODE_W}" '
            f'height="{NODE_H}" rx="6"/>'
            f'<text x="{x + 8}" y="{y + 19}" class="l1">{_t(_cut(n.line1))}</text>'
            f'<text x="{x + 8}" y="{y + 36}" class="l2">{_t(_cut(n.line2))}</text></a>')
    out.append("</svg>")
    return "\n".join(out)


def _cut(text: str) -> str:
    return text if len(text) <= MAX_CHARS else text[:MAX_CHARS - 1] + "…"


def _t(text: str) -> str:
    return escape(text, quote=False)


def _a(text: str) -> str:
    return escape(text, quote=True)
