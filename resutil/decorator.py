"""``@resutil.main()`` and ``resutil.experiment()``: the whole integration for a script.

The terminal front end of a run, as ``cli`` is the CLI's: the API a script sees (``Params``,
``ExDir``), what a run tells the person on stderr, the questions asked at a terminal (the
experiment's comment; whether to keep a failed run's folder), a one-line exit for what was
already explained (the excepthook). The run itself - its folder, records, output, signals,
checkpoints, end and push - is ``lifecycle.Run``, which reports to ``_Terminal`` here.
"""

from __future__ import annotations

import functools
import os
import sys
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path, PurePath
from typing import TYPE_CHECKING, Any, TextIO, TypeVar

import yaml

from . import ui
from .errors import ResutilError
from .lifecycle import Run, RunListener, Terminated, die_by
from .naming import comment_problem, parse_name
from .project import Project
from .runs import ADOPT_ENV

if TYPE_CHECKING:
    from .progress import CallbackFactory

__all__ = ["ADOPT_ENV", "ExDir", "Params", "Terminated", "experiment", "main"]

F = TypeVar("F", bound=Callable[..., Any])


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


class _Terminal(RunListener):
    """What a run reports, said on stderr (rich markup in ``ui.info``; warnings and errors
    as plain text); what it asks, asked at the terminal."""

    def transfers(self) -> AbstractContextManager[CallbackFactory]:
        return ui.transfers()

    def interactive(self) -> bool:
        return ui.interactive()

    def comment(self, project: Project) -> str:
        past = [p.comment for n in project.workspace.names().values()
                if (p := parse_name(n)) and p.comment]
        try:
            return ui.ask_comment(past, comment_problem)
        except EOFError:
            raise ResutilError(
                "no comment entered (Ctrl-D): nothing was run - run the script again, or set "
                "RESUTIL_COMMENT to skip the prompt"
            ) from None

    def capturing(self, terminal: TextIO | None) -> None:
        ui.send_messages_to(terminal)  # resutil's words: not into the logs

    def debug_mode(self) -> None:
        ui.info("Debug mode (RESUTIL_DEBUG): results go to a scratch folder, nothing is pushed")

    def started(self, name: str, uncommitted: int) -> None:
        ui.info(f"Experiment [bold]{ui.esc(name)}[/bold]")
        if uncommitted:
            ui.info(f"  {uncommitted} uncommitted file(s) copied to uncommited_files/")

    def untracked(self, files: list[str]) -> None:
        shown = ", ".join(files[:3]) + (f" and {len(files) - 3} more" if len(files) > 3 else "")
        verb = "is" if len(files) == 1 else "are"
        ui.warn(f"{shown} {verb} not tracked by git: copied into uncommited_files/ so this run "
                "can be reproduced ('git add' to track)")

    def pulling(self, name: str) -> None:
        ui.info(f"  pulling upstream experiment {ui.esc(name)}")

    def upstream(self, name: str, source: str) -> None:
        how = "observed read" if source == "observed" else source
        ui.info(f"  upstream ({how}): {ui.esc(name)}")

    def problem(self, text: str) -> None:
        ui.warn(text)

    def checkpoint(self, name: str) -> None:
        ui.info("Checkpoint: pushing the results so far")

    def moved(self, identity: str, name: str) -> None:
        ui.warn(f"another run holds {identity} on the remote: this run moved to {name}")

    def pushed(self, name: str, where: str) -> None:
        ui.info(f"Pushed {ui.esc(name)} to {ui.esc(where)}")

    def others_unpushed(self, count: int) -> None:
        ui.info(f"{count} other experiment(s) are not pushed yet: resutil push -A")

    def push_failed(self, name: str, reason: str) -> None:
        ui.warn(f"push failed: {reason}. The experiment is kept locally: "
                f"run 'resutil push {name}' later")

    def push_interrupted(self, name: str, status: str) -> None:
        ui.warn(f"push interrupted (Ctrl-C): {name} is kept locally, marked {status}; "
                f"run 'resutil push {name}' later")

    def ended(self, name: str, status: str, what: str) -> None:
        ui.error(f"{what} - experiment {name} is marked {status}")

    def delete(self, name: str, status: str) -> bool:
        return ui.confirm(f"Delete the experiment folder {name}?", default=False)

    def deleted(self, name: str) -> None:
        ui.info(f"Deleted {ui.esc(name)}")

    def cut_short(self, name: str, status: str) -> None:
        again = " again" if status == "interrupted" else ""
        ui.error(f"Interrupted{again}: {name} is kept locally, marked {status}; "
                 f"run 'resutil push {name}' later")

    def done(self, folder: Path) -> None:
        ui.info(f"[green]Done[/green]: {ui.esc(folder)}")


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


@contextmanager
def experiment(comment: str | None = None, *, verbose: bool = True) -> Iterator[Params]:
    """The decorator's lifecycle as a ``with`` block (for notebooks)."""
    with ui.quiet(not verbose):
        with _experiment(comment) as params:
            yield params


@contextmanager
def _experiment(comment: str | None) -> Iterator[Params]:
    run = _begin(comment)
    outcome: BaseException | None = None
    try:
        try:
            yield Params(run)
        finally:
            run.signals.ending = True  # from here a SIGTERM waits for the record and push
    except BaseException as e:  # noqa: BLE001 - every way out is recorded, then re-raised
        outcome = e
    try:
        cut_short = run.end(outcome)
    finally:
        run.signals.restore()
    run.die_if_signalled()
    if isinstance(outcome, KeyboardInterrupt):
        raise _told(outcome)
    if isinstance(outcome, Terminated):  # its handler was replaced meanwhile: exit as if killed
        raise SystemExit(128 + outcome.signum)
    if outcome is not None:
        raise outcome
    if cut_short:
        raise _told(KeyboardInterrupt())


def _begin(comment: str | None) -> Run:
    """Make the run and start it; a failure to start is one line and no folder."""
    run: Run | None = None
    try:
        run = Run(_Terminal(), comment)
        run.signals.install()
        ui.setup_logging()
        run.start()
        return run
    except ResutilError as e:
        ui.error(str(e))
        failure: BaseException = SystemExit(1)
    except KeyboardInterrupt:
        ui.error("interrupted (Ctrl-C) before the run started: nothing was run or kept")
        failure = _told(KeyboardInterrupt())
    except Terminated as e:
        if run is not None:
            run.signals.restore()
        die_by(e.signum)
        raise  # not reached
    if run is not None:
        run.signals.restore()
    raise failure from None


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
