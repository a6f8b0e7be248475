"""``resutil reproduce``: run a recorded experiment again, as a new experiment.

The plan says what will run and what differs from the recorded run (commit, uncommitted
files); running it pulls the missing upstream experiments, reruns the recorded command (a
pipeline step's command, else the script's recorded ``args``) in a new folder commented
``<old comment>-repro`` whose metadata says ``reproduces: <name>``.
"""

from __future__ import annotations

import filecmp
import json
import os
import shlex
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from .capture import git_state
from .errors import ExperimentNotFound, ResutilError
from .experiments import new_experiment
from .metadata import UNCOMMITTED_DIR, Dependency, ExpMeta, read_meta, upstream_record
from .naming import IDENTITY_LEN, MAX_COMMENT_LEN, parse_name
from .pipeline import STEP_LOG, execute, expand, push_folder
from .project import Project
from .sync import ensure_local

NEW_FOLDER = Path("<new experiment>")  # stands for {out} in a plan's command


@dataclass
class ReproducePlan:
    """What ``reproduce`` will run, and how today's code differs from the recorded run."""

    original: str
    comment: str
    cwd: Path
    args: str = ""  # a script's recorded arguments (not a pipeline step)
    step: dict[str, Any] | None = None  # a pipeline step's recorded ``pipeline`` metadata
    commit: str | None = None
    head: str | None = None
    warnings: list[str] = field(default_factory=list)
    dependencies: list[Dependency] = field(default_factory=list)
    pulls: list[str] = field(default_factory=list)  # upstream experiments to pull first
    missing: list[str] = field(default_factory=list)  # upstream experiments found nowhere

    def command(self, project: Project, out: Path = NEW_FOLDER) -> str | list[str]:
        """The command line, with ``out`` as the new experiment folder."""
        if self.step is None:
            return [sys.executable, *_split(self.args)]
        ws = project.workspace
        recorded = self.step.get("needs") or {}
        needs = {k: ws.path(ws.local_name(str(v)) or str(v)) for k, v in recorded.items()}
        template = self.step.get("run") or self.step.get("command") or ""
        return expand(template, str(self.step.get("step")), out, needs,
                      self.step.get("params") or {}, self.cwd)


@dataclass
class ReproduceResult:
    """The new experiment and how its run ended."""

    plan: ReproducePlan
    experiment: str
    status: str
    returncode: int
    seconds: float
    log: Path
    pushed: bool = False
    push_error: str | None = None


def plan_reproduce(project: Project, query: str) -> ReproducePlan:
    """Read the experiment's record and compare it with the code here."""
    name = project.resolve(query)
    ws = project.workspace
    local = ws.local_name(name)
    if local:
        meta = read_meta(ws.path(local), with_manifest=False)
    else:
        exp = None if project.no_remote else project.remote.get(name)
        if exp is None:
            raise ExperimentNotFound(f"no experiment '{query}' locally or on the remote")
        meta = project.remote.meta(exp)
    name = local or name
    old_comment = meta.comment or (parse_name(name).comment if parse_name(name) else "")
    comment = f"{old_comment[:MAX_COMMENT_LEN - 6]}-repro" if old_comment else "repro"
    root = project.config.root
    plan = ReproducePlan(name, comment, root, commit=meta.commit_hash,
                         dependencies=list(meta.dependencies))
    info = meta.pipeline if isinstance(meta.pipeline, dict) else None
    if info and (info.get("run") or info.get("command")):
        plan.step = info
        plan.cwd = (root / str(info.get("file") or "x")).parent
    else:
        plan.args = meta.args
        tokens = _split(meta.args)
        if not tokens:
            raise ResutilError(f"{name} recorded no command to rerun (no args in its metadata)")
        if Path(tokens[0]).name == "resutil":
            raise ResutilError(f"{name} was made by hand ('{meta.args}'): no run to repeat")
        cwd = (meta.environment or {}).get("cwd")
        if cwd and Path(cwd).is_dir():
            plan.cwd = Path(cwd)
    plan.pulls = [d.name for d in meta.dependencies if not ws.local_name(d.name)]
    on_remote = project.remote.experiments() if plan.pulls and not project.no_remote else {}
    plan.missing = [n for n in plan.pulls if n[:IDENTITY_LEN] not in on_remote]
    plan.pulls = [n for n in plan.pulls if n not in plan.missing]
    for dep in plan.missing:
        plan.warnings.append(f"upstream {dep} is neither local nor on the remote")
    _compare_code(project, plan, meta, ws.path(local) if local else None)
    return plan


def _split(args: str) -> list[str]:
    """A recorded ``args`` (argv joined by spaces, as 0.1.x wrote it) as a command line."""
    try:
        return shlex.split(args)
    except ValueError:  # an argument held a lone quote
        return args.split()


def _compare_code(
    project: Project, plan: ReproducePlan, meta: ExpMeta, folder: Path | None
) -> None:
    git = git_state(plan.cwd if plan.cwd.is_dir() else project.config.root)
    plan.head = git.commit
    if plan.commit is None:
        plan.warnings.append(f"{plan.original} recorded no git commit: the code cannot be checked")
    elif git.commit is None:
        plan.warnings.append(f"not in a git repository: cannot check commit {plan.commit[:10]}")
    elif git.commit != plan.commit:
        plan.warnings.append(
            f"{plan.original} ran at commit {plan.commit[:10]}, HEAD is {git.commit[:10]}: "
            f"'git checkout {plan.commit[:10]}' to rerun the same code"
        )
    if git.root is None:
        return
    # What the decorator never copies (results, key files) does not count as a difference.
    skip = [project.config.results_dir.resolve(), *(p.resolve() for p in project.key_files())]
    now = set()
    for rel in git.changed:
        path = (git.root / rel).resolve()
        if not any(x == path or x in path.parents for x in skip):
            now.add(rel)
    then = set(meta.uncommitted_files)
    differ = sorted(now - then)
    for rel in sorted(then):
        current = git.root / rel
        if not current.is_file():
            differ.append(rel)
        elif folder is not None:
            copy = folder / UNCOMMITTED_DIR / rel
            if copy.is_file() and not filecmp.cmp(copy, current, shallow=False):
                differ.append(rel)
        elif rel not in now:
            differ.append(rel)
    if differ:
        shown = ", ".join(sorted(set(differ))[:5]) + (" ..." if len(set(differ)) > 5 else "")
        how = "" if folder is not None else " (compared by name: the original is not local)"
        plan.warnings.append(f"uncommitted files differ from the recorded run{how}: {shown}")


def reproduce(
    project: Project, plan: ReproducePlan, on_output: Callable[[str], None] = lambda line: None
) -> ReproduceResult:
    """Pull the missing upstream experiments, then rerun the command as a new experiment."""
    ws = project.workspace
    if plan.missing:
        where = "locally or on the remote"
        if project.no_remote:
            where = "locally (RESUTIL_NO_REMOTE is set)"
        raise ResutilError(f"upstream {plan.missing[0]} of {plan.original} is not found {where}")
    if plan.pulls:
        ensure_local(project, plan.pulls)
    folder, meta = new_experiment(project, plan.comment, claim=not project.no_remote)
    meta.extra["reproduces"] = plan.original
    for dep in plan.dependencies:
        local = ws.local_name(dep.name) or dep.name
        meta.add_dependency(local, "declared", **upstream_record(ws.path(local)))
    env: dict[str, str] = {}
    if plan.step is not None:
        env = {"RESUTIL_PIPELINE_STEP": str(plan.step.get("step")),
               "RESUTIL_PARAMS": json.dumps(plan.step.get("params") or {}),
               **{str(k): str(v) for k, v in (plan.step.get("env") or {}).items()}}
    command = plan.command(project, folder)
    outcome = execute(project, folder, meta, command, plan.cwd, env, on_output)
    result = ReproduceResult(plan, folder.name, outcome.status, outcome.returncode,
                             outcome.seconds, folder / STEP_LOG)
    if not project.no_remote:
        now, result.push_error = push_folder(project, folder)
        result.pushed = result.push_error is None
        if now != folder.name:
            result.experiment, result.log = now, ws.path(now) / STEP_LOG
    return result


def display(command: str | list[str]) -> str:
    """A command as one line."""
    return command if isinstance(command, str) else shlex.join(
        [os.path.basename(command[0]) if command[0] == sys.executable else command[0], *command[1:]]
    )
