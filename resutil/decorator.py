"""``@resutil.main()`` and ``resutil.experiment()``: the whole integration for a script.

Like the CLI this is a front end (it talks to the person running the script, on stderr),
built on the workflow modules: workspace, capture, metadata, sync.

Every run ends on record, however it ends: ``finished``, ``failed`` (any exception, a
full disk included; the traceback goes into resutil-stderr.log) or ``interrupted``
(Ctrl-C, SIGTERM, SIGHUP), then pushed. A run killed outright (SIGKILL, power loss)
leaves its process in the metadata, so ``resutil list`` shows it dead and ``resutil
push`` pushes it as interrupted. resutil's own troubles (a log or metadata it cannot
write) become one warning each, never the end of the user's program.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import os
import shutil
import signal
import sys
import threading
import traceback
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path, PurePath
from types import FrameType
from typing import Any, Callable, Iterator, TypeVar

import yaml

from . import ui
from .capture import (
    GitState, OutputCapture, ReadObserver, copy_code, imported_code, untracked_code,
)
from .config import remote_off
from .runs import new_experiment, record_start
from .errors import ResutilError
from .liveness import Owner
from .metadata import EXP_FILE, ExpMeta, compute_manifest, read_meta, upstream_record, write_meta
from .naming import IDENTITY_LEN, check_comment, comment_problem, names_in_argv, parse_name
from .project import Project
from .publish import publish
from .workspace import DEBUG_NAME

F = TypeVar("F", bound=Callable[..., Any])
ADOPT_ENV = "RESUTIL_EXPERIMENT_DIR"  # set by `resutil pipeline run` for its steps


def _flag(name: str) -> bool:
    return bool(os.environ.get(name))


class ExDir(str):
    """The experiment folder: a ``str`` holding its absolute path, as resutil 0.1.x and 0.2.x
    gave it (``ex_dir + "/x"``, ``os.path.join(ex_dir, "x")``, f-strings, ``json.dump``),
    that also answers ``pathlib.Path``'s API (``ex_dir / "x"`` is a Path; ``.mkdir()``,
    ``.glob()``, ``.name``, ``.parent`` ... are the Path's).

    Where the two differ, ``str`` wins: ``ex_dir.replace(a, b)`` replaces text (use
    ``ex_dir.path.replace(target)`` to move it) and ``isinstance(ex_dir, Path)`` is False
    (``ex_dir.path`` is the Path). It equals both its text and its Path.
    """

    __slots__ = ()

    def __new__(cls, path: str | os.PathLike[str]) -> ExDir:
        return super().__new__(cls, os.fspath(path))

    @property
    def path(self) -> Path:
        """The folder as a ``pathlib.Path``."""
        return Path(str(self))

    def __truediv__(self, other: str | os.PathLike[str]) -> Path:
        return self.path / other

    def __rtruediv__(self, other: str | os.PathLike[str]) -> Path:
        return Path(other) / self.path

    def __fspath__(self) -> str:
        return str(self)

    def __str__(self) -> str:
        return str.__str__(self)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, PurePath):
            return self.path == other
        return str.__eq__(self, other)

    def __ne__(self, other: object) -> bool:
        return not self == other

    __hash__ = str.__hash__

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        return getattr(self.path, name)

    def __dir__(self) -> list[str]:
        return sorted(set(super().__dir__()) | set(dir(Path)))


# yaml.safe_dump({"out": params.ex_dir}) writes the path as text, as it did for 0.1.x's str.
for _representer in (yaml.representer.SafeRepresenter, yaml.representer.Representer):
    _representer.add_representer(ExDir, yaml.representer.SafeRepresenter.represent_str)


class Params:
    """What the decorated function receives as its first argument."""

    def __init__(self, run: Run) -> None:
        self._run = run

    @property
    def ex_dir(self) -> ExDir:
        """The experiment folder (absolute): write results here. A ``str`` that is also
        usable as a ``Path`` (see ``ExDir``)."""
        return ExDir(self._run.folder)

    @property
    def ex_name(self) -> str:
        return self._run.folder.name

    @property
    def comment(self) -> str:
        return self._run.meta.comment

    def save_checkpoint(self) -> None:
        """Push what the folder holds so far (status stays 'running')."""
        self._run.checkpoint()

    def upstream(self, name: str) -> Path:
        """Declare an upstream experiment (name or unique prefix) and return its folder.

        It is pulled first when it is not local.
        """
        return self._run.declare(name)

    def __fspath__(self) -> str:
        return str(self.ex_dir)

    def __repr__(self) -> str:
        return f"Params(ex_dir={str(self.ex_dir)!r})"


class Terminated(BaseException):
    """SIGTERM or SIGHUP arrived while the run's code ran: unwinds it like Ctrl-C does."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


class _Signals:
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


def _die_by(signum: int) -> None:
    """End the process as the signal's default action would, once resutil is done."""
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    signal.signal(signum, signal.SIG_DFL)
    os.kill(os.getpid(), signum)
    raise SystemExit(128 + signum)  # only if the signal is blocked in this process


_previous_excepthook = sys.excepthook


def _told(exc: BaseException) -> BaseException:
    """Mark ``exc`` as already explained in one line: if nothing catches it, the program
    ends as it would (a KeyboardInterrupt still ends it by SIGINT), but with no traceback."""
    global _previous_excepthook
    exc._resutil_told = True  # type: ignore[attr-defined]
    if sys.excepthook is not _excepthook:
        _previous_excepthook = sys.excepthook
        sys.excepthook = _excepthook
    return exc


def _excepthook(kind: type[BaseException], value: BaseException, tb: Any) -> None:
    if not getattr(value, "_resutil_told", False):
        _previous_excepthook(kind, value, tb)


class Run:
    """The lifecycle of one experiment: start, checkpoint, finish."""

    def __init__(self, comment: str | None = None, project: Project | None = None) -> None:
        self.project = project or Project.load()
        self.requested_comment = comment
        self.debug = _flag("RESUTIL_DEBUG")
        self.adopted = bool(os.environ.get(ADOPT_ENV)) and not self.debug
        self.use_remote = not (remote_off() or self.debug or self.adopted)
        self.folder: Path = Path()
        self.meta = ExpMeta()
        self.signals = _Signals()
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
    def start(self) -> Params:
        ui.setup_logging()
        try:
            return self._start()
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

    def _start(self) -> Params:
        ws = self.project.workspace
        if self.adopted:
            self.folder = Path(os.environ[ADOPT_ENV]).resolve()
            if not self.folder.is_dir() or not parse_name(self.folder.name):
                raise ResutilError(f"{ADOPT_ENV}={self.folder} is not an experiment folder")
            self.meta = read_meta(self.folder, with_manifest=False)
        else:
            comment = "" if self.debug else self._comment()
            if self.debug:
                self.folder = ws.path(DEBUG_NAME)
                shutil.rmtree(self.folder, ignore_errors=True)
                self.folder.mkdir(parents=True)
                ui.info("Debug mode (RESUTIL_DEBUG): results go to a scratch folder, nothing is pushed")
                self.meta = ExpMeta(name=self.folder.name)
            else:
                self.folder, self.meta = new_experiment(self.project, comment,
                                                        claim=self.use_remote)
                self._created = True
        meta = self.meta
        meta.status = "running"
        meta.process = Owner.current()  # from the first write on, a killed run shows as dead
        write_meta(self.folder, meta)  # marks the folder 'running' at once (push -A skips it)
        self._code_seen = set(imported_code())
        self._git = record_start(self.project, self.folder, meta, " ".join(sys.argv),
                                 argv=list(sys.argv), code_files=self._code_seen)
        ui.info(f"Experiment [bold]{ui.esc(self.folder.name)}[/bold]")
        if meta.uncommitted_files:
            ui.info(f"  {len(meta.uncommitted_files)} uncommitted file(s) copied to uncommited_files/")
        _warn_untracked(meta.untracked_files)
        for name in names_in_argv(sys.argv[1:], self.project.config.results_dir):
            if parse_name(name) and parse_name(name).identity != self.folder.name[:IDENTITY_LEN]:  # type: ignore[union-attr]
                self._add_upstream(name, "argv")
        write_meta(self.folder, meta)
        self._reserve = ws.reserve(meta.process or Owner.current())
        self._output = OutputCapture(self.folder, lambda text: self._problem(text, text))
        self._output.start()
        ui.send_messages_to(self._output.terminal)  # resutil's words: not into the logs
        self._observer = ReadObserver(self.project.config.results_dir, self.folder.name)
        self._observer.start()
        return Params(self)

    def _comment(self) -> str:
        if self.requested_comment is not None:
            return check_comment(self.requested_comment)
        env = os.environ.get("RESUTIL_COMMENT")
        if env is not None:
            return check_comment(env)
        if not ui.interactive():
            return ""
        past = [p.comment for n in self.project.workspace.names().values() if (p := parse_name(n)) and p.comment]
        try:
            return ui.ask_comment(past, comment_problem)
        except EOFError:
            raise ResutilError(
                "no comment entered (Ctrl-D): nothing was run - run the script again, or set "
                "RESUTIL_COMMENT to skip the prompt"
            ) from None

    def _add_upstream(self, name: str, source: str) -> Path:
        ws = self.project.workspace
        local = ws.local_name(name)
        if local is None and not remote_off():
            from .sync import ensure_local

            ui.info(f"  pulling upstream experiment {ui.esc(name)}")
            with ui.transfers() as progress:
                ensure_local(self.project, [name], progress)
            local = ws.local_name(name)
        if local is None:
            raise ResutilError(f"upstream experiment {name} is not in {ws.root} (and RESUTIL_NO_REMOTE is set)")
        if self.meta.add_dependency(local, source, **upstream_record(ws.path(local))):
            ui.info(f"  upstream ({source}): {ui.esc(local)}")
        return ws.path(local)

    def declare(self, name: str) -> Path:
        full = self.project.resolve(name)
        path = self._add_upstream(full, "declared")
        self._save()
        return path

    # -- checkpoint / finish -------------------------------------------------------------------
    def checkpoint(self) -> None:
        self._collect_observed()
        self._save()
        if self.use_remote:
            ui.info("Checkpoint: pushing the results so far")
            self._push(final=False)

    def record_end(self, status: str, failure: BaseException | None = None) -> None:
        """Stop watching the run and write how it ended (and, for a failure, the traceback
        into resutil-stderr.log); quick, so a second Ctrl-C rarely finds it half done."""
        self._stop_watching()
        self._release_reserve()  # room for the record on a disk the program filled
        self._copy_late_code()
        if failure is not None and self._output is not None:
            tb = failure.__traceback__
            while tb is not None and tb.tb_frame.f_code.co_filename == __file__:
                tb = tb.tb_next  # start at the user's code
            text = "".join(traceback.format_exception(type(failure), failure, tb))
            self._output.append_stderr_log(text)
        self.meta.status = status
        self.meta.ended_at = datetime.now().astimezone().isoformat(timespec="seconds")
        if self.folder.exists():
            self._save()
        self.recorded = True

    def finish(self, status: str) -> None:
        """Record the end (if not done yet) and push, or write the manifest locally."""
        if not self.recorded:
            self.record_end(status)
        if self.use_remote and self.folder.exists():
            self._push(final=True)
        elif self.folder.exists():
            try:
                self.meta.manifest = compute_manifest(self.folder)
            except OSError as e:
                self._problem("manifest", f"cannot list the files of {self.folder.name} ({e.strerror or e})")
            self._save()

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
            _warn_untracked(copied)

    def _stop_watching(self) -> None:
        if self._observer:
            self._collect_observed()
            self._observer.stop()
            self._observer = None
        if self._output:
            self._output.stop()
            ui.send_messages_to(None)

    def _release_reserve(self) -> None:
        if self._reserve is not None:
            with contextlib.suppress(OSError):
                self._reserve.unlink(missing_ok=True)
            self._reserve = None

    def _save(self) -> bool:
        """Write the metadata; a failure is a warning (once), never the end of the run."""
        try:
            write_meta(self.folder, self.meta)
            return True
        except OSError as e:
            self._problem(EXP_FILE, f"cannot write {EXP_FILE} of {self.folder.name} "
                                    f"({e.strerror or e}); its record may be out of date")
            return False

    def _problem(self, key: str, text: str) -> None:
        if key not in self._warned:
            self._warned.add(key)
            ui.warn(text)

    def _collect_observed(self) -> None:
        if not self._observer:
            return
        for name in list(self._observer.seen):
            record = upstream_record(self.project.workspace.path(name))
            if self.meta.add_dependency(name, "observed", **record):
                ui.info(f"  upstream (observed read): {ui.esc(name)}")

    def _push(self, final: bool) -> None:
        from .sync import unpushed

        later = f"run 'resutil push {self.folder.name}' later"
        try:
            with ui.transfers() as bars:
                done = publish(self.project, self.folder, bars(self.folder.name),
                               checkpoint=not final)
            if done.moved_from:
                self.folder = self.project.workspace.path(done.name)
                ui.warn(f"another run holds {done.moved_from[:IDENTITY_LEN]} on the remote: "
                        f"this run moved to {done.name}")
            if final:
                ui.info(f"Pushed {ui.esc(self.folder.name)} to {ui.esc(self.project.remote.describe())}")
                others = [n for n in unpushed(self.project) if n != self.folder.name]
                if others:
                    ui.info(f"{len(others)} other experiment(s) are not pushed yet: resutil push -A")
        except (ResutilError, OSError) as e:
            # Offline-first: the run is complete locally and can be pushed later.
            with contextlib.suppress(ResutilError, OSError):
                self.meta = read_meta(self.folder, with_manifest=False) if self.folder.exists() else self.meta
            what = e if isinstance(e, ResutilError) else (e.strerror or e)
            ui.warn(f"push failed: {what}. The experiment is kept locally: {later}")
        except KeyboardInterrupt:
            if not final:
                raise  # a Ctrl-C during a checkpoint interrupts the run
            self.push_interrupted = True
            ui.warn(f"push interrupted (Ctrl-C): {self.folder.name} is kept locally, marked "
                    f"{self.meta.status}; {later}")

    def abandon(self) -> None:
        """Remove the folder of a failed run (only when the user asked for it)."""
        self.project.workspace.remove(self.folder.name)
        ui.info(f"Deleted {ui.esc(self.folder.name)}")


def _warn_untracked(files: list[str]) -> None:
    """One line: code the run uses that git does not track was copied, and why."""
    if not files:
        return
    shown = ", ".join(files[:3]) + (f" and {len(files) - 3} more" if len(files) > 3 else "")
    verb = "is" if len(files) == 1 else "are"
    ui.warn(f"{shown} {verb} not tracked by git: copied into uncommited_files/ so this run "
            "can be reproduced ('git add' to track)")


def _cannot_start(root: Path, e: OSError) -> ResutilError:
    if e.errno in (errno.ENOSPC, errno.EDQUOT):
        return ResutilError(f"no space left in {root} to record the experiment, so the "
                            "script did not run - free some space and run it again")
    where = f" ({os.path.basename(str(e.filename))})" if e.filename else ""
    return ResutilError(f"cannot record the experiment in {root}: {e.strerror or e}{where}; "
                        "the script did not run")


@contextmanager
def experiment(comment: str | None = None, *, verbose: bool = True) -> Iterator[Params]:
    """The decorator's lifecycle as a ``with`` block (for notebooks)."""
    with ui.quiet(not verbose):
        with _experiment(comment) as params:
            yield params


@contextmanager
def _experiment(comment: str | None) -> Iterator[Params]:
    run, params = _begin(comment)
    outcome: BaseException | None = None
    try:
        try:
            yield params
        finally:
            run.signals.ending = True  # from here a SIGTERM waits for the record and push
    except BaseException as e:  # noqa: BLE001 - every way out is recorded, then re-raised
        outcome = e
    try:
        cut_short = _end(run, outcome)
    finally:
        run.signals.restore()
    signum = run.signals.received
    if signum is not None and run.signals.default_for(signum):
        _die_by(signum)
    if isinstance(outcome, KeyboardInterrupt):
        raise _told(outcome)
    if isinstance(outcome, Terminated):  # its handler was replaced meanwhile: exit as if killed
        raise SystemExit(128 + outcome.signum)
    if outcome is not None:
        raise outcome
    if cut_short:
        raise _told(KeyboardInterrupt())


def _begin(comment: str | None) -> tuple[Run, Params]:
    """Make the run and start it; a failure to start is one line and no folder."""
    run: Run | None = None
    try:
        run = Run(comment)
        run.signals.install()
        return run, run.start()
    except ResutilError as e:
        ui.error(str(e))
        failure: BaseException = SystemExit(1)
    except KeyboardInterrupt:
        ui.error("interrupted (Ctrl-C) before the run started: nothing was run or kept")
        failure = _told(KeyboardInterrupt())
    except Terminated as e:
        if run is not None:
            run.signals.restore()
        _die_by(e.signum)
        raise  # not reached
    if run is not None:
        run.signals.restore()
    raise failure from None


def _judge(run: Run, outcome: BaseException | None) -> tuple[str, str | None]:
    """(status, what happened) for how the run's code ended."""
    if run.signals.received is not None:
        return "interrupted", f"Stopped by {signal.Signals(run.signals.received).name}"
    if outcome is None:
        return "finished", None
    if isinstance(outcome, KeyboardInterrupt):
        return "interrupted", "Interrupted (Ctrl-C)"
    if isinstance(outcome, SystemExit):
        if outcome.code in (0, None):  # sys.exit() / sys.exit(0): a normal end
            return "finished", None
        return "failed", f"exit code {outcome.code}"
    return "failed", f"{type(outcome).__name__}: {outcome}"


def _end(run: Run, outcome: BaseException | None) -> bool:
    """Record how the run ended, ask (interactively) whether to keep a failed or
    interrupted one, push it. True when a Ctrl-C cut this short: the run is then on
    record and kept locally, but not pushed."""
    status, what = _judge(run, outcome)
    name = run.folder.name
    if what:
        ui.error(f"{what} - experiment {name} is marked {status}")
    failure = outcome if status == "failed" and not isinstance(outcome, SystemExit) else None
    try:
        run.record_end(status, failure)
        if (what and run.signals.received is None and ui.interactive() and not run.adopted
                and name != DEBUG_NAME):
            run.signals.prompting = True
            try:
                delete = ui.confirm(f"Delete the experiment folder {name}?", default=False)
            finally:
                run.signals.prompting = False
            if delete:
                run.abandon()
                return False
        run.finish(status)
    except (KeyboardInterrupt, EOFError, Terminated):
        if not run.recorded:  # the Ctrl-C came before the end was written
            with contextlib.suppress(KeyboardInterrupt):
                run.record_end(status)
        again = " again" if status == "interrupted" else ""
        ui.error(f"Interrupted{again}: {name} is kept locally, marked {status}; "
                 f"run 'resutil push {name}' later")
        return True
    if status == "finished" and not run.push_interrupted:
        ui.info(f"[green]Done[/green]: {ui.esc(run.folder)}")
    return run.push_interrupted


def main(comment: str | None = None, *, verbose: bool = True) -> Callable[[F], F]:
    """Run the decorated function inside a new experiment folder.

    The function receives a ``Params`` (``ex_dir``, ``ex_name``, ``save_checkpoint()``,
    ``upstream(name)``) as its first argument. ``comment`` skips the prompt; with
    ``verbose=False`` resutil says only what went wrong (warnings, errors), no progress.
    ``@resutil.main(verbose=...)`` and ``@resutil.main(False)`` are resutil 0.1.x's forms.
    """
    if isinstance(comment, bool):  # 0.1.x/0.2.x: main(verbose=True) took it positionally
        comment, verbose = None, comment

    def wrap(func: F) -> F:
        @functools.wraps(func)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            with experiment(comment, verbose=verbose) as params:
                return func(params, *args, **kwargs)

        return wrapper  # type: ignore[return-value]

    if callable(comment):  # used bare: @resutil.main
        func, comment = comment, None
        return wrap(func)  # type: ignore[return-value]
    return wrap
