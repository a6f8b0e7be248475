"""The lineage DAG over experiments, local and remote, built from metadata only."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import networkx as nx

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
