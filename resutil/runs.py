"""A run's record from its first moment to its end: a new experiment folder with its run
id and claimed identity, what it records when it starts and when it ends, its manifest when
it is not pushed, and whether a ``running`` one is still live, so that no run stays
``running`` forever.

Used by every front end that makes experiments (the decorator through ``lifecycle``,
``add``, the pipeline runner, ``reproduce``, the Snakemake plugin) and by the commands that
must not disturb a live run (``comment``, ``rm``, ``push -A``). Functions of a folder and
its metadata only: the run lived inside its own process (output, signals, checkpoints) is
``lifecycle``'s.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterable
from datetime import datetime
from pathlib import Path

from .capture import GitState, copy_changed_files, copy_code, environment, git_state, untracked_code
from .errors import ExperimentError
from .liveness import Owner
from .metadata import NO_REMOTE_KEY, ExpMeta, compute_manifest, iter_files, read_meta, write_meta
from .naming import new_run_id
from .project import Project
from .publish import claim_new

# Set by ``resutil pipeline run`` and ``resutil reproduce`` for the command they run in a
# folder they made: ``@resutil.main()`` and the Snakemake plugin adopt that folder.
ADOPT_ENV = "RESUTIL_EXPERIMENT_DIR"


def now_iso() -> str:
    """The local time with its offset, to the second, as metadata records it."""
    return datetime.now().astimezone().isoformat(timespec="seconds")


def new_experiment(project: Project, comment: str = "", claim: bool = True,
                   status: str = "running", when: datetime | None = None
                   ) -> tuple[Path, ExpMeta]:
    """Make a new experiment folder and its metadata (marked ``status`` at once, so ``push
    -A`` leaves a running one alone), with a new run id. With ``claim`` its identity is
    claimed on the storage when that is reachable; a clash with another run moves the new,
    still empty folder to the next free identity before anything is written into it.
    ``when`` names it by another time than now (a run that began before its folder is made,
    e.g. a Snakemake job whose outputs arrive when it ends)."""
    ws = project.workspace
    folder = ws.path(ws.create(comment, when).name)
    meta = ExpMeta(name=folder.name, comment=comment, status=status, run_id=new_run_id(),
                   process=Owner.current())  # a run killed from here on shows as dead
    if project.no_remote:
        meta.extra[NO_REMOTE_KEY] = True
    try:
        # The run's first write: from its folder's first moment it is on record as
        # ``status`` with its process, so a run killed while it starts shows as dead and
        # ``push -A`` leaves a live one alone.
        write_meta(folder, meta)
    except OSError:  # e.g. a full disk: no half-made experiment left behind
        shutil.rmtree(folder, ignore_errors=True)
        raise
    if claim:
        folder = claim_new(project, folder, meta)
    return folder, meta


def record_start(
    project: Project, folder: Path, meta: ExpMeta, args: str, cwd: Path | None = None,
    code: bool = True, argv: list[str] | None = None, code_files: Iterable[Path] = (),
) -> GitState | None:
    """Fill in what every new experiment records when it starts.

    The start time, the command (``args`` as 0.1.x wrote it, ``argv`` as a list when it is
    one), the folder, the environment and (with ``code``) the git commit, the working
    directory within the work tree, copies of changed tracked files and of the
    ``code_files`` (the script, its modules) that git does not track; key files, results
    and anything git ignores never get copied. Returns the git facts (None without ``code``).
    """
    if meta.run_id is None:
        meta.run_id = new_run_id()
    meta.started_at = now_iso()
    meta.process = Owner.current()
    meta.args = args
    meta.argv = list(argv) if argv is not None else None
    try:
        meta.result_dir = folder.relative_to(project.config.root).as_posix()
    except ValueError:
        meta.result_dir = str(folder)
    meta.environment = environment()
    if code:
        git = git_state(cwd)
        meta.commit_hash = git.commit
        exclude = [*project.key_files(), project.config.results_dir]
        meta.uncommitted_files = copy_changed_files(git, folder, exclude)
        meta.untracked_files = copy_code(git, untracked_code(git, code_files), folder, exclude)
        meta.workdir = None
        if git.root is not None:
            try:
                meta.workdir = (cwd or Path.cwd()).resolve().relative_to(
                    git.root.resolve()).as_posix()
            except (ValueError, OSError):
                pass
        return git
    return None


def mark_ended(meta: ExpMeta, status: str, when: str | None = None) -> None:
    """Fill in how a run ended (finished, failed, interrupted) and when (default: now);
    the caller writes it."""
    meta.status = status
    meta.ended_at = when or now_iso()


def seal(folder: Path, meta: ExpMeta) -> None:
    """Write the manifest (every file's size and hash) of a run that ended and is not
    pushed now; a push seals it while it archives the folder."""
    meta.manifest = compute_manifest(folder)
    write_meta(folder, meta)


# -- runs that are (or were) going on ---------------------------------------------------------
def run_liveness(meta: ExpMeta) -> str | None:
    """For a ``running`` experiment: "live", "dead" (its process is gone: killed, crashed,
    machine rebooted) or "unknown" (another host's, or no process recorded); else None."""
    if meta.status != "running":
        return None
    alive = meta.process.alive() if meta.process else None
    return "unknown" if alive is None else "live" if alive else "dead"


def refuse_live_run(folder: Path, action: str) -> None:
    """Raise if a process on this host is still running the experiment in ``folder``."""
    try:
        meta = read_meta(folder, with_manifest=False)
    except ExperimentError:
        return  # broken metadata names no process (and rm must be able to clear it)
    if run_liveness(meta) == "live":
        raise ExperimentError(
            f"{folder.name} is still running (pid {meta.process.pid}); "  # type: ignore[union-attr]
            f"to {action} it now would break that run - wait for it to end, or use --force"
        )


def end_dead_run(folder: Path) -> ExpMeta:
    """Mark a ``running`` experiment whose process is gone as interrupted; it ended, as far
    as anyone can tell, at its last write. A live or unknown run is left as it is."""
    meta = read_meta(folder, with_manifest=False)
    if run_liveness(meta) != "dead":
        return meta
    last = max((st.st_mtime for _, _, st in iter_files(folder)), default=None)
    mark_ended(meta, "interrupted", datetime.fromtimestamp(last).astimezone().isoformat(
        timespec="seconds") if last is not None else None)
    write_meta(folder, meta)
    return meta
