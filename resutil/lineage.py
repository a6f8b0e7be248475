"""The lineage DAG over experiments, local and remote, built from metadata only."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import networkx as nx

from .errors import LineageError
from .metadata import ExpMeta, read_meta
from .project import Project


@dataclass
class Record:
    """One experiment as the lineage sees it."""

    name: str
    meta: ExpMeta
    local: bool = False
    remote: bool = False

    @property
    def identity(self) -> str:
        return self.name[:22]


def collect(project: Project, remote: bool = True) -> dict[str, Record]:
    """identity -> Record for every experiment, local metadata first, then the remote's."""
    ws = project.workspace
    records: dict[str, Record] = {}
    for ident, name in ws.names().items():
        records[ident] = Record(name, read_meta(ws.path(name), with_manifest=False), local=True)
    if remote and not project.no_remote:
        exps = project.remote.experiments()
        missing = [e for i, e in exps.items() if i not in records]
        with ThreadPoolExecutor(8) as pool:
            metas = list(pool.map(project.remote.meta, missing))
        for exp, meta in zip(missing, metas):
            records[exp.identity] = Record(exp.name, meta, remote=True)
        for ident in exps:
            records[ident].remote = True
    return records


def build_graph(records: dict[str, Record]) -> nx.DiGraph:
    """Nodes are identities; an edge upstream -> downstream carries how it was found.

    A dependency on an experiment that exists nowhere becomes a node with ``missing=True``.
    """
    g = nx.DiGraph()
    for ident, rec in records.items():
        g.add_node(ident, record=rec, missing=False)
    for ident, rec in records.items():
        for dep in rec.meta.dependencies:
            if dep.identity not in g:
                g.add_node(dep.identity, record=None, missing=True, name=dep.name)
            g.add_edge(dep.identity, ident, source=dep.source)
    return g


def dependents(project: Project, identity: str) -> list[str]:
    """Names of the experiments that list ``identity`` as an upstream dependency."""
    records = collect(project)
    return sorted(
        rec.name for rec in records.values() if any(d.identity == identity for d in rec.meta.dependencies)
    )


# -- what `resutil graph` and `resutil lineage` show ---------------------------------------
DIRECTIONS = ("ancestors", "descendants")


@dataclass
class Problems:
    """Dependency cycles (each a list of identities) and references to unknown experiments."""

    cycles: list[list[str]] = field(default_factory=list)
    dangling: list[tuple[str, str]] = field(default_factory=list)  # (experiment, missing dep)

    def __bool__(self) -> bool:
        return bool(self.cycles or self.dangling)

    def messages(self, g: nx.DiGraph) -> list[str]:
        """One line per problem, naming experiments by their full names."""

        def name(ident: str) -> str:
            return g.nodes[ident].get("name", ident) if ident in g else ident

        out = [
            "dependency cycle: " + " -> ".join(name(i) for i in [*cycle, cycle[0]])
            for cycle in self.cycles
        ]
        out += [
            f"{name(exp)} depends on {name(dep)}, which is neither local nor on the remote"
            for exp, dep in self.dangling
        ]
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
    full = build_graph(collect(project, remote=remote))
    roots = resolve_nodes(project, full, queries)
    g = decorate(select(full, roots, direction))
    problems = find_problems(g)
    mark_cycles(g, problems)
    return LineageView(g, problems, roots)


def resolve_nodes(project: Project, g: nx.DiGraph, queries: list[str] | tuple[str, ...]) -> list[str]:
    """Identities for names, identities or unique prefixes (unknown upstream ones too)."""
    if not queries:
        return []
    names = [_node_name(g, n) for n in g]
    out = []
    for q in queries:
        ident = project.workspace.resolve(q, names)[:22]
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
    out = nx.DiGraph()
    for ident in sorted(g):
        attrs = g.nodes[ident]
        rec: Record | None = attrs.get("record")
        if rec is None:
            name = attrs.get("name", ident)
            out.add_node(ident, name=name, kind="missing", label=f"{name}\nmissing")
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
        out.add_node(
            ident, name=rec.name, kind=kind, label=label, comment=comment, date=date,
            status=meta.status, commit=commit or None, dirty=dirty, local=rec.local,
            remote=rec.remote,
        )
    for u, v, attrs in g.edges(data=True):
        source = attrs.get("source", "")
        out.add_edge(u, v, source=source, label=source)
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
    for comp in nx.strongly_connected_components(g):
        if len(comp) > 1:
            edges = nx.find_cycle(g.subgraph(comp), source=min(comp))
            problems.cycles.append([u for u, _ in edges])
    problems.cycles += [[n] for n in sorted(nx.nodes_with_selfloops(g))]
    problems.cycles.sort()
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
