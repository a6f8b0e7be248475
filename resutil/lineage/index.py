"""The cached metadata index: what every experiment, local and remote, says about itself.

Reading 10,000 metadata files must take well under a second, so ``collect`` keeps an
index of what it read (local: by the metadata file's inode, size and mtime, which an atomic
rewrite always changes; remote: by the versions of the archive and its sidecar on the
storage) and, on a miss, reads a local file's head with ``metadata.read_head``, without
its ``environment`` block, the bulk of it and of no use to the lineage.

A fresh clone has no index: a reader that misses many remote experiments first reads the
index the project's clones share on the storage (``<project>.resutil/.lineage-index.json``,
written by the last reader of many sidecars; every entry counts only for the versions it
names, so a stale or concurrent copy is harmless), then the sidecars still missing.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, fields, replace
from typing import Any

from ..atomic import read_cache, write_cache
from ..errors import ArchiveError, ExperimentError, ResutilError
from ..gcpause import gc_paused
from ..liveness import Owner
from ..metadata import EXP_FILE, Dependency, ExpMeta, read_head
from ..naming import IDENTITY_LEN, IDENTITY_RE
from ..project import Project
from ..remote import Remote, RemoteExperiment
from ..workspace import Workspace

_PACKED = [f.name for f in fields(ExpMeta) if f.name not in ("environment", "manifest", "dependencies")]
# Changes whenever ExpMeta's fields do, so an index written by another version is ignored.
INDEX_VERSION = "4:" + ",".join(_PACKED)
_PROCESS = _PACKED.index("process")
LOCAL_INDEX = "lineage-local.json"
REMOTE_INDEX = "lineage-remote.json"
# On the storage, in <project>.resutil/ (hidden from listings): the index a reader of many
# sidecars shares with the project's other clones.
SHARED_INDEX = ".lineage-index.json"
SHARED_MIN = 50  # sidecars a reader must have read (or missed) before the shared index counts
MAX_SHARED = 64 << 20
BROKEN = "broken"  # the status shown for an experiment whose metadata cannot be used
log = logging.getLogger(__name__)


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
        return self.name[:IDENTITY_LEN]


def _broken(name: str, problem: str, **where: bool) -> Record:
    return Record(name, ExpMeta(name=name, status=BROKEN), problem=problem, **where)


def unreadable(records: dict[str, Record], skip: set[str] | frozenset[str] = frozenset()
               ) -> list[str]:
    """One message per experiment whose metadata could not be used (identities in ``skip``
    left out): what front ends show as warnings."""
    return [r.problem for i, r in sorted(records.items()) if r.problem and i not in skip]


def dependents(records: dict[str, Record], identity: str, exclude: Iterable[str] = ()
               ) -> list[str]:
    """Names of the experiments among ``records`` (by identity, ``exclude`` left out) that
    list ``identity`` as an upstream dependency."""
    skip = set(exclude)
    return sorted(rec.name for rec in records.values() if rec.identity not in skip
                  and any(d.identity == identity for d in rec.meta.dependencies))


def collect(project: Project, remote: bool = True,
            local: dict[str, Record] | None = None) -> dict[str, Record]:
    """identity -> Record for every experiment, local metadata first, then the remote's.

    A record's metadata has no manifest and, for local experiments, no ``environment``.
    An experiment whose metadata cannot be used is a record with a ``problem`` (see
    ``unreadable``), so one broken folder or sidecar affects only itself. ``local``: the
    ``local_records`` already read (by the caller, for another use).
    """
    if local is None:
        records = local_records(project.workspace)
    else:  # (marked remote below: copies, so the caller's records stay as they were)
        records = {i: replace(r) for i, r in local.items()}
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


def local_records(ws: Workspace) -> dict[str, Record]:
    """identity -> Record of every local experiment, its head from the index when its
    metadata file is unchanged since it was indexed (``list`` and ``graph`` read 2,000
    folders in a few stats), else read and indexed."""
    with gc_paused():  # thousands of records that live on, with no cycles among them
        return _local_records(ws)


def _local_records(ws: Workspace) -> dict[str, Record]:
    path = ws.cache_dir / LOCAL_INDEX
    old = read_cache(path, INDEX_VERSION)
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
                meta = read_head(ws.path(name))
            except ExperimentError as e:
                records[ident] = _broken(name, str(e), local=True)
                changed = changed or name in old
                continue
            assert meta is not None  # (None only when a key is required)
            packed = _pack(meta)
            changed = True
        if sig is not None:
            new[name] = [sig, packed]
        meta.set_name(name)  # the folder name is the authority, as in read_meta
        records[ident] = Record(name, meta, local=True)
    if changed or new.keys() != old.keys():
        write_cache(path, INDEX_VERSION, new)
    return records


def _hit(entry: Any, sig: list[Any] | None) -> list[Any] | None:
    """The packed metadata of an index entry whose signature is ``sig``."""
    if sig is None or not isinstance(entry, list) or len(entry) != 2 or entry[0] != sig:
        return None
    return entry[1] if isinstance(entry[1], list) else None


def _remote_metas(remote: Remote, exps: list[RemoteExperiment]) -> list[ExpMeta | str]:
    """Each experiment's metadata, or why it cannot be used (a damaged sidecar or archive
    affects only its own experiment; an unreachable storage still fails the whole call).

    From this clone's index when the experiment's versions are the indexed ones; for many
    that are not (a fresh clone), from the index the project's clients share on the
    storage (SHARED_INDEX); the rest from their sidecars, after which a reader of many
    shares what it knows."""
    cache_dir = remote.cache_dir
    path = cache_dir / REMOTE_INDEX if cache_dir is not None else None
    old = read_cache(path, INDEX_VERSION) if path is not None else {}
    sigs = [_remote_sig(e) for e in exps]
    packs = [_hit(old.get(e.identity), sig) for e, sig in zip(exps, sigs)]
    cached = [_unpack(p) if p is not None else None for p in packs]
    if sum(m is None for m in cached) >= SHARED_MIN:
        shared = _load_shared(remote)
        for i, (exp, sig) in enumerate(zip(exps, sigs)):
            if cached[i] is None and (packed := _hit(shared.get(exp.identity), sig)):
                cached[i], packs[i] = _unpack(packed, check=True), packed
    todo = [e for e, meta in zip(exps, cached) if meta is None]
    fetched: dict[str, ExpMeta | str] = {}
    if todo:
        # This index caches sidecars already, so they are read past Remote's cache of one
        # file per sidecar (creating 10,000 small files is most of a cold run); an archive
        # without sidecar (0.1.x) goes through that cache, so it is fetched only once.
        uncached = Remote(remote.storage, remote.project)

        def read(batch: list[RemoteExperiment]) -> list[ExpMeta | str]:
            out: list[ExpMeta | str] = []
            for exp in batch:
                try:
                    out.append((uncached if exp.sidecar is not None else remote).meta(exp))
                except (ExperimentError, ArchiveError) as e:
                    out.append(f"{exp.name} on the remote: {e}")
            return out

        # In batches, in parallel where each read waits for the network; a folder storage
        # is read in this thread (threads there only contend for the interpreter).
        size = max(1, min(64, len(todo) // 32))
        batches = [todo[k:k + size] for k in range(0, len(todo), size)]
        if remote.storage.writes_in_place:
            results = [m for batch in batches for m in read(batch)]
        else:
            with ThreadPoolExecutor(8) as pool:
                results = [m for got in pool.map(read, batches) for m in got]
        fetched = dict(zip((e.identity for e in todo), results))
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
        write_cache(path, INDEX_VERSION, new)
    if len(fetched) >= SHARED_MIN:
        _save_shared(remote, new)
    return metas


def _load_shared(remote: Remote) -> dict[str, Any]:
    """The entries of the index shared on the storage ({} when there is none or it is of
    another version or unusable; each entry is checked when used, as a sidecar is)."""
    try:
        data = remote.read_shared(SHARED_INDEX, MAX_SHARED)
    except ResutilError as e:
        log.info("could not read the shared lineage index: %s", e)
        return {}
    if data is None:
        return {}
    try:
        index = json.loads(data)
    except ValueError:
        return {}
    if not isinstance(index, dict) or index.get("version") != INDEX_VERSION:
        return {}
    entries = index.get("entries")
    return entries if isinstance(entries, dict) else {}


def _save_shared(remote: Remote, entries: dict[str, Any]) -> None:
    """Share what this reader knows, so that the next clone's first ``graph`` reads one
    file instead of every sidecar. A cache: a failure is no error, and a concurrent
    writer's copy is as good (every entry names the versions it was read from)."""
    blob = json.dumps({"version": INDEX_VERSION, "entries": entries}, separators=(",", ":"),
                      default=str).encode("utf-8")
    if len(blob) > MAX_SHARED:
        return
    try:
        remote.write_shared(SHARED_INDEX, blob)
    except ResutilError as e:
        log.info("could not share the lineage index: %s", e)


def _remote_sig(exp: RemoteExperiment) -> list[Any] | None:
    """What the cached metadata of a remote experiment depends on: the versions (content)
    of its archive and sidecar, since a sidecar counts only for the archive it names.
    None (never cached) where the storage does not tell versions."""
    sig: list[Any] = [exp.archive.name, exp.archive.version]
    if exp.sidecar is not None:
        sig += [exp.sidecar.name, exp.sidecar.version]
    return None if None in sig else sig


def _pack(meta: ExpMeta) -> list[Any]:
    """ExpMeta as JSON-ready data, without environment and manifest: the values of _PACKED
    in order, then the dependencies (a list: 10,000 of them load ~2x faster than dicts)."""
    d = [getattr(meta, k) for k in _PACKED]
    d[_PROCESS] = meta.process.to_dict() if meta.process else None
    d.append([[dep.name, dep.source, dep.manifest, dep.run_id] for dep in meta.dependencies])
    return d


# The kind of every packed field (an index, and a shared one on the storage, is untrusted).
_KINDS: dict[str, str] = {
    "name": "str", "comment": "str", "run_id": "str?", "status": "str", "args": "str",
    "argv": "strs?", "result_dir": "str", "commit_hash": "str?", "uncommitted_files": "strs",
    "untracked_files": "strs", "workdir": "str?", "started_at": "str?", "ended_at": "str?",
    "pipeline": "dict?", "process": "dict?", "schema_version": "int", "extra": "dict",
}
_NONE = type(None)
_ALLOWED = {"str": (str,), "str?": (str, _NONE), "strs": (list,), "strs?": (list, _NONE),
            "dict": (dict,), "dict?": (dict, _NONE), "int": (int,)}
# (position, the exact types allowed, whether it is a list of strings): a bool is no int.
# (tests/test_many.py makes sure every packed field has a kind.)
_CHECKS = [(i, _ALLOWED[_KINDS[k]], _KINDS[k].startswith("strs"))
           for i, k in enumerate(_PACKED) if k in _KINDS]


def _unpack(packed: Any, check: bool = False) -> ExpMeta | None:
    """The ExpMeta packed by _pack, or None if the entry is damaged; ``check`` (an entry
    from the storage, untrusted) also refuses one whose values are of the wrong type."""
    if type(packed) is not list or len(packed) != len(_PACKED) + 1:
        return None
    deps_data = packed[-1]
    if check:
        for i, allowed, strs in _CHECKS:
            v = packed[i]
            if type(v) not in allowed or (strs and v and not all(type(x) is str for x in v)):
                return None
        if type(deps_data) is not list:
            return None
        for dep in deps_data:
            if not (type(dep) is list and len(dep) == 4 and type(dep[0]) is str
                    and IDENTITY_RE.match(dep[0]) and type(dep[1]) is str
                    and all(x is None or type(x) is str for x in dep[2:])):
                return None
    try:
        deps = [Dependency(*dep) for dep in deps_data]
        meta = ExpMeta(**dict(zip(_PACKED, packed)), dependencies=deps)
    except TypeError:
        return None
    meta.process = Owner.from_dict(packed[_PROCESS])
    return meta


