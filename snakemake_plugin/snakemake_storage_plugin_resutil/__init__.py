"""Snakemake storage plugin for resutil experiments.

    resutil://<experiment>/<path>      read a file or folder of an existing experiment
                                       (full name, identity or unique prefix)
    resutil://new:<comment>/<path>     write an output into the experiment this Snakemake run
                                       makes for <comment>; read it back the same way

Everything about experiments (finding, pulling, pushing, metadata) is resutil's library;
this module only maps Snakemake's storage calls onto it.

A ``new:<comment>`` query means "the newest experiment with that comment that this plugin
wrote and that holds <path>". Before a job runs, that is the previous run's experiment (so an
up-to-date output is not rebuilt); once the job stores its output, it is this run's
experiment. The plugin records, in the experiment's ``resutil-exp.yaml`` under
``snakemake.outputs``, when each output was stored: that time is the output's mtime
wherever the experiment lives (local folder or remote sidecar), so rerun decisions do not
change when an experiment is pulled or cleaned up locally.
"""

from __future__ import annotations

import os
import shlex
import shutil
import sys
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from snakemake_interface_common.exceptions import WorkflowError
from snakemake_interface_storage_plugins.common import Operation
from snakemake_interface_storage_plugins.io import (
    WILDCARD_REGEX,
    IOCacheStorageInterface,
    Mtime,
    get_constant_prefix,
)
from snakemake_interface_storage_plugins.settings import StorageProviderSettingsBase
from snakemake_interface_storage_plugins.storage_object import (
    StorageObjectGlob,
    StorageObjectRead,
    StorageObjectWrite,
)
from snakemake_interface_storage_plugins.storage_provider import (
    ExampleQuery,
    QueryType,
    StorageProviderBase,
    StorageQueryValidationResult,
)

from resutil.experiments import new_experiment, record_start
from resutil.publish import publish
from resutil.config import load_config
from resutil.errors import ExperimentNotFound, ResutilError
from resutil.metadata import (
    EXP_FILE,
    UNCOMMITTED_DIR,
    ExpMeta,
    compute_manifest,
    upstream_record,
    read_meta,
    walk_files,
    write_meta,
)
from resutil.naming import IDENTITY_LEN, comment_problem, parse_name
from resutil.project import Project
from resutil.sync import pull_one

SCHEME = "resutil://"
NEW = "new:"
CONFIG_ENV = "SNAKEMAKE_STORAGE_RESUTIL_CONFIG"
RECORD_KEY = "snakemake"  # this plugin's section of resutil-exp.yaml
# Files resutil or Snakemake add to an experiment; never offered to glob_wildcards.
INTERNAL_NAMES = (EXP_FILE, ".snakemake_timestamp")


# -- settings --------------------------------------------------------------------------------
@dataclass
class StorageProviderSettings(StorageProviderSettingsBase):
    config: Path | None = field(
        default=None,
        metadata={
            "help": "The project's resutil-conf.yaml (default: $SNAKEMAKE_STORAGE_RESUTIL_CONFIG, "
            "then $RESUTIL_CONFIG, then the nearest resutil-conf.yaml above the working "
            "directory).",
            "env_var": True,
            "type": Path,
        },
    )


# -- queries ---------------------------------------------------------------------------------
class InvalidQuery(ValueError):
    """A query this plugin cannot handle; the message says why."""


@dataclass(frozen=True)
class Query:
    """A parsed ``resutil://`` query."""

    experiment: str  # as written (name, identity, prefix), or the comment of a new: query
    path: str  # relative path inside the experiment, no trailing slash
    new: bool


def parse_query(query: str) -> Query:
    """Split a query on ``://`` and the first ``/`` (urlparse would cut at '#' and '?')."""
    if not query.startswith(SCHEME):
        raise InvalidQuery(f"must start with {SCHEME}")
    exp, _, path = query[len(SCHEME):].partition("/")
    path = path.rstrip("/")
    if not exp:
        raise InvalidQuery("no experiment: use resutil://<experiment>/<path>")
    if not path:
        raise InvalidQuery("no path inside the experiment: use resutil://<experiment>/<path>")
    if path.startswith("/") or any(p in ("", ".", "..") for p in path.split("/")):
        raise InvalidQuery("the path inside the experiment must be relative, without '.', '..' or '//'")
    if exp.startswith(NEW):
        comment = exp[len(NEW):]
        if not comment:
            raise InvalidQuery("new: needs a comment: resutil://new:<comment>/<path>")
        problem = None if WILDCARD_REGEX.search(comment) else comment_problem(comment)
        if problem:
            raise InvalidQuery(f"invalid comment {comment!r}: {problem}")
        return Query(comment, path, True)
    if ":" in exp and not WILDCARD_REGEX.search(exp):
        raise InvalidQuery(
            f"'{exp}' is neither an experiment nor new:<comment> (experiment names have no ':')"
        )
    return Query(exp, path, False)


@dataclass(frozen=True)
class Found:
    """Where a query's file or folder is and what Snakemake needs to know about it."""

    name: str  # the experiment's full name
    folder: Path | None  # its local folder, when it is local
    mtime: float
    size: int  # bytes; 0 for a folder
    footprint: int  # bytes retrieving it takes on disk


# -- provider --------------------------------------------------------------------------------
class StorageProvider(StorageProviderBase):
    """One resutil project; remembers the experiments this Snakemake run writes."""

    def __post_init__(self) -> None:
        # No I/O here: the project is loaded on first use (and not at all for --help).
        self._project: Project | None = None
        self._lock = threading.RLock()
        self._runs: dict[str, str] = {}  # comment -> experiment created by this run
        self._names: dict[str, str] = {}  # experiment as written -> full name
        self._metas: dict[str, ExpMeta | None] = {}  # name -> head meta (not our runs)
        self._retrieved: dict[str, str] = {}  # identity -> name, for the lineage fallback

    # -- Snakemake's provider interface ---------------------------------------------------
    @classmethod
    def example_queries(cls) -> list[ExampleQuery]:
        return [
            ExampleQuery(f"{SCHEME}aapiyl_20240706T064339_prepare/data.csv",
                         "a file of an existing experiment (name, identity or unique prefix)",
                         QueryType.INPUT),
            ExampleQuery(f"{SCHEME}new:train/model.pt",
                         "an output written to the experiment this run makes for comment 'train'",
                         QueryType.ANY),
        ]

    def rate_limiter_key(self, query: str, operation: Operation) -> Any:
        return None

    def default_max_requests_per_second(self) -> float:
        return 100.0

    def use_rate_limiter(self) -> bool:
        return False  # resutil's storage layer retries with backoff itself

    @classmethod
    def is_valid_query(cls, query: str) -> StorageQueryValidationResult:
        try:
            parse_query(query)
        except InvalidQuery as e:
            return StorageQueryValidationResult(query, False, str(e))
        return StorageQueryValidationResult(query, True)

    def postprocess_query(self, query: str) -> str:
        return query  # the same object: directory() flags live on it

    # -- the project ----------------------------------------------------------------------
    @property
    def project(self) -> Project:
        with self._lock:
            if self._project is None:
                value = getattr(self.settings, "config", None) or os.environ.get(CONFIG_ENV)
                path = Path(os.path.expandvars(str(value))).expanduser().resolve() if value else None
                try:
                    self._project = Project(load_config(path)) if path else Project.load()
                except ResutilError as e:
                    raise WorkflowError(
                        f"resutil storage: {e} (or pass --storage-resutil-config PATH)"
                    ) from None
            return self._project

    @property
    def use_remote(self) -> bool:
        return not self.project.no_remote

    # -- finding experiments --------------------------------------------------------------
    def resolve(self, written: str) -> str | None:
        """The full name of an existing experiment, or None when there is none."""
        name = self._names.get(written)
        if name is None:
            try:
                name = self.project.resolve(written, remote=self.use_remote)
            except ExperimentNotFound:
                return None
            self._names[written] = name
        return name

    def local_folder(self, name: str) -> Path | None:
        ws = self.project.workspace
        local = ws.local_name(name)
        return ws.path(local) if local else None

    def head(self, name: str) -> tuple[ExpMeta | None, Path | None, dict | None]:
        """(metadata, local folder, remote sidecar) of an experiment; never downloads an archive."""
        folder = self.local_folder(name)
        if folder is not None:
            if name in self._runs.values():
                return read_meta(folder, with_manifest=False), folder, None
            if name not in self._metas:
                self._metas[name] = read_meta(folder, with_manifest=False)
            return self._metas[name], folder, None
        if not self.use_remote:
            return None, None, None
        exp = self.project.remote.get(name)
        if exp is None:
            return None, None, None
        side = self.project.remote.paired(exp)
        if side is None:
            return None, None, {}  # pushed by 0.1.x: no metadata without the archive
        meta = ExpMeta.from_dict(side["meta"])
        meta.set_name(exp.name)
        return meta, None, side

    def candidates(self, comment: str) -> list[str]:
        """Experiments with ``comment`` written by this plugin, newest first."""
        found: dict[str, str] = {}
        if self.use_remote:
            for ident, exp in self.project.remote.experiments().items():
                if (p := parse_name(exp.name)) and p.comment == comment:
                    found[ident] = exp.name
        for ident, name in self.project.workspace.names().items():
            if (p := parse_name(name)) and p.comment == comment:
                found[ident] = name
        out = []
        for ident in sorted(found, reverse=True):
            meta = self.head(found[ident])[0]
            if meta is not None and RECORD_KEY in meta.extra and meta.status == "finished":
                out.append(found[ident])
        return out

    def locate(self, query: Query) -> Found | None:
        """Where the query's file or folder is; None when it does not exist."""
        if not query.new:
            name = self.resolve(query.experiment)
            return self._stat(name, query.path) if name else None
        run = self._runs.get(query.experiment)
        if run is not None and (found := self._stat(run, query.path)) is not None:
            return found  # this run's experiment is the newest: no need to list the remote
        for name in self.candidates(query.experiment):
            if name != run and (found := self._stat(name, query.path)) is not None:
                return found
        return None

    def _stat(self, name: str, path: str) -> Found | None:
        meta, folder, side = self.head(name)
        outputs = _outputs(meta)
        if folder is not None:
            target = folder / path
            if not target.exists():
                return None
            if target.is_dir():
                size, footprint = 0, sum(p.stat().st_size for _, p in walk_files(target))
            else:
                size = footprint = target.stat().st_size
            return Found(name, folder, _mtime(outputs, path, meta, name), size, footprint)
        if meta is None and side is None:
            return None  # not on the remote either
        manifest = ((side or {}).get("meta") or {}).get("manifest") or {}
        whole = int(manifest.get("total_size") or 0)  # a pull extracts the whole experiment
        record = _record(outputs, path)
        if outputs is not None and record is None:
            return None  # written by this plugin: its outputs are known exactly
        # Otherwise the file list is only in the archive: assume the path is there (a
        # retrieval that finds it missing fails with a clear message).
        if record and record.get("dir"):
            size = 0
        else:
            known = (record or {}).get("size")
            size = whole if known is None else int(known)
        return Found(name, None, _mtime(outputs, path, meta, name), size, whole)

    # -- reading --------------------------------------------------------------------------
    def ensure_local(self, name: str) -> Path:
        """The experiment's local folder, pulled (alone, without upstream ones) if needed."""
        with self._lock:
            folder = self.local_folder(name)
            if folder is None:
                if not self.use_remote:
                    raise ResutilError(f"{name} is not local and RESUTIL_NO_REMOTE is set")
                self.logger.info(f"resutil: pulling experiment {name}")
                pull_one(self.project, self.project.remote.require(name))
                folder = self.local_folder(name)
                if folder is None:
                    raise ResutilError(f"pulling {name} left no local folder")
            return folder

    def note_read(self, name: str) -> None:
        self._retrieved[name[:IDENTITY_LEN]] = name

    # -- writing --------------------------------------------------------------------------
    def run_experiment(self, comment: str) -> Path:
        """The folder of the experiment this run writes for ``comment`` (made on first use)."""
        with self._lock:
            if comment in self._runs:
                return self.project.workspace.path(self._runs[comment])
            project = self.project
            folder, meta = new_experiment(project, comment, claim=self.use_remote)
            name = folder.name
            record_start(project, folder, meta, shlex.join(sys.argv))
            meta.extra[RECORD_KEY] = {"workdir": os.getcwd(), "outputs": {}}
            write_meta(folder, meta)
            self._runs[comment] = name
            self.logger.info(f"resutil: outputs for new:{comment} go to experiment {name}")
            return folder

    def publish(self, folder: Path) -> None:
        """Push the experiment so the remote has it (or just seal its manifest when offline)."""
        if not self.use_remote:
            meta = read_meta(folder, with_manifest=False)
            meta.manifest = compute_manifest(folder)
            write_meta(folder, meta)
            return
        try:
            publish(self.project, folder)
        except ResutilError as e:
            raise ResutilError(
                f"{e}; the output is kept in {folder} - run 'resutil push {folder.name}' later"
            ) from None


def _outputs(meta: ExpMeta | None) -> dict[str, dict] | None:
    """This plugin's record of stored outputs, or None for an experiment it did not write."""
    section = (meta.extra.get(RECORD_KEY) if meta is not None else None) or None
    if not isinstance(section, dict):
        return None
    outputs = section.get("outputs")
    return outputs if isinstance(outputs, dict) else {}


def _record(outputs: dict[str, dict] | None, path: str) -> dict | None:
    """The stored output holding ``path`` (itself, or a stored folder above it)."""
    if not outputs:
        return None
    if path in outputs:
        return outputs[path]
    for out, rec in outputs.items():
        if rec.get("dir") and path.startswith(out + "/"):
            return {"mtime": rec.get("mtime")}  # inside a stored folder: size unknown
    inner = [rec for out, rec in outputs.items() if out.startswith(path + "/")]
    if inner:  # a folder holding stored outputs
        return {"dir": True, "mtime": max(float(r.get("mtime", 0)) for r in inner)}
    return None


def _mtime(outputs: dict[str, dict] | None, path: str, meta: ExpMeta | None, name: str) -> float:
    """When the output was stored; else when the experiment ended (or started)."""
    record = _record(outputs, path)
    if record and record.get("mtime") is not None:
        return float(record["mtime"])
    for stamp in (meta.ended_at, meta.started_at) if meta is not None else ():
        if stamp:
            try:
                return datetime.fromisoformat(str(stamp)).timestamp()
            except ValueError:
                pass
    parsed = parse_name(name)
    return parsed.time.timestamp() if parsed else 0.0


# -- objects ---------------------------------------------------------------------------------
class StorageObject(StorageObjectRead, StorageObjectWrite, StorageObjectGlob):
    """A file or folder inside a resutil experiment."""

    provider: StorageProvider

    def __post_init__(self) -> None:
        # Objects are re-created for every wildcard substitution: parse only, no I/O.
        try:
            self.q: Query | None = parse_query(self.query)
        except InvalidQuery:
            self.q = None  # a pattern (glob_wildcards); only list_candidate_matches is used

    def _query(self) -> Query:
        if self.q is None:
            try:
                parse_query(self.query)
            except InvalidQuery as e:
                raise WorkflowError(f"{self.query}: {e}") from None
        assert self.q is not None
        return self.q

    def local_suffix(self) -> str:
        q = self._query()
        return f"{'new' if q.new else 'exp'}/{q.experiment}/{q.path}"

    def locate(self) -> Found | None:
        return self.provider.locate(self._query())

    def _found(self) -> Found:
        found = self.locate()
        if found is None:
            raise FileNotFoundError(f"{self.query} does not exist")
        return found

    # -- read -----------------------------------------------------------------------------
    async def inventory(self, cache: IOCacheStorageInterface) -> None:
        key = self.cache_key()
        if key in cache.exists_in_storage:
            return
        found = self.locate()
        cache.exists_in_storage[key] = found is not None
        if found is not None:
            cache.mtime[key] = Mtime(storage=found.mtime)
            cache.size[key] = found.size

    def get_inventory_parent(self) -> str | None:
        return None

    def cleanup(self) -> None:
        pass  # local copies are Snakemake's; experiment folders are resutil's

    def exists(self) -> bool:
        return self.locate() is not None

    def mtime(self) -> float:
        return self._found().mtime

    def size(self) -> int:
        return self._found().size

    def local_footprint(self) -> int:
        return self._found().footprint

    def retrieve_object(self) -> None:
        q = self._query()
        found = self._found()
        folder = found.folder or self.provider.ensure_local(found.name)
        src = folder / q.path
        if not src.exists():
            raise WorkflowError(f"experiment {found.name} has no {q.path}")
        dest = self.local_path()
        _remove(dest)
        _copy(src, dest)
        _set_mtime(dest, found.mtime)  # local == storage mtime: no needless re-retrieval
        self.provider.note_read(found.name)

    # -- write ----------------------------------------------------------------------------
    def store_object(self) -> None:
        q = self._query()
        if not q.new:
            raise WorkflowError(
                f"{self.query}: existing experiments are read-only records; write outputs to "
                f"{SCHEME}{NEW}<comment>/{q.path}"
            )
        top = q.path.split("/")[0]
        if top in (EXP_FILE, UNCOMMITTED_DIR):
            raise WorkflowError(f"{self.query}: {top} is resutil's own; choose another path")
        src = self.local_path()
        provider = self.provider
        with provider._lock:
            folder = provider.run_experiment(q.experiment)
            dest = folder / q.path
            _remove(dest)
            _copy(src, dest)
            now = time.time()
            _set_mtime(dest, now)
            meta = read_meta(folder, with_manifest=False)
            is_dir = dest.is_dir()
            size = 0 if is_dir else dest.stat().st_size
            meta.extra[RECORD_KEY]["outputs"][q.path] = {"mtime": now, "size": size, "dir": is_dir}
            for upstream in self._upstream(folder.name):
                local = provider.local_folder(upstream)
                meta.add_dependency(upstream, "declared", **(upstream_record(local) if local else {}))
            meta.status = "finished"
            meta.ended_at = datetime.now().astimezone().isoformat(timespec="seconds")
            write_meta(folder, meta)
            provider.publish(folder)

    def remove(self) -> None:
        # Snakemake removes an output before rebuilding it. An output of an earlier run
        # stays in its experiment (a record); the rebuilt one goes to this run's experiment.
        q = self._query()
        provider = self.provider
        run = provider._runs.get(q.experiment) if q.new else None
        if run is None:
            return
        with provider._lock:
            folder = provider.project.workspace.path(run)
            target = folder / q.path
            if not target.exists():
                return
            _remove(target)
            meta = read_meta(folder, with_manifest=False)
            meta.extra[RECORD_KEY]["outputs"].pop(q.path, None)
            write_meta(folder, meta)
            provider.publish(folder)

    def _upstream(self, own: str) -> list[str]:
        """Experiments the job storing this output read through this plugin.

        Snakemake does not tell a storage object which job it belongs to; the job is a
        local of the coroutine that stores its outputs (``DAG.handle_storage``), so look
        for it up the stack. Without it (another Snakemake version, or a direct call),
        fall back to every experiment this process retrieved: a superset of the inputs.
        """
        job = _calling_job(self.query)
        if job is None:
            names = list(self.provider._retrieved.values())
        else:
            names = []
            for f in job.input:
                obj = get_storage_object(f)
                if isinstance(obj, StorageObject) and obj.q is not None:
                    found = obj.locate()
                    if found is not None:
                        names.append(found.name)
        return [n for n in dict.fromkeys(names) if n[:IDENTITY_LEN] != own[:IDENTITY_LEN]]

    # -- glob -----------------------------------------------------------------------------
    def list_candidate_matches(self) -> Iterable[str]:
        prefix = get_constant_prefix(self.query)
        rest = prefix[len(SCHEME):] if prefix.startswith(SCHEME) else ""
        exp, sep, path_prefix = rest.partition("/")
        if not sep or not exp:
            raise WorkflowError(
                f"{self.query}: glob_wildcards needs a fixed experiment: "
                f"{SCHEME}<experiment>/<pattern> or {SCHEME}{NEW}<comment>/<pattern>"
            )
        provider = self.provider
        if exp.startswith(NEW):
            names = provider.candidates(exp[len(NEW):])
            run = provider._runs.get(exp[len(NEW):])
            names = ([run] if run else []) + [n for n in names if n != run]
        else:
            name = provider.resolve(exp)
            names = [name] if name else []
        seen: set[str] = set()
        for name in names:
            for rel in _files(provider, name):
                if rel.startswith(path_prefix) and rel not in seen:
                    seen.add(rel)
                    yield f"{SCHEME}{exp}/{rel}"


def _files(provider: StorageProvider, name: str) -> Iterator[str]:
    """The user files of an experiment; from its outputs record when only remote."""
    meta, folder, _ = provider.head(name)
    outputs = _outputs(meta)
    if folder is None and outputs is not None and not any(r.get("dir") for r in outputs.values()):
        yield from outputs
        return
    folder = folder or provider.ensure_local(name)
    for rel, _ in walk_files(folder):
        if rel.split("/")[0] == UNCOMMITTED_DIR or rel.rsplit("/", 1)[-1] in INTERNAL_NAMES:
            continue
        yield rel


def get_storage_object(f: Any) -> Any:
    """The storage object of a Snakemake IOFile, or None."""
    try:
        return f.storage_object if getattr(f, "is_storage", False) else None
    except Exception:  # noqa: BLE001 - a callable or otherwise unusual input
        return None


def _calling_job(query: str, depth: int = 50) -> Any:
    """The Snakemake job up the call stack that has ``query`` among its outputs, or None."""
    frame = sys._getframe(2)
    for _ in range(depth):
        if frame is None:
            return None
        job = frame.f_locals.get("job")
        if job is not None and hasattr(job, "input") and hasattr(job, "output"):
            try:
                outputs = list(job.output)
            except TypeError:
                outputs = []
            if any(getattr(get_storage_object(f), "query", None) == query for f in outputs):
                return job
        frame = frame.f_back
    return None


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


def _copy(src: Path, dest: Path) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    if src.is_dir():
        shutil.copytree(src, dest)
    else:
        shutil.copy2(src, dest)


def _set_mtime(path: Path, mtime: float) -> None:
    if path.is_dir():
        for root, dirs, files in os.walk(path):
            for n in (*dirs, *files):
                os.utime(os.path.join(root, n), (mtime, mtime))
    os.utime(path, (mtime, mtime))
