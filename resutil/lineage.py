"""The lineage DAG over experiments, local and remote, built from metadata only.

Reading 10,000 metadata files must take well under a second, so ``collect`` keeps an
index of what it read (local: by the metadata file's inode, size and mtime, which an atomic
rewrite always changes; remote: by the versions of the archive and its sidecar on the
storage) and, on a miss, parses a local file's head without
its ``environment`` block, the bulk of it and of no use to the lineage.
"""

from __future__ import annotations

import gc
import json
import os
import re
from contextlib import contextmanager
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Iterator

import networkx as nx
import yaml

from .errors import ArchiveError, ExperimentError, LineageError
from .metadata import EXP_FILE, Dependency, ExpMeta, read_meta, read_meta_text
from .project import Project
from .remote import Remote, RemoteExperiment
from .workspace import Workspace

_PACKED = [f.name for f in fields(ExpMeta) if f.name not in ("environment", "manifest", "dependencies")]
# Changes whenever ExpMeta's fields do, so an index written by another version is ignored.
INDEX_VERSION = "2:" + ",".join(_PACKED)
LOCAL_INDEX = "lineage-local.json"
REMOTE_INDEX = "lineage-remote.json"
_Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_TOP_KEY = re.compile(r"^[^\s#-]", re.M)  # a line that starts a top-level key (or ends the doc)
BROKEN = "broken"  # the status shown for an experiment whose metadata cannot be used


@dataclass
class Record:
    """One experiment as the lineage sees it."""

    name: str
    meta: ExpMeta
    local: bool = False
    remote: bool = False
    problem: str | None = None  # why its metadata could not be used (then it has no upstream)

    @property
    def identity(self) -> str:
        return self.name[:22]


def _broken(name: str, problem: str, **where: bool) -> Record:
    return Record(name, ExpMeta(name=name, status=BROKEN), problem=problem, **where)


def unreadable(records: dict[str, Record], skip: set[str] | frozenset[str] = frozenset()
               ) -> list[str]:
    """One message per experiment whose metadata could not be used (identities in ``skip``
    left out): what front ends show as warnings."""
    return [r.problem for i, r in sorted(records.items()) if r.problem and i not in skip]


def collect(project: Project, remote: bool = True) -> dict[str, Record]:
    """identity -> Record for every experiment, local metadata first, then the remote's.

    A record's metadata has no manifest and, for local experiments, no ``environment``.
    An experiment whose metadata cannot be used is a record with a ``problem`` (see
    ``unreadable``), so one broken folder or sidecar affects only itself.
    """
    records = _local_records(project.workspace)
    if remote and not project.no_remote:
        exps = project.remote.experiments()
        missing = [e for i, e in exps.items() if i not in records]
        for exp, meta in zip(missing, _remote_metas(project.remote, missing)):
            if isinstance(meta, str):
                records[exp.identity] = _broken(exp.name, meta, remote=True)
            else:
                records[exp.identity] = Record(exp.name, meta, remote=True)
        for ident in exps:
            records[ident].remote = True
    return records


def _local_records(ws: Workspace) -> dict[str, Record]:
    path = ws.cache_dir / LOCAL_INDEX
    old = _load_index(path)
    new: dict[str, Any] = {}
    records: dict[str, Record] = {}
    changed = False
    root = str(ws.root)
    for ident, name in ws.names().items():
        try:
            st = os.stat(os.path.join(root, name, EXP_FILE))  # (10,000 Paths cost 0.1 s)
            sig: list[int] | None = [st.st_ino, st.st_size, st.st_mtime_ns]
        except OSError:
            sig = None
        packed = _hit(old.get(name), sig)
        meta = _unpack(packed) if packed is not None else None
        if meta is None:
            try:
                meta = read_lineage_meta(ws.path(name))
            except ExperimentError as e:
                records[ident] = _broken(name, str(e), local=True)
                changed = changed or name in old
                continue
            packed = _pack(meta)
            changed = True
        if sig is not None:
            new[name] = [sig, packed]
        meta.set_name(name)  # the folder name is the authority, as in read_meta
        records[ident] = Record(name, meta, local=True)
    if changed or new.keys() != old.keys():
        _save_index(path, new)
    return records


def _hit(entry: Any, sig: list[Any] | None) -> dict[str, Any] | None:
    """The packed metadata of an index entry whose signature is ``sig``."""
    if sig is None or not isinstance(entry, list) or len(entry) != 2 or entry[0] != sig:
        return None
    return entry[1] if isinstance(entry[1], dict) else None


def _remote_metas(remote: Remote, exps: list[RemoteExperiment]) -> list[ExpMeta | str]:
    """Each experiment's metadata, or why it cannot be used (a damaged sidecar or archive
    affects only its own experiment; an unreachable storage still fails the whole call)."""
    cache_dir = remote.cache_dir
    path = cache_dir / REMOTE_INDEX if cache_dir is not None else None
    old = _load_index(path) if path is not None else {}
    sigs = [_remote_sig(e) for e in exps]
    packs = [_hit(old.get(e.identity), sig) for e, sig in zip(exps, sigs)]
    cached = [_unpack(p) if p is not None else None for p in packs]
    todo = [e for e, meta in zip(exps, cached) if meta is None]
    fetched: dict[str, ExpMeta | str] = {}
    if todo:
        # This index caches sidecars already, so they are read past Remote's cache of one
        # file per sidecar (creating 10,000 small files is most of a cold run); an archive
        # without sidecar (0.1.x) goes through that cache, so it is fetched only once.
        uncached = Remote(remote.storage, remote.project)

        def read(exp: RemoteExperiment) -> ExpMeta | str:
            try:
                return (uncached if exp.sidecar is not None else remote).meta(exp)
            except (ExperimentError, ArchiveError) as e:
                return f"{exp.name} on the remote: {e}"

        with ThreadPoolExecutor(8) as pool:
            fetched = dict(zip((e.identity for e in todo), pool.map(read, todo)))
    new: dict[str, Any] = {}
    metas: list[ExpMeta | str] = []
    for exp, sig, meta, packed in zip(exps, sigs, cached, packs):
        if meta is None:
            got = fetched[exp.identity]
            if isinstance(got, str):
                metas.append(got)  # not indexed: read again next time
                continue
            meta = got
            meta.environment = {}
            packed = _pack(meta)
        new[exp.identity] = [sig, packed]
        meta.set_name(exp.name)
        metas.append(meta)
    if path is not None and (fetched or new.keys() != old.keys()):
        _save_index(path, new)
    return metas


def _remote_sig(exp: RemoteExperiment) -> list[Any] | None:
    """What the cached metadata of a remote experiment depends on: the versions (content)
    of its archive and sidecar, since a sidecar counts only for the archive it names.
    None (never cached) where the storage does not tell versions."""
    sig: list[Any] = [exp.archive.name, exp.archive.version]
    if exp.sidecar is not None:
        sig += [exp.sidecar.name, exp.sidecar.version]
    return None if None in sig else sig


def _pack(meta: ExpMeta) -> dict[str, Any]:
    """ExpMeta as JSON-ready data, without environment and manifest (see _unpack)."""
    d = {k: getattr(meta, k) for k in _PACKED}
    d["dependencies"] = [[dep.name, dep.source, dep.manifest, dep.run_id]
                         for dep in meta.dependencies]
    return d


def _unpack(d: dict[str, Any]) -> ExpMeta | None:
    """The ExpMeta packed by _pack, or None if the entry is damaged."""
    try:
        deps = [Dependency(*dep) for dep in d["dependencies"]]
        return ExpMeta(**{k: d[k] for k in _PACKED}, dependencies=deps)
    except (KeyError, TypeError):
        return None


def read_lineage_meta(folder: Path) -> ExpMeta:
    """A folder's metadata without manifest and environment, about 4x faster than read_meta.

    The environment block (hundreds of package versions) is cut out of the text before
    parsing; if what is left does not parse, the whole file goes through ``read_meta``.
    ExperimentError naming the file when the metadata cannot be used.
    """
    path = folder / EXP_FILE
    try:
        head = read_meta_text(path, with_manifest=False)
    except FileNotFoundError:
        return read_meta(folder, with_manifest=False)
    start = head.find("\nenvironment:")
    if start >= 0:
        nxt = _TOP_KEY.search(head, start + 2)
        head = head[: start + 1] + (head[nxt.start():] if nxt else "")
    try:
        data = yaml.load(head, Loader=_Loader)
        meta = ExpMeta.from_dict(data, where=str(path))
    except (yaml.YAMLError, ExperimentError, ValueError, RecursionError):
        return read_meta(folder, with_manifest=False)  # its error names the file
    meta.set_name(folder.name)
    return meta


@contextmanager
def gc_paused() -> Iterator[None]:
    """Pause the cycle collector while building many small objects.

    Each automatic collection walks every live object; building 10,000 records and two
    graphs triggers several, which cost a third of ``resutil graph``'s time.
    """
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


def _load_index(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    if not isinstance(data, dict) or data.get("version") != INDEX_VERSION:
        return {}
    entries = data.get("entries")
    return entries if isinstance(entries, dict) else {}


def _save_index(path: Path, entries: dict[str, Any]) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}")
        tmp.write_text(json.dumps({"version": INDEX_VERSION, "entries": entries},
                                  separators=(",", ":"), default=str), encoding="utf-8")
        os.replace(tmp, path)
    except OSError:
        pass  # an index is an optimisation; a read-only results folder still works


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
