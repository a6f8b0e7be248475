"""``@resutil.main()`` and ``resutil.experiment()``: the whole integration for a script.

Like the CLI this is a front end (it talks to the person running the script, on stderr),
built on the workflow modules: workspace, capture, metadata, sync.
"""

from __future__ import annotations

import functools
import os
import shutil
import sys
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any, Callable, Iterator, TypeVar

from . import ui
from .capture import OutputCapture, ReadObserver
from .experiments import new_experiment, record_start
from .errors import ResutilError
from .metadata import ExpMeta, compute_manifest, read_meta, upstream_record, write_meta
from .naming import IDENTITY_LEN, check_comment, comment_problem, names_in_argv, parse_name
from .project import Project
from .publish import publish
from .workspace import DEBUG_NAME

F = TypeVar("F", bound=Callable[..., Any])
ADOPT_ENV = "RESUTIL_EXPERIMENT_DIR"  # set by `resutil pipeline run` for its steps


def _flag(name: str) -> bool:
    return bool(os.environ.get(name))


class Params:
    """What the decorated function receives as its first argument."""

    def __init__(self, run: Run) -> None:
        self._run = run

    @property
    def ex_dir(self) -> Path:
        """The experiment folder: write results here."""
        return self._run.folder

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


class Run:
    """The lifecycle of one experiment: start, checkpoint, finish."""

    def __init__(self, comment: str | None = None, project: Project | None = None) -> None:
        self.project = project or Project.load()
        self.requested_comment = comment
        self.debug = _flag("RESUTIL_DEBUG")
        self.adopted = bool(os.environ.get(ADOPT_ENV)) and not self.debug
        self.use_remote = not (_flag("RESUTIL_NO_REMOTE") or self.debug or self.adopted)
        self.folder: Path = Path()
        self.meta = ExpMeta()
        self._output: OutputCapture | None = None
        self._observer: ReadObserver | None = None
        self._created = False  # this run made its folder (so may remove it)

    # -- start --------------------------------------------------------------------------------
    def start(self) -> Params:
        ui.setup_logging()
        try:
            return self._start()
        except BaseException:
            # A run that could not start (e.g. an upstream experiment is nowhere) leaves no
            # half-made experiment folder behind.
            if self._created and self.folder.is_dir():
                shutil.rmtree(self.folder, ignore_errors=True)
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
        write_meta(self.folder, meta)  # marks the folder 'running' at once (push -A skips it)
        record_start(self.project, self.folder, meta, " ".join(sys.argv))
        ui.info(f"Experiment [bold]{ui.esc(self.folder.name)}[/bold]")
        if meta.uncommitted_files:
            ui.info(f"  {len(meta.uncommitted_files)} uncommitted file(s) copied to uncommited_files/")
        for name in names_in_argv(sys.argv[1:], self.project.config.results_dir):
            if parse_name(name) and parse_name(name).identity != self.folder.name[:22]:  # type: ignore[union-attr]
                self._add_upstream(name, "argv")
        write_meta(self.folder, meta)
        self._output = OutputCapture(self.folder)
        self._output.start()
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
        return ui.ask_comment(past, comment_problem)

    def _add_upstream(self, name: str, source: str) -> Path:
        ws = self.project.workspace
        local = ws.local_name(name)
        if local is None and not _flag("RESUTIL_NO_REMOTE"):
            from .sync import ensure_local

            ui.info(f"  pulling upstream experiment {ui.esc(name)}")
            ensure_local(self.project, [name])
            local = ws.local_name(name)
        if local is None:
            raise ResutilError(f"upstream experiment {name} is not in {ws.root} (and RESUTIL_NO_REMOTE is set)")
        if self.meta.add_dependency(local, source, **upstream_record(ws.path(local))):
            ui.info(f"  upstream ({source}): {ui.esc(local)}")
        return ws.path(local)

    def declare(self, name: str) -> Path:
        full = self.project.resolve(name)
        path = self._add_upstream(full, "declared")
        write_meta(self.folder, self.meta)
        return path

    # -- checkpoint / finish -------------------------------------------------------------------
    def checkpoint(self) -> None:
        self._collect_observed()
        write_meta(self.folder, self.meta)
        if self.use_remote:
            ui.info("Checkpoint: pushing the results so far")
            self._push(final=False)

    def finish(self, status: str) -> None:
        if self._observer:
            self._collect_observed()
            self._observer.stop()
        if self._output:
            self._output.stop()
        self.meta.status = status
        self.meta.ended_at = datetime.now().astimezone().isoformat(timespec="seconds")
        write_meta(self.folder, self.meta)
        if self.use_remote and self.folder.exists():
            self._push(final=True)
        elif self.folder.exists():
            self.meta.manifest = compute_manifest(self.folder)
            write_meta(self.folder, self.meta)

    def _collect_observed(self) -> None:
        if not self._observer:
            return
        for name in list(self._observer.seen):
            record = upstream_record(self.project.workspace.path(name))
            if self.meta.add_dependency(name, "observed", **record):
                ui.info(f"  upstream (observed read): {ui.esc(name)}")

    def _push(self, final: bool) -> None:
        from .sync import unpushed

        try:
            with ui.RichProgress() as bars:
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
        except ResutilError as e:
            # Offline-first: the run is complete locally and can be pushed later.
            self.meta = read_meta(self.folder, with_manifest=False) if self.folder.exists() else self.meta
            ui.warn(f"push failed: {e}. The experiment is kept locally: run 'resutil push {self.folder.name}' later")

    def abandon(self) -> None:
        """Remove the folder of a failed run (only when the user asked for it)."""
        self.project.workspace.remove(self.folder.name)
        ui.info(f"Deleted {ui.esc(self.folder.name)}")


@contextmanager
def experiment(comment: str | None = None) -> Iterator[Params]:
    """The decorator's lifecycle as a ``with`` block (for notebooks)."""
    try:
        run = Run(comment)
        params = run.start()
    except ResutilError as e:
        ui.error(str(e))
        raise SystemExit(1) from None
    try:
        yield params
    except KeyboardInterrupt:
        _failed(run, "interrupted", "Interrupted")
        raise
    except SystemExit as e:
        if e.code in (0, None):  # sys.exit() / sys.exit(0): a normal end
            _finished(run)
        else:
            _failed(run, "failed", f"exit code {e.code}")
        raise
    except BaseException as e:
        _failed(run, "failed", f"{type(e).__name__}: {e}")
        raise
    else:
        _finished(run)


def _finished(run: Run) -> None:
    run.finish("finished")
    ui.info(f"[green]Done[/green]: {ui.esc(run.folder)}")


def _failed(run: Run, status: str, what: str) -> None:
    ui.error(f"{what} - experiment {run.folder.name} is marked {status}")
    if ui.interactive() and not run.adopted and run.folder.name != DEBUG_NAME:
        if run._output:
            run._output.stop()
        if ui.confirm(f"Delete the experiment folder {run.folder.name}?", default=False):
            if run._observer:
                run._observer.stop()
            run.abandon()
            return
    run.finish(status)


def main(comment: str | None = None) -> Callable[[F], F]:
    """Run the decorated function inside a new experiment folder.

    The function receives a ``Params`` (``ex_dir``, ``ex_name``, ``save_checkpoint()``,
    ``upstream(name)``) as its first argument.
    """

    def wrap(func: F) -> F:
        @functools.wraps(func)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            with experiment(comment) as params:
                return func(params, *args, **kwargs)

        return wrapper  # type: ignore[return-value]

    if callable(comment):  # used bare: @resutil.main
        func, comment = comment, None
        return wrap(func)  # type: ignore[return-value]
    return wrap
