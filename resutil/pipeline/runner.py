"""``resutil pipeline run``: run the stale steps of a pipeline as experiments, in parallel.

The decisions (which steps are up to date, and why) come from ``plan``; this module
creates each step's folder, runs its command there (``execute``, shared with reproduce),
records the outcome and publishes it (``push_folder``).
"""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import PipelineError, ResutilError
from ..metadata import ExpMeta, read_meta, upstream_record, write_meta
from ..naming import IDENTITY_LEN
from ..progress import NO_PROGRESS_FACTORY, CallbackFactory
from ..project import Project
from ..publish import publish
from ..runs import ADOPT_ENV, mark_ended, new_experiment, record_start, seal
from .index import Candidate
from .plan import Planner
from .spec import Pipeline, Step, expand

STEP_LOG = "resutil-step.log"  # the step's whole output, in its experiment folder


# -- running ----------------------------------------------------------------------------------
@dataclass
class StepResult:
    """What ``pipeline run`` did with one step."""

    step: str
    state: str  # "ran" | "reused" | "failed" | "skipped"
    experiment: str | None = None
    detail: str = ""
    seconds: float = 0.0
    returncode: int | None = None
    log: Path | None = None
    where: str | None = None  # for reused steps: local, remote, local and remote
    pulled: bool = False
    pushed: bool = False
    push_error: str | None = None


@dataclass
class RunReport:
    """Every step of a run, in pipeline order."""

    steps: list[StepResult] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def having(self, state: str) -> list[StepResult]:
        return [r for r in self.steps if r.state == state]

    @property
    def ok(self) -> bool:
        return not self.having("failed")


@dataclass
class Event:
    """Progress of a run, for the front end: a step starts, pulls, prints, finishes."""

    kind: str  # "start" | "pull" | "push" | "output" | "done" | "warning"
    step: str
    text: str = ""
    result: StepResult | None = None


def _noop(_event: Event) -> None:
    pass


class _Runner:
    def __init__(self, project: Project, pipeline: Pipeline, names: list[str], force: set[str],
                 on_event: Callable[[Event], None],
                 progress: CallbackFactory = NO_PROGRESS_FACTORY) -> None:
        self.project = project
        self.progress = progress
        self.pipeline = pipeline
        self.names = names
        self.force = force
        self.on_event = on_event
        self.planner = Planner(project, pipeline, names)
        self.known = self.planner.known
        self.made: dict[str, str] = {}
        self.results: dict[str, StepResult] = {}
        self.pull_lock = threading.Lock()

    def run(self, jobs: int) -> RunReport:
        pending = deque(self.names)
        running: dict[Future[StepResult], str] = {}
        with ThreadPoolExecutor(max(1, jobs)) as pool:
            while pending or running:
                for name in list(pending):
                    ups = self.pipeline.steps[name].upstream_steps
                    if any(u not in self.results for u in ups):
                        continue
                    pending.remove(name)
                    bad = [u for u in ups if self.results[u].state in ("failed", "skipped")]
                    if bad:
                        why = "failed" if self.results[bad[0]].state == "failed" else "was skipped"
                        detail = f"upstream step {bad[0]} {why}"
                        self._done(StepResult(name, "skipped", detail=detail))
                        continue
                    running[pool.submit(self._step, name)] = name
                if not running:
                    continue
                finished, _ = wait(running, return_when=FIRST_COMPLETED)
                for fut in finished:
                    name = running.pop(fut)
                    try:
                        result = fut.result()
                    except ResutilError as e:
                        result = StepResult(name, "failed", detail=str(e))
                    self._done(result)
        self._pull_final()
        report = RunReport([self.results[n] for n in self.names])
        if self.known.remote_error:
            report.warnings.append(
                f"the remote could not be reached ({self.known.remote_error}); worked locally"
            )
        return report

    def _done(self, result: StepResult) -> None:
        self.results[result.step] = result
        if result.experiment and result.state in ("ran", "reused"):
            self.made[result.step] = result.experiment
        self.on_event(Event("done", result.step, result=result))

    def _step(self, name: str) -> StepResult:
        step = self.pipeline.steps[name]
        d = self.planner.decide(step, self.made, name in self.force)
        assert d.needs is not None and d.info is not None  # the scheduler waits for upstream
        if d.reuse is not None:
            return self._reuse(name, d.reuse)
        self._ensure_local(name, list(d.needs.values()))
        return self._execute(step, d.info, d.needs)

    def _reuse(self, name: str, found: Candidate) -> StepResult:
        unpushed = (found.local and self.known.use_remote
                    and found.name[:IDENTITY_LEN] not in self.known.listing())
        result = StepResult(name, "reused", found.name, where=found.where)
        if unpushed:
            self._push(name, self.project.workspace.path(found.name), result)
        return result

    def _ensure_local(self, name: str, names: list[str]) -> None:
        ws = self.project.workspace
        missing = [n for n in names if not ws.local_name(n)]
        if not missing:
            return
        if not self.known.use_remote:
            raise PipelineError(
                f"step '{name}': upstream {missing[0]} is not local and the remote is off"
            )
        from ..sync import ensure_local  # 3 ms to import: only when a step needs a pull

        with self.pull_lock:
            for n in missing:
                self.on_event(Event("pull", name, n))
            ensure_local(self.project, missing, self.progress)
            for result in list(self.results.values()):
                if result.experiment in missing:
                    result.pulled = True

    def _pull_final(self) -> None:
        """Reused steps only on the remote are pulled when nothing in this run needed them
        but they are its end results (no step of the run is built from them)."""
        used = {u for n in self.names for u in self.pipeline.steps[n].upstream_steps}
        for name in self.names:
            r = self.results[name]
            if name not in used and r.state == "reused" and r.where == "remote" and not r.pulled:
                try:
                    self._ensure_local(name, [r.experiment])  # type: ignore[list-item]
                except ResutilError as e:
                    r.detail = f"could not pull: {e}"

    def _execute(self, step: Step, info: dict[str, Any], needs: dict[str, str]) -> StepResult:
        ws = self.project.workspace
        folder, meta = new_experiment(self.project, step.comment, claim=self.known.use_remote)
        meta.pipeline = info
        for name in needs.values():
            local = ws.local_name(name) or name
            meta.add_dependency(local, "declared", **upstream_record(ws.path(local)))
        paths = {k: ws.path(ws.local_name(v) or v) for k, v in needs.items()}
        command = expand(step.run, step.name, folder, paths, step.params, self.pipeline.root)
        info["command"] = command
        self.on_event(Event("start", step.name, folder.name))
        env = {"RESUTIL_PIPELINE_STEP": step.name,
               "RESUTIL_PARAMS": json.dumps(step.params, default=str), **step.env}
        outcome = execute(self.project, folder, meta, command, self.pipeline.root, env,
                          lambda line: self.on_event(Event("output", step.name, line)),
                          code_files=self.planner.code.sources(step))
        if outcome.untracked:
            more = " ..." if len(outcome.untracked) > 3 else ""
            files = ", ".join(outcome.untracked[:3]) + more
            self.on_event(Event("warning", step.name, f"{files} not tracked by git: copied into "
                                f"{folder.name}/uncommited_files/ so it can be reproduced"))
        result = StepResult(step.name, "ran" if outcome.status == "finished" else "failed",
                            folder.name, seconds=outcome.seconds, returncode=outcome.returncode,
                            log=folder / STEP_LOG)
        if outcome.status != "finished":
            result.detail = f"{outcome.status} (exit code {outcome.returncode})"
        if self.known.use_remote:
            self._push(step.name, folder, result)
        return result

    def _push(self, name: str, folder: Path, result: StepResult) -> None:
        self.on_event(Event("push", name, folder.name))
        now, error = push_folder(self.project, folder, self.progress)
        if result.experiment == folder.name:
            result.experiment = now
            result.log = self.project.workspace.path(now) / STEP_LOG
        result.pushed = error is None
        result.push_error = error
        if error:
            self.on_event(Event("warning", name, f"push of {folder.name} failed: {error}"))


def run_pipeline(
    project: Project,
    pipeline: Pipeline,
    targets: list[str] | tuple[str, ...] = (),
    jobs: int = 1,
    force: list[str] | tuple[str, ...] = (),
    on_event: Callable[[Event], None] = _noop,
    progress: CallbackFactory = NO_PROGRESS_FACTORY,
) -> RunReport:
    """Run the steps that are not up to date (and their upstream closure), reuse the rest;
    ``progress`` reports each pull and push."""
    names = pipeline.closure(targets)
    pipeline.check_names(force)
    return _Runner(project, pipeline, names, set(force), on_event, progress).run(jobs)


# -- one command in an experiment folder (shared with reproduce) -------------------------------
@dataclass
class Outcome:
    status: str  # "finished" | "failed" | "interrupted"
    returncode: int
    seconds: float
    untracked: list[str] = field(default_factory=list)  # code copied because git lacks it


def execute(
    project: Project,
    folder: Path,
    meta: ExpMeta,
    command: str | list[str],
    cwd: Path,
    env: dict[str, str],
    on_output: Callable[[str], None],
    code_files: Iterable[Path] = (),
) -> Outcome:
    """Run ``command`` as the experiment in ``folder`` (made by the caller) and record it.

    The process finds the folder in RESUTIL_EXPERIMENT_DIR, so a script using
    ``@resutil.main()`` adopts it instead of making its own; its whole output goes to
    ``resutil-step.log`` in the folder and, line by line, to ``on_output``. The
    ``code_files`` it runs that git does not track are copied like uncommitted files.
    """
    cfg = project.config
    args = command if isinstance(command, str) else shlex.join(command)
    record_start(project, folder, meta, args, cwd, code_files=code_files)
    write_meta(folder, meta)  # the start record: a step killed from here on is pushed with it
    full_env = {k: v for k, v in os.environ.items()
                if k not in ("RESUTIL_DEBUG", "RESUTIL_COMMENT")}
    full_env.update(env)
    full_env[ADOPT_ENV] = str(folder)
    full_env["RESUTIL_CONFIG"] = str(cfg.path)
    full_env["RESUTIL_NO_INTERACTIVE"] = "1"
    # As in an activated venv: `python` in a step is the Python running resutil.
    full_env["PATH"] = os.path.dirname(sys.executable) + os.pathsep + full_env.get("PATH", "")
    started = time.monotonic()
    with open(folder / STEP_LOG, "w", encoding="utf-8", errors="replace") as log:
        try:
            proc = subprocess.Popen(
                command, shell=isinstance(command, str), cwd=cwd, env=full_env,
                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                text=True, errors="replace", bufsize=1,
            )
        except OSError as e:
            log.write(f"cannot start: {e}\n")
            returncode = 127
        else:
            assert proc.stdout is not None
            for line in proc.stdout:
                log.write(line)
                on_output(line.rstrip("\n"))
            returncode = proc.wait()
    seconds = time.monotonic() - started
    if returncode == 0:
        status = "finished"
    elif returncode in (-signal.SIGINT, 130, -signal.SIGTERM):
        status = "interrupted"
    else:
        status = "failed"
    after = read_meta(folder, with_manifest=False)  # the script may have added to it
    after.pipeline = meta.pipeline
    after.extra = {**meta.extra, **after.extra}
    mark_ended(after, status)
    after.manifest = None
    write_meta(folder, after)  # the end record, before the manifest and the push
    if project.no_remote:
        seal(folder, after)  # no push will seal it
    return Outcome(status, returncode, seconds, sorted({*meta.untracked_files,
                                                         *after.untracked_files}))


def push_folder(project: Project, folder: Path,
                progress: CallbackFactory = NO_PROGRESS_FACTORY) -> tuple[str, str | None]:
    """Publish one experiment folder: (its name now, the error message when it failed -
    it is kept locally then, its manifest sealed)."""
    try:
        return publish(project, folder, progress(folder.name)).name, None
    except ResutilError as e:
        meta = read_meta(folder, with_manifest=False)
        if meta.manifest is None:
            seal(folder, meta)
        return folder.name, str(e)


def log_tail(path: Path | None, lines: int = 15) -> list[str]:
    """The last lines of a step's log (to show why it failed)."""
    if path is None:
        return []
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - 16384))
            text = f.read().decode("utf-8", "replace")
    except OSError:
        return []
    return text.splitlines()[-lines:]

