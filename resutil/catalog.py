"""Every experiment with what a person browsing them wants to see: the terminal UI's table
and the HTML report are both drawn from ``catalog``.

An ``Entry`` is one row of ``resutil list`` (local and remote, status as shown there) with
its metadata head, its upstream and downstream experiments, and its *metrics*: the numbers
in its small result files. A metrics file is a JSON, YAML, CSV or TSV file at the top of
the experiment folder, of at most ``METRIC_BYTES``, holding at most ``MAX_PER_FILE`` numbers
(a bigger table is a result, not a metric), and not one of resutil's own files. Its numbers
are columns named by key (``acc``, ``loss.final``), prefixed with the file's stem unless it
is ``metrics`` (``train.epochs``).

Metrics of a remote-only experiment are read from its archive with ranged reads (its member
index, then one request per file), never by pulling it. Each experiment's metrics are
cached under the results folder, keyed on what they came from: for a local experiment the
name, size and mtime of its metrics files; for a remote one its archive's version. So a
second look costs one directory scan per local experiment and nothing per remote one.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import Any

from .atomic import read_cache, write_cache
from .compare import numbers_of
from .errors import ResutilError
from .experiments import list_experiments, shown_status
from .gcpause import gc_paused
from .metadata import ExpMeta
from .naming import identity_of
from .project import Project

METRIC_SUFFIXES = (".json", ".yaml", ".yml", ".csv", ".tsv")
METRIC_BYTES = 64 << 10
MAX_PER_FILE = 50
OWN_PREFIX = "resutil-"  # resutil-exp.yaml, resutil-stdout.log ...: records, not results
METRICS_INDEX = "metrics-index.json"
CACHE_VERSION = "1"
REMOTE_READERS = 8  # remote metrics read side by side: each is a round trip or two
log = logging.getLogger(__name__)


@dataclass
class Entry:
    """One experiment as the UI and the report show it."""

    name: str
    identity: str
    comment: str
    date: str  # its start, ISO 8601, local time
    status: str  # as ``resutil list`` shows it ("dead", "running?" included)
    local: bool
    remote: bool | None  # None: the remote could not be listed
    meta: ExpMeta | None = None  # None when its metadata could not be read
    problem: str | None = None
    upstream: list[str] = field(default_factory=list)  # names
    downstream: list[str] = field(default_factory=list)
    metrics: dict[str, float] = field(default_factory=dict)

    @property
    def where(self) -> str:
        """"local", "remote" or "both"."""
        if self.local and self.remote:
            return "both"
        return "local" if self.local else "remote"

    @property
    def step(self) -> str:
        """The pipeline step or Snakemake rule that made it ("" for a script's run)."""
        meta = self.meta
        if meta is None:
            return ""
        if isinstance(meta.pipeline, dict) and meta.pipeline.get("step"):
            return str(meta.pipeline["step"])
        job = meta.extra.get("snakemake")
        return str(job.get("rule") or "") if isinstance(job, dict) else ""


@dataclass
class Catalog:
    """Every experiment (oldest first), warnings, and whether the remote was "listed",
    left "off" or "unreachable"."""

    entries: list[Entry]
    warnings: list[str]
    remote: str

    def metric_columns(self) -> list[str]:
        """Metric names, the most widely reported first (then by name)."""
        count: dict[str, int] = {}
        for e in self.entries:
            for k in e.metrics:
                count[k] = count.get(k, 0) + 1
        return sorted(count, key=lambda k: (-count[k], k))

    def by_identity(self) -> dict[str, Entry]:
        return {e.identity: e for e in self.entries}


def catalog(project: Project, remote: bool = True, metrics: bool = True,
            names: Iterable[str] | None = None, local: dict[str, Any] | None = None) -> Catalog:
    """Every experiment (or those ``names`` resolve to) with its metadata, lineage and,
    with ``metrics``, its metrics (``read_metrics``). ``local``: the local experiments'
    records (``lineage.local_records``) when the caller has them already (the UI reads
    them while the remote is being listed)."""
    with gc_paused():  # 10,000 records, rows and entries, with no cycles among them
        return _catalog(project, remote, metrics, names, local)


def _catalog(project: Project, remote: bool, metrics: bool, names: Iterable[str] | None,
             local: dict[str, Any] | None) -> Catalog:
    from .lineage import collect, local_records, unreadable

    if local is None:
        local = local_records(project.workspace)  # read once for both
    listing = list_experiments(project, remote=remote, local=local)
    records = collect(project, remote=listing.remote == "listed", local=local)
    warnings = list(dict.fromkeys([*listing.warnings, *unreadable(records)]))
    entries: dict[str, Entry] = {}
    for row in listing.rows:
        rec = records.get(row["identity"])
        entries[row["identity"]] = Entry(
            row["name"], row["identity"], row["comment"], row["date"], shown_status(row),
            row["local"], row["remote"], meta=None if rec is None or rec.problem else rec.meta,
            problem=rec.problem if rec else None)
    for entry in entries.values():
        for dep in entry.meta.dependencies if entry.meta else ():
            entry.upstream.append(dep.name)
            up = entries.get(dep.identity)
            if up is not None:
                up.downstream.append(entry.name)
    chosen = list(entries.values())
    if names is not None:
        wanted = {identity_of(project.resolve(n)) for n in names}
        chosen = [e for e in chosen if e.identity in wanted]
    if metrics:
        warnings += read_metrics(project, chosen)
    return Catalog(chosen, warnings, listing.remote)


def read_metrics(project: Project, entries: list[Entry],
                 progress: Callable[[int, int], None] | None = None) -> list[str]:
    """Fill in each entry's metrics (from the cache where it is current); returns warnings.
    ``progress(done, total)`` is called as experiments are read."""
    path = project.workspace.cache_dir / METRICS_INDEX
    old = read_cache(path, CACHE_VERSION)
    new: dict[str, Any] = {}
    warnings: list[str] = []
    remote_todo: list[tuple[Entry, Any]] = []
    done = 0
    for entry in entries:
        if entry.local:
            sig, files = _local_sig(project, entry.name)
            hit = old.get(entry.identity)
            if hit is not None and hit[0] == sig:
                entry.metrics = hit[1]
            else:
                entry.metrics = _local_metrics(project, entry.name, files)
            new[entry.identity] = [sig, entry.metrics]
            done += 1
            if progress:
                progress(done, len(entries))
        elif entry.remote:
            exp = project.remote.experiments().get(entry.identity)
            if exp is None:
                continue
            sig = ["remote", exp.archive.version or f"{exp.archive.size}-{exp.archive.mtime}"]
            hit = old.get(entry.identity)
            if hit is not None and hit[0] == sig:
                entry.metrics = hit[1]
                new[entry.identity] = hit
            else:
                remote_todo.append((entry, exp))
    if remote_todo:
        with ThreadPoolExecutor(REMOTE_READERS) as pool:
            for (entry, exp), got in zip(remote_todo, pool.map(
                    lambda pair: _remote_metrics(project, pair[1]), remote_todo)):
                if isinstance(got, str):
                    warnings.append(got)
                else:
                    entry.metrics = got
                    version = exp.archive.version or f"{exp.archive.size}-{exp.archive.mtime}"
                    new[entry.identity] = [["remote", version], got]
                done += 1
                if progress:
                    progress(done, len(entries))
    # Entries not looked at this time stay cached (a report of a few must not forget all).
    merged = {**old, **new}
    if merged != old:
        write_cache(path, CACHE_VERSION, merged)
    return warnings


def is_metrics_file(rel: str, size: int) -> bool:
    """Whether a file (by its path in the experiment and size) is read for metrics."""
    return ("/" not in rel and not rel.startswith(OWN_PREFIX) and size <= METRIC_BYTES
            and PurePosixPath(rel).suffix.lower() in METRIC_SUFFIXES)


def metrics_from(files: dict[str, str]) -> dict[str, float]:
    """The metric columns of an experiment from its metrics files' texts (path -> text)."""
    out: dict[str, float] = {}
    for rel in sorted(files):
        p = PurePosixPath(rel)
        numbers = numbers_of(files[rel], p.suffix)
        if not numbers or len(numbers) > MAX_PER_FILE:
            continue
        prefix = "" if p.stem == "metrics" else f"{p.stem}."
        for key, value in numbers.items():
            if math.isfinite(value):  # (JSON caches no NaN or infinity)
                out[prefix + key] = value
    return out


# -- internals ------------------------------------------------------------------------------
def _local_sig(project: Project, name: str) -> tuple[list[Any], list[str]]:
    sig: list[Any] = []
    files: list[str] = []
    try:
        with os.scandir(project.workspace.path(name)) as it:
            for e in it:
                try:
                    if not e.is_file():
                        continue
                    st = e.stat()
                except OSError:
                    continue
                if is_metrics_file(e.name, st.st_size):
                    sig.append([e.name, st.st_size, st.st_mtime_ns])
                    files.append(e.name)
    except OSError:
        pass
    sig.sort()
    return sig, sorted(files)


def _local_metrics(project: Project, name: str, files: list[str]) -> dict[str, float]:
    texts: dict[str, str] = {}
    folder = project.workspace.path(name)
    for rel in files:
        try:
            texts[rel] = (folder / rel).read_bytes()[:METRIC_BYTES].decode("utf-8")
        except (OSError, UnicodeDecodeError):
            continue
    return metrics_from(texts)


def _remote_metrics(project: Project, exp: Any) -> dict[str, float] | str:
    """The metrics of a remote archive, or a warning saying why they could not be read."""
    remote = project.remote
    try:
        index = remote.member_index(exp)
        texts: dict[str, str] = {}
        for rel, member in sorted(index.members.items()):
            if rel.endswith("/") or not is_metrics_file(rel, member.usize):
                continue
            data = remote.open_member(exp, rel, index).read_all()
            try:
                texts[rel] = data.decode("utf-8")
            except UnicodeDecodeError:
                continue
        return metrics_from(texts)
    except ResutilError as e:
        return f"metrics of {exp.name} could not be read: {e}"
