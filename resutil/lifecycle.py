"""The lifecycle of a run inside the Python process that runs its code: what
``@resutil.main()`` does, without a word to the person running the script.

``Run`` makes (or adopts) the experiment folder and claims its identity, records the start,
logs the output, notes which other experiments the code reads, copies the code git does not
track, turns SIGTERM and SIGHUP into ``Terminated``, pushes checkpoints, and records the end
- ``finished``, ``failed`` (any exception, a full disk included; the traceback goes into
resutil-stderr.log) or ``interrupted`` (Ctrl-C, SIGTERM, SIGHUP) - before the final push
through ``publish.publish``. A run killed outright (SIGKILL, power loss) leaves its process
in the metadata, so ``resutil list`` shows it dead and ``resutil push`` pushes it as
interrupted. resutil's own troubles (a log or metadata it cannot write) are reported once
each, never the end of the user's program.

It never prints or asks: it tells a ``RunListener`` (the decorator's terminal front end is
one), returns results and raises ``ResutilError``.

Why not in ``runs``: ``runs`` holds the steps of a run's record that every front end shares,
functions of a folder and its metadata (``new_experiment``, ``record_start``, ``mark_ended``,
``seal``, liveness), used by the CLI and by the front ends whose code runs in another process
(the pipeline runner, ``reproduce``, the Snakemake plugin). This module holds a run lived in
its own process, with process-wide state none of those may pick up: sys.stdout and sys.stderr
replaced, an audit hook, signal handlers.

``resutil-exp.yaml`` is written four times in a plain run - new_experiment's first write, the
start record, the end record, the seal (the manifest, by the final push or locally) - and a
checkpoint adds its push's seal, plus a write when it has something new to record; each
write says why where it is made.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import signal
import sys
import threading
import traceback
from contextlib import AbstractContextManager
from pathlib import Path
from types import FrameType
from typing import Any, TextIO

from .capture import GitState, OutputCapture, ReadObserver, copy_code, imported_code, untracked_code
from .config import remote_off
from .errors import ResutilError
from .liveness import Owner
from .metadata import EXP_FILE, ExpMeta, MetaWriteError, read_meta, upstream_record, write_meta
from .naming import IDENTITY_LEN, check_comment, names_in_argv, parse_name
from .progress import NO_PROGRESS_FACTORY, CallbackFactory
from .project import Project
from .publish import publish
from .runs import ADOPT_ENV, mark_ended, new_experiment, record_start, seal
from .workspace import DEBUG_NAME

_PACKAGE = os.path.dirname(os.path.abspath(__file__)) + os.sep


class RunListener:
    """What a run tells its front end, and what it asks of it. Here each method says nothing
    and answers the default; a front end overrides what it shows or asks."""

    def transfers(self) -> AbstractContextManager[CallbackFactory]:
        """Progress for the transfers of a block (pulling an upstream, a push)."""
        return contextlib.nullcontext(NO_PROGRESS_FACTORY)

    def interactive(self) -> bool:
        """Whether a person can be asked (``comment``, ``delete``)."""
        return False

    def comment(self, project: Project) -> str:
        """The comment of a new experiment when none was given (argument, RESUTIL_COMMENT)."""
        return ""

    def capturing(self, terminal: TextIO | None) -> None:
        """The run's output is logged from now on (``terminal``: the stderr it had, for
        words not meant for the logs), or no longer (None)."""

    def debug_mode(self) -> None:
        """RESUTIL_DEBUG: the results go to a scratch folder, nothing is pushed."""

    def started(self, name: str, uncommitted: int) -> None:
        """The run's folder is made and its start taken down (``uncommitted``: the changed
        tracked files copied into it)."""

    def untracked(self, files: list[str]) -> None:
        """Code the run uses that git does not track was copied into uncommited_files/."""

    def pulling(self, name: str) -> None:
        """An upstream experiment that is not here is being pulled."""

    def upstream(self, name: str, source: str) -> None:
        """A new upstream experiment is recorded, found by ``source`` (argv, declared,
        observed)."""

    def problem(self, text: str) -> None:
        """resutil could not do its part (a log, the metadata, the manifest); the run goes
        on. Told once for each kind of trouble."""

    def checkpoint(self, name: str) -> None:
        """A checkpoint pushes the results so far."""

    def moved(self, identity: str, name: str) -> None:
        """Another run holds ``identity`` on the remote: this run is now ``name``."""

    def pushed(self, name: str, where: str) -> None:
        """The final push is done (``where``: the remote, described)."""

    def others_unpushed(self, count: int) -> None:
        """After the final push: ``count`` other experiments here are not pushed yet."""

    def push_failed(self, name: str, reason: str) -> None:
        """The push failed; the experiment is complete locally, to be pushed later."""

    def push_interrupted(self, name: str, status: str) -> None:
        """A Ctrl-C stopped the final push; the experiment is kept locally as ``status``."""

    def ended(self, name: str, status: str, what: str) -> None:
        """The run's code ended abnormally (``what``), so the run is marked ``status``."""

    def delete(self, name: str, status: str) -> bool:
        """Whether to delete the folder of a failed or interrupted run (default: keep it)."""
        return False

    def deleted(self, name: str) -> None:
        """The folder of the run was deleted, as ``delete`` asked."""

    def cut_short(self, name: str, status: str) -> None:
        """A Ctrl-C or a signal came while the run ended: it is on record as ``status``,
        kept locally and not pushed."""

    def done(self, folder: Path) -> None:
        """The run finished and is pushed (or sealed locally)."""


class Terminated(BaseException):
    """SIGTERM or SIGHUP arrived while the run's code ran: unwinds it like Ctrl-C does."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


class Signals:
    """SIGTERM and SIGHUP (a scheduler's, or a closed terminal's, "stop now") end the run
    as ``interrupted`` within the grace period before SIGKILL.

    Installed for the run only, then the previous handlers come back. A signal the program
    ignores (nohup) stays ignored; a handler of its own still runs and decides. With the
    default handler, the process ends by the signal once the run is recorded and pushed,
    so a scheduler sees what it expects.
    """

    NAMES = ("SIGTERM", "SIGHUP")

    def __init__(self) -> None:
        self.received: int | None = None
        self.ending = False  # recording the end: a signal waits for that to be done
        self.prompting = False  # ...unless a person is being asked something
        self._previous: dict[int, Any] = {}
        self._defaults: set[int] = set()  # signals the program left to their default action

    def install(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return  # only the main thread may set handlers (and receives signals)
        for name in self.NAMES:
            signum = getattr(signal, name, None)
            if signum is None:
                continue
            previous = signal.getsignal(signum)
            if previous in (signal.SIG_IGN, None):
                continue
            self._previous[signum] = previous
            if previous is signal.SIG_DFL:
                self._defaults.add(signum)
            signal.signal(signum, self._handle)

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        first = self.received is None
        if first:
            self.received = signum
        if self.ending and not self.prompting:
            return
        previous = self._previous.get(signum)
        if callable(previous):
            previous(signum, frame)
        elif first or self.prompting:
            raise Terminated(signum)

    def default_for(self, signum: int) -> bool:
        """Whether the program left ``signum`` to its default action (end the process)."""
        return signum in self._defaults

    def restore(self) -> None:
        for signum, previous in self._previous.items():
            with contextlib.suppress(ValueError, OSError, TypeError):
                signal.signal(signum, previous)
        self._previous.clear()


def die_by(signum: int) -> None:
    """End the process as the signal's default action would, once resutil is done."""
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    signal.signal(signum, signal.SIG_DFL)
    os.kill(os.getpid(), signum)
    raise SystemExit(128 + signum)  # only if the signal is blocked in this process


def judge(outcome: BaseException | None, signum: int | None = None) -> tuple[str, str | None]:
    """(status, what happened) for how the run's code ended: ``outcome`` is what it raised
    (None: it returned), ``signum`` the SIGTERM or SIGHUP that stopped it."""
    if signum is not None:
        return "interrupted", f"Stopped by {signal.Signals(signum).name}"
    if outcome is None:
        return "finished", None
    if isinstance(outcome, KeyboardInterrupt):
        return "interrupted", "Interrupted (Ctrl-C)"
    if isinstance(outcome, SystemExit):
        if outcome.code in (0, None):  # sys.exit() / sys.exit(0): a normal end
            return "finished", None
        return "failed", f"exit code {outcome.code}"
    return "failed", f"{type(outcome).__name__}: {outcome}"


class Run:
    """One experiment run by this process's own code: start, checkpoints, end."""

    def __init__(self, listener: RunListener | None = None, comment: str | None = None,
                 project: Project | None = None) -> None:
        self.listener = listener or RunListener()
        self.project = project or Project.load()
        self.requested_comment = comment
        self.debug = bool(os.environ.get("RESUTIL_DEBUG"))
        self.adopted = bool(os.environ.get(ADOPT_ENV)) and not self.debug
        self.use_remote = not (remote_off() or self.debug or self.adopted)
        self.folder: Path = Path()
        self.meta = ExpMeta()
        self.signals = Signals()
        self.push_interrupted = False  # a Ctrl-C stopped the final push
        self.recorded = False  # the end (status, end time) is written
        self._output: OutputCapture | None = None
        self._observer: ReadObserver | None = None
        self._created = False  # this run made its folder (so may remove it)
        self._reserve: Path | None = None
        self._warned: set[str] = set()
        self._git: GitState | None = None
        self._code_seen: set[Path] = set()  # the script and modules checked for git

    # -- start --------------------------------------------------------------------------------
    def start(self) -> None:
        """Make (or adopt) the folder, record the start, log the output, watch the reads.
        A run that cannot start leaves no folder behind."""
        try:
            self._start()
        except BaseException as e:
            # A run that could not start (e.g. an upstream experiment is nowhere) leaves no
            # half-made experiment folder behind.
            self._stop_watching()
            self._release_reserve()
            if self._created and self.folder.is_dir():
                shutil.rmtree(self.folder, ignore_errors=True)
            if isinstance(e, OSError):
                raise _cannot_start(self.project.workspace.root, e) from None
            raise

    def _start(self) -> None:
        ws = self.project.workspace
        if self.adopted:
            self.folder = Path(os.environ[ADOPT_ENV]).resolve()
            if not self.folder.is_dir() or not parse_name(self.folder.name):
                raise ResutilError(f"{ADOPT_ENV}={self.folder} is not an experiment folder")
            self.meta = read_meta(self.folder, with_manifest=False)
        elif self.debug:
            self.folder = ws.path(DEBUG_NAME)
            shutil.rmtree(self.folder, ignore_errors=True)
            self.folder.mkdir(parents=True)
            self.listener.debug_mode()
            self.meta = ExpMeta(name=self.folder.name)
        else:
            # new_experiment writes the first record: 'running', with this process.
            self.folder, self.meta = new_experiment(self.project, self._comment(),
                                                    claim=self.use_remote)
            self._created = True
        meta = self.meta
        meta.status = "running"
        meta.process = Owner.current()
        # Nothing is written yet: a new folder is on record as running with this process
        # already; an adopted one as running by the live process that made it for this run;
        # a debug folder is scratch. The start record below is the next write.
        self._code_seen = set(imported_code())
        self._git = record_start(self.project, self.folder, meta, " ".join(sys.argv),
                                 argv=list(sys.argv), code_files=self._code_seen)
        self.listener.started(self.folder.name, len(meta.uncommitted_files))
        self._untracked(meta.untracked_files)
        own = self.folder.name[:IDENTITY_LEN]
        for name in names_in_argv(sys.argv[1:], self.project.config.results_dir):
            parsed = parse_name(name)
            if parsed and parsed.identity != own:
                self._add_upstream(name, "argv")
        # The start record (command, commit, environment, copied code, the upstreams named
        # in argv): a run killed from here on is pushed with it. Unlike later writes, a
        # failure here stops the run before its code runs.
        write_meta(self.folder, meta)
        self._reserve = ws.reserve(meta.process or Owner.current())
        self._output = OutputCapture(self.folder, lambda text: self._problem(text, text))
        self._output.start()
        self.listener.capturing(self._output.terminal)
        self._observer = ReadObserver(self.project.config.results_dir, self.folder.name)
        self._observer.start()

    def _comment(self) -> str:
        if self.requested_comment is not None:
            return check_comment(self.requested_comment)
        env = os.environ.get("RESUTIL_COMMENT")
        if env is not None:
            return check_comment(env)
        if not self.listener.interactive():
            return ""
        return self.listener.comment(self.project)

    def _add_upstream(self, name: str, source: str) -> Path:
        ws = self.project.workspace
        local = ws.local_name(name)
        if local is None and not remote_off():
            from .sync import ensure_local

            self.listener.pulling(name)
            with self.listener.transfers() as progress:
                ensure_local(self.project, [name], progress)
            local = ws.local_name(name)
        if local is None:
            raise ResutilError(f"upstream experiment {name} is not in {ws.root} "
                               "(and RESUTIL_NO_REMOTE is set)")
        if self.meta.add_dependency(local, source, **upstream_record(ws.path(local))):
            self.listener.upstream(local, source)
        return ws.path(local)

    def declare(self, name: str) -> Path:
        """Record an upstream experiment (name or unique prefix), pulled when it is not
        local; returns its folder."""
        full = self.project.resolve(name)
        path = self._add_upstream(full, "declared")
        # A declared upstream is on record at once: a run killed later is pushed naming it.
        self._save()
        return path

    # -- checkpoint / end ----------------------------------------------------------------------
    def checkpoint(self) -> None:
        """Push what the folder holds so far (status stays 'running')."""
        self._collect_observed()
        # The upstreams observed so far go on record (nothing new: nothing written): a
        # checkpoint's archive is made from the metadata on disk, and a run killed later is
        # pushed with it.
        self._save()
        if self.use_remote:
            self.listener.checkpoint(self.folder.name)
            self._push(final=False)

    def end(self, outcome: BaseException | None) -> bool:
        """Record how the run's code ended (``outcome``: what it raised, None when it
        returned), let the listener delete a failed or interrupted run, else finish it.
        True when a Ctrl-C cut this short: the run is then on record and kept locally, but
        not pushed."""
        status, what = judge(outcome, self.signals.received)
        name = self.folder.name
        if what:
            self.listener.ended(name, status, what)
        failure = outcome if status == "failed" and not isinstance(outcome, SystemExit) else None
        try:
            self.record_end(status, failure)
            if (what and self.signals.received is None and self.listener.interactive()
                    and not self.adopted and name != DEBUG_NAME):
                self.signals.prompting = True
                try:
                    delete = self.listener.delete(name, status)
                finally:
                    self.signals.prompting = False
                if delete:
                    self.abandon()
                    return False
            self.finish(status)
        except (KeyboardInterrupt, EOFError, Terminated):
            if not self.recorded:  # the Ctrl-C came before the end was written
                with contextlib.suppress(KeyboardInterrupt):
                    self.record_end(status)
            self.listener.cut_short(name, status)
            return True
        if status == "finished" and not self.push_interrupted:
            self.listener.done(self.folder)
        return self.push_interrupted

    def die_if_signalled(self) -> None:
        """End the process by the SIGTERM or SIGHUP that stopped the run, when the program
        left that signal to its default action (a scheduler sees what it expects)."""
        signum = self.signals.received
        if signum is not None and self.signals.default_for(signum):
            die_by(signum)

    def record_end(self, status: str, failure: BaseException | None = None) -> None:
        """Stop watching the run and write how it ended (and, for a failure, the traceback
        into resutil-stderr.log); quick, so a second Ctrl-C rarely finds it half done."""
        self._stop_watching()
        self._release_reserve()  # room for the record on a disk the program filled
        self._copy_late_code()
        if failure is not None and self._output is not None:
            tb = failure.__traceback__
            while tb is not None and tb.tb_frame.f_code.co_filename.startswith(_PACKAGE):
                tb = tb.tb_next  # start at the user's code
            text = "".join(traceback.format_exception(type(failure), failure, tb))
            self._output.append_stderr_log(text)
        mark_ended(self.meta, status)
        if self.folder.exists():
            # The end record, before the slow part (a question, the manifest, the push): a
            # run killed or stopped then is on record as it ended, not as a dead one.
            self._save()
        self.recorded = True

    def finish(self, status: str) -> None:
        """Record the end (if not done yet) and push, or write the manifest locally."""
        if not self.recorded:
            self.record_end(status)
        if self.use_remote and self.folder.exists():
            self._push(final=True)  # its seal (the manifest) is written while it archives
        elif self.folder.exists():
            try:
                seal(self.folder, self.meta)  # the seal: the run's files as it ended
            except MetaWriteError as e:
                self._meta_problem(e)
            except OSError as e:
                self._problem("manifest", f"cannot list the files of {self.folder.name} "
                                          f"({e.strerror or e})")

    def abandon(self) -> None:
        """Remove the folder of a failed run (only when the user asked for it)."""
        self.project.workspace.remove(self.folder.name)
        self.listener.deleted(self.folder.name)

    # -- what a run does on the way ------------------------------------------------------------
    def _copy_late_code(self) -> None:
        """Copy the untracked project modules the run imported after it started."""
        new = set(imported_code()) - self._code_seen
        if not new or self._git is None or self._git.root is None or not self.folder.is_dir():
            return
        self._code_seen |= new
        exclude = [*self.project.key_files(), self.project.config.results_dir]
        try:
            rels = [r for r in untracked_code(self._git, new) if r not in self.meta.untracked_files]
            copied = copy_code(self._git, rels, self.folder, exclude)
        except OSError as e:
            self._problem("code", f"cannot copy untracked code into {self.folder.name} "
                                  f"({e.strerror or e})")
            return
        if copied:
            self.meta.untracked_files = sorted({*self.meta.untracked_files, *copied})
            self._untracked(copied)

    def _untracked(self, files: list[str]) -> None:
        if files:
            self.listener.untracked(files)

    def _stop_watching(self) -> None:
        if self._observer:
            self._collect_observed()
            self._observer.stop()
            self._observer = None
        if self._output:
            self._output.stop()
            self.listener.capturing(None)

    def _release_reserve(self) -> None:
        if self._reserve is not None:
            with contextlib.suppress(OSError):
                self._reserve.unlink(missing_ok=True)
            self._reserve = None

    def _save(self) -> bool:
        """Write the metadata unless the file holds it already; a failure is a problem
        told once, never the end of the run."""
        try:
            write_meta(self.folder, self.meta, unless_same=True)
            return True
        except OSError as e:
            self._meta_problem(e)
            return False

    def _meta_problem(self, e: OSError) -> None:
        self._problem(EXP_FILE, f"cannot write {EXP_FILE} of {self.folder.name} "
                                f"({e.strerror or e}); its record may be out of date")

    def _problem(self, key: str, text: str) -> None:
        if key not in self._warned:
            self._warned.add(key)
            self.listener.problem(text)

    def _collect_observed(self) -> None:
        if not self._observer:
            return
        for name in list(self._observer.seen):
            record = upstream_record(self.project.workspace.path(name))
            if self.meta.add_dependency(name, "observed", **record):
                self.listener.upstream(name, "observed")

    def _push(self, final: bool) -> None:
        from .sync import unpushed

        name = self.folder.name
        try:
            with self.listener.transfers() as bars:
                done = publish(self.project, self.folder, bars(self.folder.name),
                               checkpoint=not final)
            if done.moved_from:
                self.folder = self.project.workspace.path(done.name)
                self.listener.moved(done.moved_from[:IDENTITY_LEN], done.name)
            if final:
                self.listener.pushed(self.folder.name, self.project.remote.describe())
                others = [n for n in unpushed(self.project) if n != self.folder.name]
                if others:
                    self.listener.others_unpushed(len(others))
        except (ResutilError, OSError) as e:
            # Offline-first: the run is complete locally and can be pushed later.
            if self.folder.exists():
                with contextlib.suppress(ResutilError, OSError):
                    self.meta = read_meta(self.folder, with_manifest=False)
            what = e if isinstance(e, ResutilError) else (e.strerror or e)
            self.listener.push_failed(name, str(what))
        except KeyboardInterrupt:
            if not final:
                raise  # a Ctrl-C during a checkpoint interrupts the run
            self.push_interrupted = True
            self.listener.push_interrupted(name, self.meta.status)


def _cannot_start(root: Path, e: OSError) -> ResutilError:
    if e.errno in (errno.ENOSPC, errno.EDQUOT):
        return ResutilError(f"no space left in {root} to record the experiment, so the "
                            "script did not run - free some space and run it again")
    where = f" ({os.path.basename(str(e.filename))})" if e.filename else ""
    return ResutilError(f"cannot record the experiment in {root}: {e.strerror or e}{where}; "
                        "the script did not run")
