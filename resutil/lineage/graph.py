"""The lineage DAG (networkx) over the index's records, and what the front ends show of
it: a view around some experiments, decorated for display, with its problems (cycles,
references to experiments found nowhere, experiments whose metadata cannot be used).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import networkx as nx

from ..errors import ExperimentError, LineageError
from ..gcpause import gc_paused
from ..naming import IDENTITY_LEN
from ..project import Project
from .index import (  # noqa: F401 (dependents: re-exported)
    Record,
    collect,
    dependents,
    unreadable,
)


def build_graph(records: dict[str, Record]) -> nx.DiGraph:
    """Nodes are identities; an edge upstream -> downstream carries how it was found.

    A dependency on an experiment that exists nowhere becomes a node with ``missing=True``.
    """
    g = nx.DiGraph()
    g.add_nodes_from((ident, {"record": rec, "missing": False}) for ident, rec in records.items())
    edges = []
    for ident, rec in records.items():
        for dep in rec.meta.dependencies:
            up = dep.identity
            if up not in g:
                g.add_node(up, record=None, missing=True, name=dep.name)
            edges.append((up, ident, {"source": dep.source}))
    g.add_edges_from(edges)
    return g


# -- what `resutil graph` and `resutil lineage` show ---------------------------------------
DIRECTIONS = ("ancestors", "descendants")


@dataclass
class Problems:
    """Dependency cycles (each a list of identities) and references to unknown experiments."""

    cycles: list[list[str]] = field(default_factory=list)
    dangling: list[tuple[str, str]] = field(default_factory=list)  # (experiment, missing dep)
    searched: str = "neither local nor on the remote"  # where a dangling dep was looked for
    unreadable: list[str] = field(default_factory=list)  # experiments shown without upstream

    def __bool__(self) -> bool:
        return bool(self.cycles or self.dangling or self.unreadable)

    def messages(self, g: nx.DiGraph) -> list[str]:
        """One line per problem, naming experiments by their full names."""

        def name(ident: str) -> str:
            return g.nodes[ident].get("name", ident) if ident in g else ident

        out = [
            "dependency cycle: " + " -> ".join(name(i) for i in [*cycle, cycle[0]])
            for cycle in self.cycles
        ]
        out += [
            f"{name(exp)} depends on {name(dep)}, which is {self.searched}"
            for exp, dep in self.dangling
        ]
        out += [f"{problem} (shown without its upstream experiments)"
                for problem in self.unreadable]
        return out


@dataclass
class LineageView:
    """A display graph (plain node/edge attributes, ready for ``graph_export.export``)."""

    graph: nx.DiGraph
    problems: Problems
    roots: list[str] = field(default_factory=list)  # identities the user asked about


def lineage_view(
    project: Project,
    queries: list[str] | tuple[str, ...] = (),
    direction: str | None = None,
    remote: bool = True,
) -> LineageView:
    """The lineage of ``queries`` (all experiments when empty), decorated for display.

    ``direction`` keeps only ancestors or descendants of the named experiments; without it
    both are kept. Cycles and dangling references are reported in ``problems``, not raised.
    """
    with gc_paused():
        records = collect(project, remote=remote)
        full = build_graph(records)
        roots = resolve_nodes(project, full, queries)
        for root in roots:  # a named experiment whose upstream cannot be known: an error
            if root in records and records[root].problem:
                raise ExperimentError(records[root].problem)  # type: ignore[arg-type]
        g = decorate(select(full, roots, direction))
        problems = find_problems(g)
        problems.unreadable = unreadable(records)
    if not remote or project.no_remote:
        problems.searched = "not local (the remote was not searched)"
    mark_cycles(g, problems)
    return LineageView(g, problems, roots)


def resolve_nodes(project: Project, g: nx.DiGraph, queries: list[str] | tuple[str, ...]) -> list[str]:
    """Identities for names, identities or unique prefixes (unknown upstream ones too)."""
    if not queries:
        return []
    names = [_node_name(g, n) for n in g]
    out = []
    for q in queries:
        ident = project.workspace.resolve(q, names)[:IDENTITY_LEN]
        if ident not in g:
            raise LineageError(f"{q} is not in the lineage graph")
        if ident not in out:
            out.append(ident)
    return out


def select(g: nx.DiGraph, roots: list[str], direction: str | None = None) -> nx.DiGraph:
    """The subgraph of ``roots`` and their ancestors and/or descendants (all of g if none)."""
    if direction not in (None, *DIRECTIONS):
        raise LineageError(f"direction must be one of {', '.join(DIRECTIONS)}")
    if not roots:
        return g
    keep = set(roots)
    for r in roots:
        if direction in (None, "ancestors"):
            keep |= nx.ancestors(g, r)
        if direction in (None, "descendants"):
            keep |= nx.descendants(g, r)
    return g.subgraph(keep)


def decorate(g: nx.DiGraph) -> nx.DiGraph:
    """A copy of a ``build_graph`` graph with plain attributes: label, kind and facts.

    kind is ``local``, ``remote``, ``both`` or ``missing``; an edge's label says how the
    dependency was found.
    """
    nodes = []
    for ident in sorted(g):
        attrs = g.nodes[ident]
        rec: Record | None = attrs.get("record")
        if rec is None:
            name = attrs.get("name", ident)
            nodes.append((ident, {"name": name, "kind": "missing", "label": f"{name}\nmissing"}))
            continue
        meta = rec.meta
        kind = "both" if rec.local and rec.remote else "local" if rec.local else "remote"
        comment = rec.name[23:] or meta.comment
        date = _date(rec.name)
        commit = (meta.commit_hash or "")[:7]
        dirty = bool(meta.uncommitted_files)
        code = (commit or "no commit") + ("*" if dirty else "")
        where = {"both": "local + remote", "local": "local", "remote": "remote"}[kind]
        label = f"{rec.name[:6]} {comment}".rstrip() + f"\n{date}\n{meta.status} · {code}\n{where}"
        nodes.append((ident, {
            "name": rec.name, "kind": kind, "label": label, "comment": comment, "date": date,
            "status": meta.status, "commit": commit or None, "dirty": dirty,
            "local": rec.local, "remote": rec.remote,
        }))
    out = nx.DiGraph(name="lineage")
    out.add_nodes_from(nodes)
    out.add_edges_from(
        (u, v, {"source": src, "label": src}) for u, v, src in g.edges(data="source", default="")
    )
    return out


def _date(name: str) -> str:
    t = name[7:22]  # "YYYYmmddTHHMMSS"
    return f"{t[0:4]}-{t[4:6]}-{t[6:8]} {t[9:11]}:{t[11:13]}:{t[13:15]}"


def _node_name(g: nx.DiGraph, ident: str) -> str:
    attrs = g.nodes[ident]
    rec = attrs.get("record")
    return rec.name if rec is not None else attrs.get("name", ident)


def find_problems(g: nx.DiGraph) -> Problems:
    """Cycles (one per strongly connected group, so never exponential) and dangling refs."""
    problems = Problems()
    cycles = {(n,) for n in nx.nodes_with_selfloops(g)}
    for comp in nx.strongly_connected_components(g):
        if len(comp) > 1:
            edges = nx.find_cycle(g.subgraph(comp), source=min(comp))
            cycles.add(tuple(u for u, _ in edges))
    problems.cycles = sorted(list(c) for c in cycles)
    for node, attrs in g.nodes(data=True):
        if attrs.get("missing") or attrs.get("kind") == "missing":
            problems.dangling += [(user, node) for user in sorted(g.successors(node))]
    problems.dangling.sort()
    return problems


def mark_cycles(g: nx.DiGraph, problems: Problems) -> None:
    """Give the edges of each reported cycle ``kind="cycle"`` (drawn red)."""
    for cycle in problems.cycles:
        for u, v in zip(cycle, [*cycle[1:], cycle[0]]):
            if g.has_edge(u, v):
                g.edges[u, v]["kind"] = "cycle"
