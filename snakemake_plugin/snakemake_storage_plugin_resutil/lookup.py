"""Finding what a query names, without downloading archives.

``resutil://<experiment>/<path>`` names an existing experiment (full name, identity or
unique prefix, as for ``resutil pull``).

``resutil://new:<comment>/<path>`` names the newest experiment with that comment, written
by this plugin, that holds ``<path>`` **and is current**: each input query its job read is
still a query of this workflow and still names the experiment the job read then (the same
run). So an output is reused only when it was made from the same upstream experiments;
point an input at another experiment (a changed ``config``, a rerun upstream job) and the
jobs downstream of it run again, never mixing results made from different inputs. Going
back to the earlier input finds the experiments made from it again.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from resutil.errors import ExperimentNotFound
from resutil.metadata import EXP_FILE, UNCOMMITTED_DIR, ExpMeta, Manifest, read_head, walk_files
from resutil.naming import identity_of, parse_name
from resutil.project import Project
from resutil.sync import pull_one

from . import records
from .queries import InvalidQuery, Query, parse_query
from .records import Found

LISTING_MAX_AGE = 1.0  # seconds: a lookup that finds nothing lists the remote again after this


@dataclass(frozen=True)
class Head:
    """An experiment's metadata (no manifest) and where its files are known."""

    meta: ExpMeta | None
    folder: Path | None  # local folder
    manifest: Manifest | None  # remote file list (from the sidecar), when not local
    remote: bool


class Finder:
    """Answers "which experiment, which file" for one provider (one Snakemake process)."""

    def __init__(self, project: Callable[[], Project], use_remote: Callable[[], bool],
                 uses: Callable[[str], bool], generation: Callable[[], int],
                 job_process: bool, log: Callable[[str], None]) -> None:
        self._project = project
        self._use_remote = use_remote
        self._uses = uses  # whether a query is one of this workflow's
        self._generation = generation  # grows when the workflow's known queries grow
        self.job_process = job_process
        self._log = log
        self.pins: dict[str, str] = {}  # input query -> experiment, for reproduce
        self._names: dict[str, str] = {}
        self._local_heads: dict[str, tuple[int, ExpMeta | None]] = {}
        self._remote_heads: dict[tuple[object, object], Head] = {}
        self._valid: dict[str, tuple[int, bool]] = {}
        self._checking: set[str] = set()
        self._listed_at = 0.0
        self._local_names: dict[str, str] | None = None  # identity -> local folder name
        self._candidates: dict[str, list[str]] = {}  # comment -> names, for this snapshot

    @property
    def project(self) -> Project:
        return self._project()

    # -- what is where: the remote listing and the local folders, as last seen ----------
    def _remote(self) -> dict:
        if not self._listed_at:
            self.refresh()
        return self.project.remote.experiments()

    def _local(self) -> dict[str, str]:
        if self._local_names is None:
            self._local_names = self.project.workspace.names()
        return self._local_names

    def refresh(self) -> None:
        """Look again at the remote and the local folders (another process may have made
        an experiment since: a cluster job's, say)."""
        if self._use_remote():
            self.project.remote.experiments(refresh=True)
        self._listed_at = time.monotonic()
        self._local_names = None
        self._candidates.clear()
        self._valid.clear()

    def _may_refresh(self) -> bool:
        """After a miss: refresh, at most once per LISTING_MAX_AGE."""
        if time.monotonic() - self._listed_at < LISTING_MAX_AGE:
            return False
        self.refresh()
        return True

    def forget(self) -> None:
        """Drop what was learnt (after this process wrote or removed something)."""
        self._names.clear()
        self._listed_at = 0.0
        self._local_names = None
        self._candidates.clear()
        self._valid.clear()

    # -- experiments --------------------------------------------------------------------
    def resolve(self, written: str) -> str | None:
        """The full name of an existing experiment, or None when there is none."""
        name = self._names.get(written)
        if name is not None:
            return name
        for attempt in range(2):
            try:
                if self._use_remote():
                    self._remote()  # listed (once) through the finder, so it can refresh
                name = self.project.resolve(written, remote=self._use_remote())
                break
            except ExperimentNotFound:
                if attempt or not self._may_refresh():
                    return None
        self._names[written] = name
        return name

    def head(self, name: str) -> Head:
        """Metadata and file list of an experiment; never downloads an archive."""
        ws = self.project.workspace
        parsed = parse_name(name)
        local = self._local().get(parsed.identity) if parsed else None
        if local is not None:
            folder = ws.path(local)
            try:
                stamp = (folder / EXP_FILE).stat().st_mtime_ns
            except OSError:
                stamp = 0
            cached = self._local_heads.get(local)
            if cached is None or cached[0] != stamp:
                try:
                    meta: ExpMeta | None = read_head(folder)
                except Exception:  # noqa: BLE001 - a broken record is a fault of its own
                    meta = None
                cached = (stamp, meta)
                self._local_heads[local] = cached
            return Head(cached[1], folder, None, False)
        if not self._use_remote():
            return Head(None, None, None, False)
        exp = self._remote().get(parsed.identity) if parsed else None
        if exp is None:
            return Head(None, None, None, False)
        key = (exp.archive, exp.sidecar)  # a new push changes either
        head = self._remote_heads.get(key)
        if head is None:
            meta = self.project.remote.meta(exp)  # its sidecar lists its files
            head = Head(meta, None, meta.manifest, True)
            self._remote_heads[key] = head
        return head

    def candidates(self, comment: str) -> list[str]:
        """Finished experiments written by this plugin with ``comment``, newest first."""
        cached = self._candidates.get(comment)
        if cached is not None:
            return cached
        found: dict[str, str] = {}
        if self._use_remote():
            for ident, exp in self._remote().items():
                if (p := parse_name(exp.name)) and p.comment == comment:
                    found[ident] = exp.name
        for ident, name in self._local().items():
            if (p := parse_name(name)) and p.comment == comment:
                found[ident] = name
        out = []
        for ident in sorted(found, reverse=True):
            meta = self.head(found[ident]).meta
            if records.section(meta) is not None and meta.status == "finished":  # type: ignore[union-attr]
                out.append(found[ident])
        self._candidates[comment] = out
        return out

    def current(self, query: Query, exclude: str | None = None) -> str | None:
        """The experiment a ``new:`` query names now (see the module docstring)."""
        for attempt in range(2):
            for name in self.candidates(query.experiment):
                if name == exclude:
                    continue
                if records.output_holding(records.outputs(self.head(name).meta), query.path) \
                        is not None and self.valid(name):
                    return name
            if attempt or not self._may_refresh():
                return None
        return None

    def holders(self, comment: str, path: str | None = None) -> list[str]:
        """Every current experiment with ``comment`` (holding ``path``), newest first."""
        return [n for n in self.candidates(comment)
                if (path is None or records.output_holding(
                    records.outputs(self.head(n).meta), path) is not None) and self.valid(n)]

    def valid(self, name: str) -> bool:
        """Whether a job experiment is current: its inputs name what they named then."""
        generation = self._generation()
        cached = self._valid.get(name)
        if cached is not None and cached[0] == generation:
            return cached[1]
        if name in self._checking:
            return False  # a cycle: records that name each other are not trusted
        self._checking.add(name)
        try:
            ok = self._check(name)
        finally:
            self._checking.discard(name)
        self._valid[name] = (generation, ok)
        return ok

    def _check(self, name: str) -> bool:
        for written, used in records.inputs(self.head(name).meta).items():
            was = used.get("name")
            if not isinstance(was, str):
                return False
            now = self.input_experiment(written)
            if now is None:
                return False
            if now is not True and identity_of(now) != identity_of(was):
                return False
        return True

    def input_experiment(self, written: str) -> str | bool | None:
        """What an input query recorded by a job experiment names now: an experiment name,
        True when that cannot be told (not a resutil query), None when it names nothing or
        is no longer a query of this workflow."""
        if written in self.pins:
            return self.resolve(self.pins[written])
        # A job process runs what the main process decided; it may not know every query
        # of the workflow (input functions of rules it does not run are never evaluated).
        if not self.job_process and not self._uses(written):
            return None
        try:
            q = parse_query(written)
        except InvalidQuery:
            return True
        if q.is_sources:
            return True
        return self.current(q) if q.new else self.resolve(q.experiment)

    # -- files ----------------------------------------------------------------------------
    def stat(self, name: str, path: str) -> Found | None:
        """The file or folder ``path`` of an experiment, or None when it does not hold it."""
        head = self.head(name)
        outs = records.outputs(head.meta)
        mtime = records.mtime_of(head.meta, name, path)
        rec = records.output_holding(outs, path)
        sha = rec.get("sha256") if rec and isinstance(rec.get("sha256"), str) else None
        if head.folder is not None:
            target = head.folder / path
            if not target.exists() or _internal(path):
                return None
            if target.is_dir():
                return Found(name, head.folder, mtime, 0, records.folder_size(target))
            size = target.stat().st_size
            return Found(name, head.folder, mtime, size, size, sha)
        if not head.remote:
            return None
        if head.manifest is not None:
            return _in_manifest(name, head.manifest, path, mtime, sha)
        if outs is not None and not any(r.get("dir") for r in outs.values()):
            if rec is None:
                return None  # written by this plugin: its outputs are known exactly
            size = int(rec.get("size") or 0)
            return Found(name, None, mtime, 0 if rec.get("dir") else size, size, sha)
        # Pushed without a file list (by resutil 0.1.x or before sidecars had one): the
        # list is inside the archive. TODO(issue 15): read just the archive's directory
        # with a ranged read; until then the experiment is pulled (once) to answer.
        folder = self.ensure_local(name)
        return self.stat(folder.name, path) if folder else None

    def ensure_local(self, name: str) -> Path:
        """The experiment's local folder, pulled (alone, without upstream ones) if needed."""
        ws = self.project.workspace
        local = ws.local_name(name)
        if local is None:
            self._local_names = None  # a new local folder
            if not self._use_remote():
                raise ExperimentNotFound(f"{name} is not local and RESUTIL_NO_REMOTE is set")
            self._log(f"resutil: pulling experiment {name}")
            pull_one(self.project, self.project.remote.require(name))
            local = ws.local_name(name)
            if local is None:
                raise ExperimentNotFound(f"pulling {name} left no local folder")
        return ws.path(local)

    def files(self, name: str) -> list[str]:
        """The user files of an experiment (for glob_wildcards)."""
        head = self.head(name)
        if head.folder is None and head.manifest is not None:
            return [p for p in head.manifest.files if not _internal(p)]
        folder = head.folder or self.ensure_local(name)
        return [rel for rel, _ in walk_files(folder) if not _internal(rel)]


def _internal(path: str) -> bool:
    """Files resutil or Snakemake add to an experiment; never offered as user files."""
    return path == EXP_FILE or path.split("/")[0] == UNCOMMITTED_DIR \
        or path.rsplit("/", 1)[-1] == ".snakemake_timestamp"


def _in_manifest(name: str, manifest: Manifest, path: str, mtime: float,
                 sha: str | None) -> Found | None:
    if _internal(path):
        return None
    if path in manifest.files:
        size = manifest.files[path][0]
        return Found(name, None, mtime, size, size, sha)
    prefix = path + "/"
    inner = [s for p, (s, _) in manifest.files.items() if p.startswith(prefix)]
    if inner:
        return Found(name, None, mtime, 0, sum(inner), sha)
    return None

