"""Publication: the one way a local experiment reaches the remote.

Every front end (``resutil push``, the decorator, the pipeline runner, ``reproduce``, the
Snakemake plugin) publishes through ``publish`` (or ``sync.push`` for many at once, which
uses the same two steps):

1. **settle** the identity. Whether the remote copy of an identity is this run is decided by
   run id, never by host and time. A free identity is claimed on the storage with one
   atomic create-if-absent; a run that finds its identity held by another run moves to the
   next free one, locally and remotely, and the local experiments that name it follow.
2. **transfer** the folder. An unchanged experiment is up to date and moves nothing; a
   finished one whose files no longer match its manifest is refused unless forced; the
   archive replaces the old copy only once it is complete (``Remote.store``).

``claim_new`` does step 1 for a brand-new experiment, so a clash is settled before a run
writes anything, whenever the storage is reachable.
"""

from __future__ import annotations

import logging
import os
import threading
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

from .errors import ExperimentError, ResutilError, StorageError
from .metadata import ExpMeta, manifest_changes, read_meta, write_meta
from .naming import IDENTITY_LEN, new_run_id, parse_name
from .progress import NO_PROGRESS, Callback
from .project import Project
from .remote import RemoteExperiment

log = logging.getLogger(__name__)

UP_TO_DATE = "up to date"
PUSHED = "pushed"
RELABELLED = "relabelled"
_moving = threading.Lock()  # moves rewrite other experiments' metadata: one at a time


class ChangedSinceFinished(ExperimentError):
    """A finished experiment's files no longer match its manifest."""


@dataclass
class Target:
    """A local experiment whose identity is settled: the remote copy (if any) is this run."""

    folder: Path
    meta: ExpMeta
    remote: RemoteExperiment | None = None
    moved_from: str | None = None


@dataclass
class Published:
    """What publishing one experiment did."""

    name: str  # its name now (a move gives it a new identity)
    state: str  # PUSHED | UP_TO_DATE | RELABELLED
    size: int = 0  # archive bytes stored
    moved_from: str | None = None


def publish(project: Project, folder: Path, callback: Callback = NO_PROGRESS, *,
            force: bool = False, checkpoint: bool = False) -> Published:
    """Publish one local experiment: settle its identity, then transfer it.

    ``checkpoint``: the run is still going (``save_checkpoint``), so its files may differ
    from an earlier checkpoint's and it is never moved under the running process.
    """
    target = settle(project, folder, movable=not checkpoint)
    return transfer(project, target, callback, force=force, checkpoint=checkpoint)


def ensure_run_id(folder: Path, meta: ExpMeta) -> None:
    """Give an experiment made before run ids (or by 0.1.x) its run id, once."""
    if meta.run_id is None:
        meta.run_id = new_run_id()
        write_meta(folder, meta)


# -- 1. the identity ---------------------------------------------------------------------------
def claim_new(project: Project, folder: Path, meta: ExpMeta) -> Path:
    """Claim a new experiment's identity on the storage; returns its folder (moved when
    another run holds the identity). Offline, the claim waits for the first push."""
    ensure_run_id(folder, meta)
    if project.no_remote:
        return folder
    try:
        return settle(project, folder, meta).folder
    except StorageError as e:
        log.info("could not claim %s on the remote (%s); it is claimed when pushed",
                 folder.name, e)
        return folder


def settle(project: Project, folder: Path, meta: ExpMeta | None = None,
           movable: bool = True) -> Target:
    """Make sure the identity of ``folder`` on the remote is this run's (see module doc)."""
    if meta is None:
        meta = read_meta(folder)
    ensure_run_id(folder, meta)
    assert meta.run_id is not None
    remote = project.remote
    moved_from = None
    while True:
        exp = remote.get(folder.name)
        if exp is not None:
            if same_run(project, meta, exp):
                return Target(folder, meta, exp, moved_from)
            holder = None  # another run's archive (maybe pushed by 0.1.x, without a claim)
        else:
            holder = remote.claim(folder.name[:IDENTITY_LEN], meta.run_id, folder.name)
            if holder == meta.run_id:
                return Target(folder, meta, None, moved_from)
        if not movable:
            raise ExperimentError(
                f"the remote holds another run as {folder.name[:IDENTITY_LEN]}; this running "
                "experiment is moved to a free identity when it ends"
            )
        old = folder.name
        folder = move_to_free_identity(project, folder, meta)
        moved_from = moved_from or old
        log.info("%s: another run holds this identity on the remote; moved to %s",
                    old, folder.name)


def same_run(project: Project, meta: ExpMeta, exp: RemoteExperiment) -> bool:
    """Whether the remote experiment is the run ``meta`` describes (by run id)."""
    theirs = project.remote.meta(exp)
    if theirs.run_id is not None:
        return theirs.run_id == meta.run_id
    if meta.process is not None:
        return False  # made with a run id, which every push of it carries: not this run
    # Pushed before run ids (by 0.1.x or an earlier resutil): the same start and host is
    # this run pushed then; a copy without even those is taken as this run, as before.
    mine = (meta.started_at, (meta.environment or {}).get("host"))
    other = (theirs.started_at, (theirs.environment or {}).get("host"))
    return None in mine or None in other or mine == other


def move_to_free_identity(project: Project, folder: Path, meta: ExpMeta) -> Path:
    """Give a run the next identity free both locally and on the remote, and make the local
    experiments that name it (by its run id, or without one) name its new identity."""
    ws, remote = project.workspace, project.remote
    parsed = parse_name(folder.name)
    if parsed is None:
        raise ExperimentError(f"{folder} is not an experiment folder")
    assert meta.run_id is not None
    with _moving:
        when = parsed.time
        for _ in range(1000):
            when += timedelta(seconds=1)
            new = ws.create(parsed.comment, when)  # an empty folder: free locally
            when = new.time
            if remote.get(new.name) is None and \
                    remote.claim(new.identity, meta.run_id, new.name) == meta.run_id:
                break
            os.rmdir(ws.path(new.name))
        else:
            raise ResutilError(f"could not find a free identity for {folder.name}")
        target = ws.path(new.name)
        os.rename(folder, target)  # replaces the empty folder in one step
        meta.name = new.name
        meta.result_dir = _result_dir(project, target)
        write_meta(target, meta)
        _follow_move(project, parsed.identity, new.name, meta.run_id)
    return target


def _result_dir(project: Project, folder: Path) -> str:
    try:
        return folder.relative_to(project.config.root).as_posix()
    except ValueError:
        return str(folder)


def _follow_move(project: Project, old_identity: str, new_name: str, run_id: str) -> None:
    ws = project.workspace
    for name in ws.names().values():
        folder = ws.path(name)
        try:
            meta = read_meta(folder)
        except ResutilError:
            continue  # a broken folder is reported by the commands that read it
        hit = False
        for dep in meta.dependencies:
            if dep.identity == old_identity and dep.run_id in (None, run_id):
                dep.name, dep.run_id, hit = new_name, run_id, True
        if hit:
            write_meta(folder, meta)


# -- 2. the transfer ---------------------------------------------------------------------------
def transfer(project: Project, target: Target, callback: Callback = NO_PROGRESS, *,
             force: bool = False, checkpoint: bool = False) -> Published:
    """Store a settled experiment unless the remote copy is already it."""
    folder, meta, exp = target.folder, target.meta, target.remote
    name = folder.name
    if meta.manifest is not None and meta.status != "running" and not checkpoint:
        changes = manifest_changes(folder, meta.manifest, quick=True)
        if changes and not force:
            more = f" and {len(changes) - 1} more" if len(changes) > 1 else ""
            raise ChangedSinceFinished(
                f"{name} changed since it was finished ({changes[0]}{more}); see 'resutil "
                f"verify {name}'; 'resutil push --force {name}' publishes it as it is now"
            )
        if not changes and exp is not None and not force:
            state = compare(project, meta, exp)
            if state == UP_TO_DATE:
                log.info("%s is up to date on the remote", name)
                return Published(name, UP_TO_DATE, 0, target.moved_from)
            if state == RELABELLED:
                log.info("%s: same run and files on the remote as %s: relabelling", name, exp.name)
                project.remote.rename(exp, name)
                return Published(name, RELABELLED, 0, target.moved_from)
    info = project.remote.store(folder, callback, replaces=exp)
    return Published(name, PUSHED, info.size, target.moved_from)


def up_to_date(project: Project, folder: Path, meta: ExpMeta, exp: RemoteExperiment) -> bool:
    """Whether a finished local experiment's remote copy is this run with these files and
    this metadata, its files unchanged since (what ``push -A`` skips without a word)."""
    return (meta.manifest is not None and meta.status != "running"
            and compare(project, meta, exp) == UP_TO_DATE
            and not manifest_changes(folder, meta.manifest, quick=True))


def compare(project: Project, meta: ExpMeta, exp: RemoteExperiment) -> str | None:
    """UP_TO_DATE when the remote copy holds these files and this metadata, RELABELLED when
    only the label differs, None when it must be stored again."""
    side = project.remote.paired(exp)
    if side is None or meta.manifest is None:
        return None
    remote_meta: dict[str, Any] = side["meta"]
    if (remote_meta.get("manifest") or {}).get("digest") != meta.manifest.digest:
        return None
    mine = meta.head_dict()
    same = all(remote_meta.get(k) == mine.get(k)
               for k in ("run_id", "status", "ended_at", "dependency", "args"))
    if not same:
        return None
    return UP_TO_DATE if exp.name == meta.name else RELABELLED
