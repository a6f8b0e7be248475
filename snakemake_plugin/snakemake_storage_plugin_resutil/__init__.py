"""Snakemake storage plugin for resutil experiments.

    resutil://<experiment>/<path>      read a file or folder of an existing experiment
                                       (full name, identity or unique prefix)
    resutil://new:<comment>/<path>     an output of a job: each job's outputs become one
                                       experiment with that comment; read back, the newest
                                       such experiment made from the same inputs

Everything about experiments (finding, pulling, publishing, metadata) is resutil's
library; this package maps Snakemake's storage calls onto it:

    queries   what a query says                 lookup   which experiment, which file
    jobs      which job a file belongs to       runs     the experiments this process writes
    records   the plugin's part of the metadata sources  Snakemake's workflow sources archive
"""

from __future__ import annotations

import atexit
import json
import os
import shutil
import threading
import time
import weakref
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from snakemake_interface_common.exceptions import WorkflowError
from snakemake_interface_storage_plugins.common import Operation
from snakemake_interface_storage_plugins.io import (
    IOCacheStorageInterface,
    Mtime,
    get_constant_prefix,
)
from snakemake_interface_storage_plugins.settings import StorageProviderSettingsBase
from snakemake_interface_storage_plugins.storage_object import (
    StorageObjectGlob,
    StorageObjectRead,
    StorageObjectTouch,
    StorageObjectWrite,
)
from snakemake_interface_storage_plugins.storage_provider import (
    ExampleQuery,
    QueryType,
    StorageProviderBase,
    StorageQueryValidationResult,
)

from resutil.config import CONFIG_FILE_NAME, Config, config_from_dict, load_config
from resutil.errors import ConfigError, DependencyError, ExperimentError, ResutilError
from resutil.experiments import remove_experiments
from resutil.metadata import EXP_FILE, UNCOMMITTED_DIR, read_meta, write_meta
from resutil.naming import identity_of
from resutil.project import Project
from resutil.partial import retrieve_file
from resutil.publish import publish
from resutil.reproduce import SNAKEMAKE_INPUTS_ENV

from . import records, sources
from .jobs import JobEvents, JobInfo, is_job_process, listen
from .lookup import Finder
from .queries import (
    NEW,
    SCHEME,
    InvalidQuery,
    Query,
    has_wildcards,
    parse_query,
    pattern_regex,
)
from .records import Found
from .runs import Run, Runs

__all__ = ["StorageProvider", "StorageObject", "StorageProviderSettings", "parse_query"]

CONFIG_ENV = "SNAKEMAKE_STORAGE_RESUTIL_CONFIG"
PLUGIN_NAME = "resutil"
MTIME_TOLERANCE = 1e-3  # seconds; a file's mtime goes through float and nanoseconds
CLOCK_SKEW = 600.0  # seconds a cluster node's clock may be behind the main process's


# -- settings --------------------------------------------------------------------------------
@dataclass
class StorageProviderSettings(StorageProviderSettingsBase):
    config: str | None = field(
        default=None,
        metadata={
            "help": "The project's resutil-conf.yaml (default: $SNAKEMAKE_STORAGE_RESUTIL_CONFIG, "
            "then $RESUTIL_CONFIG, then the nearest resutil-conf.yaml above the working "
            "directory), or the config itself as one YAML mapping, e.g. '{project_name: P, "
            "results_dir: results, storage_type: gcs, storage_config: {bucket_name: b}}' "
            "(for jobs on nodes that do not share the file holding it).",
            "env_var": True,
        },
    )


# Snakemake (9.x) gives the untagged provider the settings of a tagged one declared first
# (``storage other: provider="resutil", config=...``): the same settings object, under the
# plugin's own name. Such an untagged provider ignores them and configures itself.
_settings_owner: dict[int, tuple[object, str]] = {}


# -- provider --------------------------------------------------------------------------------
class StorageProvider(StorageProviderBase):
    """One resutil project, as one Snakemake process sees it."""

    def __post_init__(self) -> None:
        # No I/O here: the project is loaded on first use (and not at all for --help).
        self._project: Project | None = None
        self.lock = threading.RLock()
        self._config = self._own_config()
        self._queries: set[str] = set()
        self._patterns: dict[str, Any] = {}
        self._generation = 0
        self.retrieved: dict[str, str] = {}  # input query -> experiment this process read
        self.events = JobEvents()
        listen(self.logger, self, self.events)
        self.finder = Finder(lambda: self.project, lambda: self.use_remote, self.uses,
                             lambda: self._generation, is_job_process(),
                             self.logger.info)
        pins = os.environ.get(SNAKEMAKE_INPUTS_ENV)  # set by resutil reproduce
        if pins:
            try:
                self.finder.pins = {str(k): str(v) for k, v in json.loads(pins).items()}
            except (ValueError, AttributeError):
                raise WorkflowError(f"{SNAKEMAKE_INPUTS_ENV} is not a JSON mapping of "
                                    "queries to experiments") from None
        self.runs = Runs(lambda: self.project, lambda: self.use_remote, Path(self.local_prefix),
                         lambda: self.events.snakefile, self.logger.info)
        # A job whose outputs did not all arrive (a temp output never stored) is still
        # recorded and published when the process ends.
        atexit.register(_finish_pending, weakref.ref(self))

    def _own_config(self) -> str | None:
        settings = self.settings
        value = getattr(settings, "config", None) if settings is not None else None
        if settings is not None:
            tag = Path(self.local_prefix).name
            owner = _settings_owner.setdefault(id(settings), (settings, tag))
            if owner[1] != tag and tag == PLUGIN_NAME:
                value = None  # a tagged provider's settings, handed to the untagged one
        value = value or os.environ.get(CONFIG_ENV)
        return str(value) if value else None

    # -- Snakemake's provider interface ---------------------------------------------------
    @classmethod
    def example_queries(cls) -> list[ExampleQuery]:
        return [
            ExampleQuery(f"{SCHEME}aapiyl_20240706T064339_prepare/data.csv",
                         "a file of an existing experiment (name, identity or unique prefix)",
                         QueryType.INPUT),
            ExampleQuery(f"{SCHEME}new:train/model.pt",
                         "an output: the job's experiment, comment 'train'",
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
        with self.lock:
            if self._project is None:
                try:
                    self._project = Project(_load_config(self._config))
                except ResutilError as e:
                    raise WorkflowError(
                        f"resutil storage: {e} (or pass --storage-resutil-config PATH)"
                    ) from None
            return self._project

    @property
    def use_remote(self) -> bool:
        return not self.project.no_remote

    # -- the workflow's queries -----------------------------------------------------------
    def note_query(self, query: str) -> None:
        """Remember a query of this workflow (every storage object Snakemake makes)."""
        if query in self._queries:
            return
        with self.lock:
            self._queries.add(query)
            if has_wildcards(query):
                self._patterns[query] = pattern_regex(query)
                self._generation += 1
            elif not any(p.match(query) for p in self._patterns.values()):
                self._generation += 1

    def uses(self, query: str) -> bool:
        """Whether ``query`` is one of this workflow's (as written, or by a pattern)."""
        return query in self._queries or any(p.match(query) for p in self._patterns.values())

    # -- finding --------------------------------------------------------------------------
    def locate(self, query: str, q: Query) -> Found | None:
        """Where the query's file or folder is; None when it does not exist."""
        with self.lock:
            try:
                if query in self.finder.pins:
                    name = self.finder.resolve(self.finder.pins[query])
                    return self.finder.stat(name, q.path) if name else None
                found = self.runs.find(query, q.path)
                if found is not None:
                    return found
                if not q.new:
                    name = self.finder.resolve(q.experiment)
                else:
                    name = self.finder.current(q)
                return self.finder.stat(name, q.path) if name else None
            except ResutilError as e:
                raise WorkflowError(f"{query}: {e}") from None

    def input_record(self, query: str, own: str) -> tuple[str, dict[str, Any]] | None:
        """What a job experiment records of one of its inputs: (query, {name, run_id})."""
        name = self.retrieved.get(query)
        if name is None:
            try:
                q = parse_query(query)
            except InvalidQuery:
                return None
            if q.is_sources:
                return None
            found = self.locate(query, q)
            name = found.name if found is not None else None
        if name is None or identity_of(name) == identity_of(own):
            return None
        meta = self.finder.head(name).meta
        return query, {"name": name, "run_id": meta.run_id if meta is not None else None}

    def inputs_of(self, run: Run) -> dict[str, dict[str, Any]]:
        """The input records of a job experiment (every experiment this process read, when
        the job is not known)."""
        queries = run.job.inputs if run.job is not None else list(self.retrieved)
        out: dict[str, dict[str, Any]] = {}
        for query in queries:
            rec = self.input_record(query, run.name)
            if rec is not None:
                out[rec[0]] = rec[1]
        return out


def _load_config(value: str | None) -> Config:
    """The project's config: from a file (the setting, else found as ``resutil`` finds
    it), or given inline as one YAML mapping (relative paths in it are relative to the
    working directory)."""
    if value is None:
        return load_config()
    if value.lstrip().startswith("{"):
        here = Path.cwd() / CONFIG_FILE_NAME
        try:
            data = yaml.safe_load(value)
        except yaml.YAMLError as e:
            raise ConfigError(f"the inline config is not one YAML mapping ({e})") from None
        return config_from_dict(data, here)
    return load_config(Path(os.path.expandvars(value)).expanduser().resolve())


def _finish_pending(ref: weakref.ref) -> None:
    provider = ref()
    if provider is None:
        return
    for run in provider.runs.pending():
        try:
            provider.runs.finish(run, provider.inputs_of(run))
        except Exception as e:  # noqa: BLE001 - at exit: say it, never raise
            provider.logger.warning(f"resutil: could not publish {run.name}: {e}")


# -- objects ---------------------------------------------------------------------------------
class StorageObject(StorageObjectRead, StorageObjectWrite, StorageObjectGlob, StorageObjectTouch):
    """A file or folder inside a resutil experiment."""

    provider: StorageProvider

    def __post_init__(self) -> None:
        # Objects are re-created for every wildcard substitution: parse only, no I/O.
        try:
            self.q: Query | None = parse_query(self.query)
        except InvalidQuery:
            self.q = None  # a pattern (glob_wildcards); only list_candidate_matches is used
        self.provider.note_query(self.query)

    def _query(self) -> Query:
        if self.q is None:
            try:
                parse_query(self.query)
            except InvalidQuery as e:
                raise WorkflowError(f"{self.query}: {e}") from None
        assert self.q is not None
        return self.q

    def local_suffix(self) -> str:
        return self._query().local_suffix()

    def locate(self) -> Found | None:
        q = self._query()
        if q.is_sources:
            stat = sources.info(self.provider.project, _basename(q))
            return None if stat is None else Found("", None, stat[0], stat[1], stat[1])
        return self.provider.locate(self.query, q)

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
        q = self._query()
        parent = self.get_inventory_parent()
        if parent is not None and parent not in cache.exists_in_storage:
            # One listing answers for every file of an existing experiment.
            cache.exists_in_storage[parent] = True
            name = self.provider.finder.resolve(q.experiment)
            head = self.provider.finder.head(name) if name else None
            if head is not None and (head.folder is not None or head.manifest is not None):
                for rel in self.provider.finder.files(name):  # type: ignore[arg-type]
                    found = self.provider.finder.stat(name, rel)  # type: ignore[arg-type]
                    if found is not None:
                        k = self.cache_key(Query(q.experiment, rel, False).local_suffix())
                        cache.exists_in_storage[k] = True
                        cache.mtime[k] = Mtime(storage=found.mtime)
                        cache.size[k] = found.size
            if key in cache.exists_in_storage:
                return
        found = self.locate()
        cache.exists_in_storage[key] = found is not None
        if found is not None:
            cache.mtime[key] = Mtime(storage=found.mtime)
            cache.size[key] = found.size

    def get_inventory_parent(self) -> str | None:
        q = self._query()
        if q.new or q.is_sources:
            return None
        return self.cache_key(f"exp/{q.experiment}")

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

    def checksum(self) -> str | None:
        sha = self._found().sha256
        return f"sha256:{sha}" if sha else None

    def retrieve_object(self) -> None:
        q = self._query()
        dest = self.local_path()
        if q.is_sources:
            sources.retrieve(self.provider.project, _basename(q), dest)
            return
        found = self._found()
        if found.folder is None and not self._fetch_one(found.name, q.path, dest):
            folder = self.provider.finder.ensure_local(found.name)  # a folder: pulled whole
            src = folder / q.path
            if not src.exists():
                raise WorkflowError(f"experiment {found.name} has no {q.path}")
            _copy_replacing(src, dest)
        elif found.folder is not None:
            src = found.folder / q.path
            if not src.exists():
                raise WorkflowError(f"experiment {found.name} has no {q.path}")
            _copy_replacing(src, dest)
        records.set_mtime(dest, found.mtime)  # local == storage mtime: no re-retrieval
        self.provider.retrieved[self.query] = found.name

    def _fetch_one(self, name: str, path: str, dest: Path) -> bool:
        """One file of a remote experiment, read from its archive by ranged requests and
        checked (no pull); False when ``path`` is not a file there (a folder)."""
        dest.parent.mkdir(parents=True, exist_ok=True)
        try:
            retrieve_file(self.provider.project, name, path, dest)
        except ExperimentError:  # a folder, or nothing of that name: the caller decides
            return False
        return True

    # -- write ----------------------------------------------------------------------------
    def store_object(self) -> None:
        q = self._query()
        provider = self.provider
        if q.is_sources:
            sources.store(provider.project, _basename(q), self.local_path())
            return
        if not q.new:
            raise WorkflowError(
                f"{self.query}: existing experiments are read-only records; write outputs to "
                f"{SCHEME}{NEW}<comment>/{q.path}"
            )
        top = q.path.split("/")[0]
        if top in (EXP_FILE, UNCOMMITTED_DIR):
            raise WorkflowError(f"{self.query}: {top} is resutil's own; choose another path")
        src = self.local_path()
        job = provider.events.job_for(self.query)
        with provider.lock:
            # Stored by the job itself (a cluster job, on a shared file system, whose
            # output Snakemake's main process stores again): nothing to do.
            if (job is None or not job.local) and self._already_stored(q, src, job):
                return
            try:
                provider.runs.store(self.query, q.experiment, q.path, src, job,
                                     provider.inputs_of)
            except ResutilError as e:
                raise WorkflowError(f"{self.query}: {e}") from None
            finally:
                provider.finder.forget()

    def _already_stored(self, q: Query, src: Path, job: JobInfo | None) -> bool:
        """Whether the current experiment for ``q`` already holds ``src``: this job's
        output, stored by the job itself (the job ran elsewhere: a cluster job, whose
        output Snakemake's main process stores again on a shared file system), or, for an
        unknown job, a local copy unchanged since it was retrieved."""
        finder = self.provider.finder
        finder.refresh()  # the job's own process stored it just now
        name = finder.current(q)
        meta = finder.head(name).meta if name else None
        rec = records.output_holding(records.outputs(meta), q.path)
        if not rec or not rec.get("sha256") or "size" not in rec:
            return False
        try:
            if job is not None:
                made = records.section(meta) or {}
                if made.get("rule") != job.rule or made.get("wildcards") != job.wildcards \
                        or float(made.get("started") or 0) < job.started - CLOCK_SKEW:
                    return False
            elif abs(src.stat().st_mtime - float(rec["mtime"])) >= MTIME_TOLERANCE:
                return False
            size = 0 if src.is_dir() else src.stat().st_size
        except (OSError, TypeError, ValueError):
            return False
        return size == rec["size"] and records.content_sha256(src) == rec["sha256"]

    def remove(self) -> None:
        q = self._query()
        provider = self.provider
        if q.is_sources:
            sources.remove(provider.project, _basename(q))
            return
        if not q.new:
            raise WorkflowError(f"{self.query}: existing experiments are read-only records")
        job = provider.events.job_for(self.query)
        run = provider.runs.by_query.get(self.query)
        if job is not None and job.local and run is None:
            return  # removed before its job runs again: the old experiment stays a record
        with provider.lock:
            # The experiment the query names now (an older one made from the same inputs
            # may be named next: records that others depend on are not removed silently).
            current = provider.finder.current(q) if run is None else run.name
            if current is None:
                return
            names = [current]
            try:
                remove_experiments(provider.project, names, force=run is not None)
            except DependencyError as e:
                provider.logger.warning(f"resutil: {self.query} is kept: {e}")
                return
            except ResutilError as e:
                raise WorkflowError(f"{self.query}: {e}") from None
            finally:
                provider.finder.forget()
            if run is not None:
                provider.runs.forget(run)

    def touch(self) -> None:
        q = self._query()
        provider = self.provider
        if not q.new or q.is_sources:
            raise WorkflowError(f"{self.query}: existing experiments are read-only records")
        with provider.lock:
            found = self.locate()
            if found is None:
                raise WorkflowError(
                    f"{self.query}: no experiment made from this workflow's inputs holds it; "
                    "run the rule to make one"
                )
            now = time.time()
            run = provider.runs.by_query.get(self.query)
            try:
                if run is not None:
                    run.outputs[q.path]["mtime"] = now
                    records.set_mtime(run.folder / q.path, now)
                    if run.published:
                        provider.runs.finish(run, provider.inputs_of(run))
                    return
                folder = found.folder or provider.finder.ensure_local(found.name)
                meta = read_meta(folder, with_manifest=False)
                outs = records.outputs(meta) or {}
                if q.path not in outs:
                    raise WorkflowError(f"{self.query}: not an output stored by a job")
                outs[q.path]["mtime"] = now
                meta.extra[records.RECORD_KEY]["outputs"] = outs
                records.set_mtime(folder / q.path, now)
                write_meta(folder, meta)  # without its manifest: the push seals it anew
                if provider.use_remote:
                    publish(provider.project, folder)
            except ResutilError as e:
                raise WorkflowError(f"{self.query}: {e}") from None
            finally:
                provider.finder.forget()

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
        finder = self.provider.finder
        if exp.startswith(NEW):
            comment = exp[len(NEW):]
            names = [r.name for r in self.provider.runs.by_key.values() if r.comment == comment]
            names += [n for n in finder.holders(comment) if n not in names]
        else:
            name = finder.resolve(exp)
            names = [name] if name else []
        seen: set[str] = set()
        for name in names:
            for rel in finder.files(name):
                if rel.startswith(path_prefix) and rel not in seen:
                    seen.add(rel)
                    yield f"{SCHEME}{exp}/{rel}"


def _basename(q: Query) -> str:
    return q.path.rsplit("/", 1)[-1]


def _copy_replacing(src: Path, dest: Path) -> None:
    """Copy a file or folder to ``dest`` so that a reader never sees half of it."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.{os.getpid()}.tmp")
    if src.is_dir():
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.copytree(src, tmp)
        if dest.is_dir() and not dest.is_symlink():
            shutil.rmtree(dest)
        elif dest.exists() or dest.is_symlink():
            dest.unlink()
        os.rename(tmp, dest)
    else:
        shutil.copy2(src, tmp)
        if dest.is_dir() and not dest.is_symlink():
            shutil.rmtree(dest)
        os.replace(tmp, dest)
