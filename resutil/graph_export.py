"""Render a DiGraph as Graphviz DOT, SVG or PNG, Mermaid, or node-link JSON.

Generic over what the nodes are (experiments, pipeline steps): a node carries ``label``
(text, may span lines) and ``kind``, which picks its style; an edge may carry ``label``
and ``kind`` (``"cycle"`` draws it red). DOT, Mermaid and JSON are written here as text
and need nothing installed; SVG and PNG run Graphviz's ``dot`` through the ``graphviz``
package.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any

import networkx as nx

from .errors import LineageError, MissingExtra

FORMATS = ("dot", "svg", "png", "mermaid", "json")
SUFFIXES = {".dot": "dot", ".gv": "dot", ".svg": "svg", ".png": "png", ".mmd": "mermaid",
            ".mermaid": "mermaid", ".json": "json"}
DOT_INSTALL_HINT = (
    "Graphviz's 'dot' program is not installed: apt-get install graphviz / "
    "brew install graphviz / conda install graphviz"
)

# kind -> Graphviz node attributes. Anything not listed is drawn as a plain box.
DOT_STYLES: dict[str, str] = {
    "local": 'style="rounded,filled" fillcolor="#dbe9ff" color="#3b6fb6"',
    "remote": 'style="rounded,filled" fillcolor="#fff1d6" color="#b7791f"',
    "both": 'style="rounded,filled" fillcolor="#ddf4e4" color="#2f855a"',
    "missing": 'style="rounded,dashed" color="#888888" fontcolor="#666666"',
    "step": 'style="filled" fillcolor="#eeeeee" color="#555555"',
}
# kind -> Mermaid classDef body.
MERMAID_STYLES: dict[str, str] = {
    "local": "fill:#dbe9ff,stroke:#3b6fb6",
    "remote": "fill:#fff1d6,stroke:#b7791f",
    "both": "fill:#ddf4e4,stroke:#2f855a",
    "missing": "fill:#ffffff,stroke:#888888,stroke-dasharray:5 5,color:#666666",
    "step": "fill:#eeeeee,stroke:#555555",
}


def export(g: nx.DiGraph, fmt: str) -> str | bytes:
    """``g`` in ``fmt`` (dot, svg, mermaid, json: text; png: bytes)."""
    writers: dict[str, Callable[[nx.DiGraph], str]] = {
        "dot": to_dot, "mermaid": to_mermaid, "json": to_json,
    }
    if fmt in writers:
        return writers[fmt](g)
    if fmt in ("svg", "png"):
        data = render_graphviz(to_dot(g), fmt)
        return data.decode("utf-8") if fmt == "svg" else data
    raise LineageError(f"unknown graph format '{fmt}'; use one of {', '.join(FORMATS)}")


def format_for_path(path: str) -> str | None:
    """The format a file name asks for by its suffix (``lineage.svg`` -> svg)."""
    m = re.search(r"\.[A-Za-z]+$", path)
    return SUFFIXES.get(m.group(0).lower()) if m else None


# -- DOT ----------------------------------------------------------------------------------
_DOT_ESCAPES = str.maketrans({"\\": "\\\\", '"': '\\"', "\n": "\\n", "\r": None})


def _dot_str(text: Any) -> str:
    """A DOT double-quoted string; newlines become centred line breaks."""
    return '"' + str(text).translate(_DOT_ESCAPES) + '"'


def to_dot(g: nx.DiGraph) -> str:
    """Graphviz DOT text, written directly (no Graphviz needed)."""
    name = g.graph.get("name") or "G"
    lines = [
        f"digraph {_dot_str(name)} {{",
        "  rankdir=LR;",
        '  node [shape=box fontname="Helvetica" fontsize=10];',
        '  edge [fontname="Helvetica" fontsize=9 color="#555555"];',
    ]
    append = lines.append
    kinds = {}
    for node, attrs in g.nodes(data=True):
        kind = attrs.get("kind")
        kinds[node] = kind
        style = DOT_STYLES.get(kind, "")  # type: ignore[arg-type]
        label = attrs.get("label", node)
        append(f"  {_dot_str(node)} [label={_dot_str(label)}{' ' + style if style else ''}];")
    for u, v, attrs in g.edges(data=True):
        extra = []
        label = attrs.get("label")
        if label:
            extra.append(f"label={_dot_str(label)}")
        if attrs.get("kind") == "cycle":
            extra.append('color="#d62728" fontcolor="#d62728" penwidth=2')
        elif kinds[u] == "missing" or kinds[v] == "missing":
            extra.append("style=dashed")
        append(f"  {_dot_str(u)} -> {_dot_str(v)}{' [' + ' '.join(extra) + ']' if extra else ''};")
    append("}")
    return "\n".join(lines) + "\n"


def render_graphviz(dot: str, fmt: str) -> bytes:
    """Run Graphviz's ``dot`` on DOT text; clear errors when it or its package is missing."""
    try:
        import graphviz
    except ImportError:
        raise MissingExtra(f"--format {fmt}", "graphviz") from None
    try:
        return graphviz.Source(dot).pipe(format=fmt, engine="dot")
    except graphviz.ExecutableNotFound:
        raise LineageError(DOT_INSTALL_HINT) from None
    except graphviz.CalledProcessError as e:
        detail = (e.stderr or b"").decode("utf-8", "replace").strip().splitlines()
        raise LineageError(
            f"Graphviz's 'dot' failed{': ' + detail[-1] if detail else ''}; "
            "try --format dot and render it yourself"
        ) from None


# -- Mermaid ------------------------------------------------------------------------------
# Mermaid entity codes for the characters that end or confuse a quoted label.
_MERMAID_ESCAPES = str.maketrans({
    "#": "#35;", '"': "#quot;", "<": "#lt;", ">": "#gt;", "&": "#amp;", "|": "#124;",
    "`": "#96;", "\n": "<br>", "\r": None,
})


def _mermaid_text(text: Any) -> str:
    """Text safe inside a quoted Mermaid label; newlines become ``<br>``."""
    return str(text).translate(_MERMAID_ESCAPES)


def to_mermaid(g: nx.DiGraph) -> str:
    """A Mermaid ``flowchart LR``; node ids are ``n0, n1, ...``, labels are quoted."""
    ids = {node: f"n{i}" for i, node in enumerate(g.nodes)}
    lines = ["flowchart LR"]
    append = lines.append
    by_kind: dict[str, list[str]] = {}
    for node, attrs in g.nodes(data=True):
        nid = ids[node]
        append(f'  {nid}["{_mermaid_text(attrs.get("label", node))}"]')
        kind = attrs.get("kind")
        if kind:
            by_kind.setdefault(str(kind), []).append(nid)
    for u, v, attrs in g.edges(data=True):
        label = attrs.get("label")
        dashed = g.nodes[u].get("kind") == "missing" or g.nodes[v].get("kind") == "missing"
        arrow = "-.->" if dashed else "-->"
        if label:
            append(f'  {ids[u]} {arrow}|"{_mermaid_text(label)}"| {ids[v]}')
        else:
            append(f"  {ids[u]} {arrow} {ids[v]}")
    for kind, members in by_kind.items():
        cls = re.sub(r"\W", "_", kind)
        style = MERMAID_STYLES.get(kind)
        if style:
            append(f"  classDef {cls} {style}")
        # Long class lines are split: some renderers choke on one huge line.
        for i in range(0, len(members), 500):
            append(f"  class {','.join(members[i:i + 500])} {cls}")
    return "\n".join(lines) + "\n"


# Mermaid's defaults (config maxEdges, maxTextSize): past them it draws an error, not a graph.
MERMAID_MAX_EDGES = 500
MERMAID_MAX_TEXT = 50_000


def mermaid_warning(g: nx.DiGraph, text: str) -> str | None:
    """Why a Mermaid renderer with default settings will refuse ``text``, if it will."""
    if g.number_of_edges() <= MERMAID_MAX_EDGES and len(text) <= MERMAID_MAX_TEXT:
        return None
    return (
        f"Mermaid draws at most {MERMAID_MAX_EDGES} edges and {MERMAID_MAX_TEXT:,} characters by "
        f"default (this graph: {g.number_of_edges()} edges, {len(text):,} characters); raise "
        "maxEdges/maxTextSize in the renderer, draw fewer experiments, or use --format svg"
    )


# -- JSON ---------------------------------------------------------------------------------
_PLAIN = (str, int, float, bool, type(None))


def _plain(value: Any) -> Any:
    """``value`` if JSON can hold it, else a marker to drop it (objects stay in memory)."""
    if isinstance(value, _PLAIN):
        return value
    if isinstance(value, (list, tuple)):
        items = [_plain(v) for v in value]
        return _DROP if _DROP in items else items
    if isinstance(value, dict):
        out = {str(k): _plain(v) for k, v in value.items()}
        return _DROP if _DROP in out.values() else out
    return _DROP


_DROP = object()


def to_json(g: nx.DiGraph) -> str:
    """Node-link JSON (as ``networkx.node_link_data`` with ``edges="links"``).

    Attributes JSON cannot hold (objects kept for the caller) are left out; an attribute
    named like a node-link key (``id``, ``source``, ``target``) is overridden by it.
    """

    def attrs(d: dict[str, Any]) -> dict[str, Any]:
        out = {}
        for k, v in d.items():
            p = _plain(v)
            if p is not _DROP:
                out[k] = p
        return out

    data = {
        "directed": True,
        "multigraph": False,
        "graph": attrs(g.graph),
        "nodes": [{**attrs(a), "id": n} for n, a in g.nodes(data=True)],
        "links": [{**attrs(a), "source": u, "target": v} for u, v, a in g.edges(data=True)],
    }
    return json.dumps(data, indent=1, ensure_ascii=False) + "\n"
