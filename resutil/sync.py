"""Push and pull as plan -> transfer -> result, with the dependency closure."""

from __future__ import annotations

import errno
import logging
import os
import shutil
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path

from .archive import (
    LocalWriteError,
    NotStreamable,
    StreamExtractor,
    extract_archive,
    hash_mismatch,
)
from .errors import ExperimentError, ResutilError
from .metadata import hash_file, manifest_changes, read_head, read_meta
from .naming import IDENTITY_LEN
from .progress import NO_PROGRESS, NO_PROGRESS_FACTORY, Callback, CallbackFactory
from .runs import end_dead_run, run_liveness

log = logging.getLogger(__name__)
SMALL_ARCHIVE = 4 << 20  # archives extracted and hashed in one thread
# The metadata keys that decide whether a pushed experiment is up to date (publish.compare,
# run_liveness): a push of many reads only these (and the manifest) of each.
SYNC_KEYS = ("args", "dependency", "dependency_sources", "name", "run_id", "comment", "status",
             "started_at", "ended_at", "process")
from .project import Project
from .publish import UP_TO_DATE, Published, Target, same_run, settle, transfer, up_to_date
from .remote import Remote, RemoteExperiment


@dataclass
class SyncPlan:
    """What a push or pull will move, and what it leaves alone and why."""

    direction: str  # "push" | "pull"
    items: list[str] = field(default_factory=list)
    reasons: dict[str, str] = field(default_factory=dict)
    skipped: list[tuple[str, str]] = field(default_factory=list)
    missing: list[tuple[str, str]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)  # experiments left out, and why
    dead: list[str] = field(default_factory=list)  # left 'running' by a process that is gone


@dataclass
class SyncResult:
    """What a push or pull did."""

    transferred: list[str] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)
    missing: list[tuple[str, str]] = field(default_factory=list)
    up_to_date: list[str] = field(default_factory=list)
    moved: list[tuple[str, str]] = field(default_factory=list)  # (old name, new name)
    bytes: int = 0

    @property
    def ok(self) -> bool:
        return not self.failed


# -- push ---------------------------------------------------------------------------------------
def plan_push(
    project: Project, queries: list[str], all_: bool = False, with_deps: bool = True
) -> SyncPlan:
    """Which local experiments to upload: the requested ones plus missing upstream ones.

    A requested experiment whose metadata cannot be read is an ExperimentError; one found
    by ``all_`` or as an upstream experiment is left out with a warning.
    """
    ws, remote = project.workspace, project.remote
    local = ws.names()
    on_remote = remote.experiments()
    plan = SyncPlan("push")
    todo: list[tuple[str, str]] = []
    seen: set[str] = set()
    if all_:
        for ident, name in local.items():
            try:
                if ident in on_remote:  # (most are up to date: only what decides it is read)
                    head = read_head(ws.path(name), keys=SYNC_KEYS, manifest=True)
                    assert head is not None
                    meta = head
                else:  # (parsed once: the push reads it again, from memory)
                    meta = read_meta(ws.path(name))
            except ExperimentError as e:
                plan.warnings.append(f"{e} (not pushed)")
                seen.add(ident)
                continue
            if run_liveness(meta) in ("live", "unknown"):
                plan.skipped.append((name, "still running"))
            elif ident not in on_remote:
                todo.append((name, "not on the remote"))
            elif not up_to_date(project, ws.path(name), meta, on_remote[ident]):
                todo.append((name, "changed since pushed"))
    for query in queries:
        name = ws.resolve(query)
        todo.append((name, "requested"))
        seen.discard(name[:IDENTITY_LEN])  # named: its error is the command's error
    while todo:
        name, reason = todo.pop(0)
        ident = name[:IDENTITY_LEN]
        if ident in seen:
            continue
        seen.add(ident)
        try:
            meta = read_meta(ws.path(name), with_manifest=False)
        except ExperimentError as e:
            if reason == "requested":
                raise
            plan.warnings.append(f"{e} (not pushed)")
            continue
        plan.items.append(name)
        plan.reasons[name] = reason
        if run_liveness(meta) == "dead":
            plan.dead.append(name)  # pushed as interrupted (push marks it)
        if not with_deps:
            continue
        for dep in meta.dependencies:
            if dep.identity in seen:
                continue
            if dep.identity in local:
                up = local[dep.identity]
                try:
                    if dep.identity in on_remote and same_run(
                            project, read_meta(ws.path(up), with_manifest=False),
                            on_remote[dep.identity]):
                        continue  # the remote has this very run
                except ExperimentError:
                    pass  # broken: reported once, when it is planned below
                todo.append((up, f"upstream of {name}"))
            elif dep.identity in on_remote:
                continue
            else:
                seen.add(dep.identity)
                plan.missing.append((dep.name, f"upstream of {name}, found neither locally nor on the remote"))
    return plan


def push(
    project: Project,
    plan: SyncPlan,
    jobs: int = 4,
    progress: CallbackFactory = NO_PROGRESS_FACTORY,
    force: bool = False,
) -> SyncResult:
    """Publish the planned experiments, in parallel up to ``jobs``.

    Every identity is settled before anything is archived: a run that moves to a free
    identity rewrites the local experiments that name it, and those must be archived after.
    """
    ws, remote = project.workspace, project.remote
    workers = remote.storage.max_workers
    targets: dict[str, Target] = {}

    def claim(name: str) -> int:
        if name in plan.dead:
            end_dead_run(ws.path(name))
        targets[name] = settle(project, ws.path(name))
        return 0

    log.info("push: %d to publish, %d skipped, %d missing upstream", len(plan.items),
             len(plan.skipped), len(plan.missing))
    settled = _run(plan, claim, jobs, workers)
    plan = SyncPlan("push", [n for n in plan.items if n in targets], plan.reasons,
                    plan.skipped, plan.missing)

    def one(name: str) -> Published:
        target = targets[name]
        return transfer(project, target, progress(target.folder.name), force=force)

    result = _run(plan, one, jobs, workers)
    result.failed[:0] = settled.failed
    return result


# -- pull ---------------------------------------------------------------------------------------
def plan_pull(
    project: Project, queries: list[str], all_: bool = False, with_deps: bool = True
) -> SyncPlan:
    """Which remote experiments to download: requested ones plus missing upstream ones."""
    ws, remote = project.workspace, project.remote
    local = ws.names()
    on_remote = remote.experiments()
    plan = SyncPlan("pull")
    todo: list[tuple[RemoteExperiment, str]] = []
    if all_:
        todo += [(e, "not local") for i, e in on_remote.items() if i not in local]
    for query in queries:
        name = ws.resolve(query, [e.name for e in on_remote.values()])
        exp = remote.get(name)
        if name[:IDENTITY_LEN] in local:
            here = local[name[:IDENTITY_LEN]]
            mine = read_meta(ws.path(here), with_manifest=False)
            if exp is not None and mine.run_id and remote.run_id(exp) not in (None, mine.run_id):
                plan.skipped.append((here, (
                    f"a different run holds this identity here; 'resutil push {here}' moves "
                    "it to a free identity, then pull again")))
                continue
            plan.skipped.append((here, "already local"))
            if exp is None or not with_deps:
                continue
            todo_deps = mine.dependencies
            _queue_deps(todo_deps, name, local, on_remote, todo, plan)
            continue
        if exp is None:
            raise ExperimentError(f"{name} is not on the remote {remote.describe()}")
        todo.append((exp, "requested"))
    seen: set[str] = set()
    while todo:
        exp, reason = todo.pop(0)
        if exp.identity in seen:
            continue
        seen.add(exp.identity)
        plan.items.append(exp.name)
        plan.reasons[exp.name] = reason
        if with_deps:
            try:
                deps = remote.meta(exp).dependencies
            except ExperimentError as e:
                if reason == "requested":
                    raise
                plan.warnings.append(f"{exp.name} on the remote: {e} (its upstream "
                                     "experiments are not pulled)")
                continue
            _queue_deps(deps, exp.name, local, on_remote, todo, plan)
    return plan


def _queue_deps(deps, name, local, on_remote, todo, plan) -> None:
    for dep in deps:
        if dep.identity in local:
            continue
        if dep.identity in on_remote:
            todo.append((on_remote[dep.identity], f"upstream of {name}"))
        elif all(dep.name != m[0] for m in plan.missing):
            plan.missing.append((dep.name, f"upstream of {name}, not on the remote"))


def pull(
    project: Project,
    plan: SyncPlan,
    jobs: int = 4,
    progress: CallbackFactory = NO_PROGRESS_FACTORY,
) -> SyncResult:
    """Download the planned experiments, each all-or-nothing."""

    def one(name: str) -> int:
        return pull_one(project, project.remote.require(name), progress)

    return _run(plan, one, jobs, project.remote.storage.max_workers)


def pull_one(project: Project, exp: RemoteExperiment, progress: CallbackFactory = NO_PROGRESS_FACTORY) -> int:
    """Download and extract one archive into a scratch folder, check it, move it in place.

    From a cloud storage, files are extracted as the archive arrives (its sidecar records
    what that needs and the hash to check); else the archive is fetched whole first.
    """
    ws, remote = project.workspace, project.remote
    final = ws.path(exp.name)
    target = ws.new_tmp(f"pull-{exp.identity}")  # renamed into place when complete
    try:
        callback = progress(exp.name)
        written = None
        if not remote.storage.writes_in_place and exp.sidecar is not None:
            written = _stream_in(remote, exp, target, callback)
        if written is None:
            if os.listdir(target):  # what a stream that gave up left
                shutil.rmtree(target, ignore_errors=True)
                target.mkdir()
            written = _fetch_and_extract(remote, exp, target, remote.expected_hash(exp), callback)
        if ws.local_name(exp.name):
            return 0  # pulled meanwhile by another process
        os.rename(target, final)
        return written
    except LocalWriteError as e:
        raise _local_write_failed(ws.root, exp.name, e.oserror) from None
    except OSError as e:
        raise _local_write_failed(ws.root, exp.name, e) from None
    finally:
        if os.path.lexists(target):
            shutil.rmtree(target, ignore_errors=True)


def _stream_in(remote: Remote, exp: RemoteExperiment, target: Path, callback: Callback
               ) -> int | None:
    """Extract while downloading; None when the sidecar lacks what that needs. The sidecar
    is read while the archive's download starts (its facts are needed at the first byte)."""
    with ThreadPoolExecutor(1) as pool:
        facts = pool.submit(remote.stream_facts, exp)

        def fresh_sink() -> StreamExtractor:  # one per attempt: retries start clean
            shutil.rmtree(target, ignore_errors=True)
            target.mkdir()
            return StreamExtractor(target, facts.result, exp.archive.name)

        try:
            sink = remote.storage.download_to(remote.archive_folder, exp.archive.name,
                                              fresh_sink, callback)
        except NotStreamable:
            return None
        return sink.finish()


def _fetch_and_extract(remote: Remote, exp: RemoteExperiment, target: Path,
                       expected: str | None, callback: Callback) -> int:
    # A folder storage hands over the archive in place, with no bytes to count: then the
    # extraction is the transfer the progress shows.
    in_place = remote.storage.writes_in_place
    with remote.storage.fetched(remote.archive_folder, exp.archive.name, callback) as zpath:
        progress = callback if in_place else NO_PROGRESS
        if exp.archive.size < SMALL_ARCHIVE:  # a thread would cost more than it saves
            written = extract_archive(zpath, target, progress)
            actual = hash_file(zpath) if expected else None
        else:
            with ThreadPoolExecutor(1) as pool:  # hash on the second core while extracting
                hashing = pool.submit(hash_file, zpath) if expected else None
                written = extract_archive(zpath, target, progress)
                actual = hashing.result() if hashing else None
    if expected and actual != expected:
        raise hash_mismatch(exp.archive.name)
    return written


def _local_write_failed(root: Path, name: str, e: OSError) -> ResutilError:
    if e.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
        return ResutilError(
            f"no space left in {root} while pulling {name}; nothing was kept - free "
            "some space and pull again"
        )
    # A file system refusal (name too long, permissions, I/O error) is not a bug.
    where = f" ({os.path.basename(str(e.filename))})" if e.filename else ""
    return ResutilError(f"cannot pull {name} into {root}: {e.strerror or e}{where}; nothing was kept")


# -- shared -------------------------------------------------------------------------------------
def _run(plan: SyncPlan, one: Callable[[str], int | Published], jobs: int, max_workers: int
         ) -> SyncResult:
    result = SyncResult(skipped=list(plan.skipped), missing=list(plan.missing))
    workers = max(1, min(jobs, max_workers, len(plan.items) or 1))
    order = {n: i for i, n in enumerate(plan.items)}
    done: list[tuple[str, str]] = []  # (planned name, name now)
    with ThreadPoolExecutor(workers) as pool:
        futures = {pool.submit(one, name): name for name in plan.items}
        for fut in as_completed(futures):
            name = futures[fut]
            try:
                outcome = fut.result()
            except ResutilError as e:
                result.failed.append((name, str(e)))
                continue
            if isinstance(outcome, Published):
                if outcome.moved_from:
                    result.moved.append((outcome.moved_from, outcome.name))
                if outcome.state == UP_TO_DATE:
                    result.up_to_date.append(outcome.name)
                    continue
                result.bytes += outcome.size
                done.append((name, outcome.name))
            else:
                result.bytes += outcome
                done.append((name, name))
    result.transferred = [now for _, now in sorted(done, key=lambda d: order[d[0]])]
    return result


def unpushed(project: Project) -> list[str]:
    """Local experiments the remote does not have, but those made with the remote off
    (RESUTIL_NO_REMOTE: local on purpose) and runs still going on."""
    from .metadata import NO_REMOTE_KEY, read_head

    on_remote = project.remote.experiments()
    ws = project.workspace
    out = []
    for ident, name in ws.names().items():
        if ident in on_remote:
            continue
        try:
            meta = read_head(ws.path(name), keys=(NO_REMOTE_KEY, "status", "process"))
        except ExperimentError:
            meta = None  # broken: push -A reports it
        if meta is not None and (meta.extra.get(NO_REMOTE_KEY) or run_liveness(meta) == "live"):
            continue
        out.append(name)
    return out


def ensure_local(project: Project, names: list[str], progress: CallbackFactory = NO_PROGRESS_FACTORY) -> SyncResult:
    """Pull the named experiments (and their upstream closure) that are not local yet."""
    missing = [n for n in names if not project.workspace.local_name(n)]
    if not missing:
        return SyncResult()
    plan = plan_pull(project, missing)
    result = pull(project, plan, progress=progress)
    if result.failed:
        name, why = result.failed[0]
        raise ResutilError(f"could not pull upstream experiment {name}: {why}")
    return result


def verify_local(folder: Path) -> list[str]:
    """Differences between a local experiment's files and its manifest ([] when intact)."""
    meta = read_meta(folder)
    if meta.manifest is None:
        return ["no manifest recorded (still running, or made by resutil 0.1.x)"]
    return manifest_changes(folder, meta.manifest)


def verify_remote(project: Project, exp: RemoteExperiment, callback: Callback = NO_PROGRESS
                  ) -> tuple[list[str], str | None]:
    """Problems with a remote archive ([] when intact) and a note on what could be checked;
    ``callback`` follows its download (or, for a folder storage, the reading of it)."""
    import zipfile
    import zlib

    remote = project.remote
    expected = remote.expected_hash(exp)
    note = None if expected else "no recorded hash (pushed by resutil 0.1.x?): checked the zip CRCs only"
    problems = []
    side = remote.sidecar(exp)
    if not expected and side is not None and side["archive"].get("name") == exp.archive.name:
        note = None
        problems.append("archive does not match its recorded hash and version (changed after "
                        "it was pushed, or its push was interrupted): push it again")
    in_place = remote.storage.writes_in_place
    with remote.storage.fetched(remote.archive_folder, exp.archive.name, callback) as path:
        if in_place and expected:
            callback.set_total(path.stat().st_size)
        if expected and hash_file(path, callback=callback if in_place else NO_PROGRESS
                                  ) != expected:
            problems.append("archive does not match its recorded hash")
        try:
            with zipfile.ZipFile(path) as zf:
                bad = zf.testzip()
            if bad:
                problems.append(f"corrupt member: {bad}")
        except (zipfile.BadZipFile, OSError) as e:
            problems.append(f"not a readable zip: {e}")
        except (zlib.error, EOFError) as e:  # a damaged deflate stream, not just a bad CRC
            problems.append(f"corrupt compressed data: {e}")
        except Exception as e:  # noqa: BLE001 - untrusted bytes: any failure is damage
            why = " ".join(str(e).split())[:120]
            problems.append(f"damaged zip structure ({type(e).__name__}: {why})")
    return problems, note
