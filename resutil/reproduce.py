"""``resutil reproduce``: rerun a recorded experiment as it was, and say whether it reproduced.

``plan_reproduce`` reads the record: the command (a pipeline step's ``run`` with its
needs and params, else the script's ``argv``), the commit, the files the run had that the
commit does not hold as they were (uncommitted and untracked code, copied into its
``uncommited_files/``), and its upstream experiments, found by identity and run id: one
relabelled since is found under its new name, one only on the remote is pulled.

``reproduce`` then checks the recorded commit out into a temporary ``git worktree`` (the
user's work tree is never touched), lays those files over it, links what git ignores in
the work tree (data, the results folder) into it, runs the command there as a new
experiment commented ``<comment>-repro`` whose metadata says ``reproduces: {run_id, name}``,
publishes it, and compares its files with the original's (``compare.compare_files``).
With ``at_head`` the current code runs in place instead.

A Snakemake job's experiment (written by snakemake-storage-plugin-resutil) records under
``snakemake`` the command that reruns just that job (``reproduce``) and the experiment each
of its input queries read (``inputs``). Its reproduction runs that command the same way,
into the new experiment (the plugin adopts RESUTIL_EXPERIMENT_DIR as ``@resutil.main()``
does), with SNAKEMAKE_INPUTS_ENV pinning each input query to the experiment the job read.
"""

from __future__ import annotations

import contextlib
import filecmp
import json
import os
import shutil
import sys
import tempfile
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import git
from .capture import git_state
from .compare import RUN_LOGS, FileComparison, argv_of, compare_files
from .errors import ResutilError
from .metadata import (
    UNCOMMITTED_DIR,
    Dependency,
    ExpMeta,
    compute_manifest,
    read_meta,
    upstream_record,
)
from .naming import MAX_COMMENT_LEN, identity_of, parse_name
from .progress import NO_PROGRESS_FACTORY, CallbackFactory
from .project import Project

NEW_FOLDER = Path("<new experiment>")  # stands for {out} in a plan's command
CHECKOUT = Path("<checkout>")  # stands for the temporary work tree in a plan's command
SNAKEMAKE_INPUTS_ENV = "RESUTIL_SNAKEMAKE_INPUTS"  # input query -> experiment, as JSON


@dataclass
class Upstream:
    """An upstream experiment of the original run, as found now."""

    recorded: str  # the name the original recorded
    name: str | None = None  # its name now; None when it is found nowhere
    how: str = "missing"  # "local" | "pull" | "missing"

    @property
    def renamed(self) -> bool:
        return self.name is not None and self.name != self.recorded


@dataclass
class ReproducePlan:
    """What ``reproduce`` will run, where, and with which upstream experiments."""

    original: str
    run_id: str | None
    comment: str
    cwd: Path  # where the command runs in place (with a checkout: the same folder of it)
    argv: list[str] | None = None  # a script's recorded command line (not a pipeline step)
    step: dict[str, Any] | None = None  # a pipeline step's recorded ``pipeline`` metadata
    job: dict[str, Any] | None = None  # a Snakemake job's recorded ``snakemake`` metadata
    commit: str | None = None
    head: str | None = None
    root: Path | None = None  # the git work tree here
    workdir: str | None = None  # with a checkout: cwd relative to the work tree
    checkout: bool = False  # run at ``commit`` in a temporary git worktree
    at_head: bool = False
    overlay: list[str] = field(default_factory=list)  # laid over the checkout
    upstreams: list[Upstream] = field(default_factory=list)
    pull_original: bool = False  # only on the remote: pulled (its files are compared)
    original_root: Path | None = None  # the work tree the original ran in, on its machine
    warnings: list[str] = field(default_factory=list)
    problem: str | None = None  # why it cannot run (a dry run shows it; running raises it)

    @property
    def pulls(self) -> list[str]:
        """The experiments to pull first: upstream ones, and the original."""
        out = [u.name for u in self.upstreams if u.how == "pull" and u.name]
        return out + ([self.original] if self.pull_original else [])

    @property
    def missing(self) -> list[str]:
        return [u.recorded for u in self.upstreams if u.how == "missing"]

    def command(self, project: Project, out: Path = NEW_FOLDER,
                tree: Path | None = None) -> str | list[str]:
        """The command line, ``out`` the new experiment folder, ``tree`` where the code is."""
        tree = tree if tree is not None else (CHECKOUT if self.checkout else self.root)
        if self.job is not None:
            argv = [str(a) for a in self.job["reproduce"]]
            return [sys.executable if argv[0] == "python" else argv[0], *argv[1:]]
        if self.step is None:
            argv = [_rewrite(a, self._names(), project.workspace.root, self.original_root, tree)
                    for a in self.argv or []]
            return [sys.executable, *argv]
        from .pipeline import expand  # the pipeline package loads on demand

        ws = project.workspace
        recorded = self.step.get("needs") or {}
        names = self._names()
        needs = {}
        for k, v in recorded.items():
            now = names.get(identity_of(str(v)), str(v)) if parse_name(str(v)) else str(v)
            needs[str(k)] = ws.path(ws.local_name(now) or now)
        template = self.step.get("run") or self.step.get("command") or ""
        # Paths as the original saw them from its folder: the checkout links the results.
        base = project.config.root / str(Path(str(self.step.get("file") or "x")).parent)
        return expand(template, str(self.step.get("step")), out, needs,
                      self.step.get("params") or {}, base)

    def _names(self) -> dict[str, str]:
        """identity -> the current name of each upstream experiment found."""
        return {identity_of(u.recorded): u.name for u in self.upstreams if u.name}


@dataclass
class ReproduceResult:
    """The new experiment, how its run ended and how its files compare with the original's."""

    plan: ReproducePlan
    experiment: str
    status: str
    returncode: int
    seconds: float
    log: Path
    pushed: bool = False
    push_error: str | None = None
    files: FileComparison | None = None  # None when the rerun did not finish
    warnings: list[str] = field(default_factory=list)

    @property
    def reproduced(self) -> bool:
        """The rerun finished and every file that counts is identical."""
        return self.status == "finished" and self.files is not None and self.files.identical


# -- the plan ----------------------------------------------------------------------------------
def plan_reproduce(project: Project, query: str, at_head: bool = False) -> ReproducePlan:
    """Read the experiment's record and decide how to rerun it here."""
    found = project.locate(query)
    name, meta, local = found.name, found.meta, found.folder is not None
    old_comment = meta.comment or (parse_name(name).comment if parse_name(name) else "")
    comment = f"{old_comment[:MAX_COMMENT_LEN - 6]}-repro" if old_comment else "repro"
    plan = ReproducePlan(name, meta.run_id, comment, project.config.root,
                         commit=meta.commit_hash, at_head=at_head, pull_original=not local)
    info = meta.pipeline if isinstance(meta.pipeline, dict) else None
    if info and (info.get("run") or info.get("command")):
        plan.step = info
    elif (job := _snakemake_job(meta)) is not None:
        plan.job = job
    else:
        plan.argv = argv_of(meta)
        if not plan.argv:
            raise ResutilError(f"{name} recorded no command to rerun (no args in its metadata)")
        program = Path(plan.argv[0]).name
        by_hand = program == "resutil" or plan.argv[0].endswith("resutil/__main__.py")
        if by_hand:
            raise ResutilError(f"{name} was made by hand ('{meta.args}'): no run to repeat")
        if program == "snakemake" or "snakemake" in meta.extra:
            raise ResutilError(f"{name} was written by a Snakemake workflow: rerun its job "
                               "with snakemake (e.g. 'snakemake --forcerun RULE')")
    plan.upstreams = resolve_upstreams(project, meta.dependencies)
    for up in plan.upstreams:
        if up.how == "missing":
            plan.warnings.append(f"upstream {up.recorded} is neither local nor on the remote")
    _place(project, plan, meta)
    return plan


def _snakemake_job(meta: ExpMeta) -> dict[str, Any] | None:
    """The ``snakemake`` record of a job's experiment that says how to rerun it, or None."""
    job = meta.extra.get("snakemake")
    argv = job.get("reproduce") if isinstance(job, dict) else None
    if not isinstance(argv, list) or not argv or not all(isinstance(a, str) for a in argv):
        return None
    return job


def _snakemake_pins(plan: ReproducePlan) -> dict[str, str]:
    """Each input query of a Snakemake job -> the experiment it read, by its name now."""
    names = plan._names()
    pins = {}
    for query, used in ((plan.job or {}).get("inputs") or {}).items():
        name = used.get("name") if isinstance(used, dict) else None
        if isinstance(query, str) and isinstance(name, str) and parse_name(name):
            pins[query] = names.get(identity_of(name), name)
    return pins


def resolve_upstreams(project: Project, deps: Iterable[Dependency]) -> list[Upstream]:
    """Find each upstream experiment by identity and run id: locally under whatever label
    it has now, else elsewhere by its run id (a run moved to another identity), else on
    the remote (to be pulled)."""
    ws = project.workspace
    records: dict[str, Any] | None = None
    out = []
    for dep in deps:
        local = ws.local_name(dep.name)
        if local and (dep.run_id is None or
                      upstream_record(ws.path(local))["run_id"] in (None, dep.run_id)):
            out.append(Upstream(dep.name, local, "local"))
            continue
        if records is None:
            records = _records(project)
        found = None
        for rec in records.values():
            same_run = dep.run_id is not None and rec.meta.run_id == dep.run_id
            same_identity = rec.identity == dep.identity and (
                dep.run_id is None or rec.meta.run_id in (None, dep.run_id))
            if same_run or (same_identity and found is None):
                found = rec
                if same_run:
                    break
        if found is None:
            out.append(Upstream(dep.name))
        else:
            out.append(Upstream(dep.name, found.name, "local" if found.local else "pull"))
    return out


def _records(project: Project) -> dict[str, Any]:
    from .lineage import collect

    try:
        return collect(project, remote=not project.no_remote)
    except ResutilError:  # the remote cannot be reached: what is local still counts
        return collect(project, remote=False)


def _place(project: Project, plan: ReproducePlan, meta: ExpMeta) -> None:
    """Where the code comes from (a checkout of the commit, or the work tree as it is) and
    the working directory."""
    cfg_root = project.config.root
    root = git.toplevel(cfg_root)
    plan.root = root
    plan.head = git.head(root) if root is not None else None
    env_cwd = (meta.environment or {}).get("cwd")
    if plan.step is not None:
        rel_cwd = Path(str(plan.step.get("file") or "x")).parent
        plan.cwd = cfg_root / rel_cwd
    elif root is not None and meta.workdir is not None:
        plan.cwd = root / meta.workdir
    elif isinstance(env_cwd, str) and Path(env_cwd).is_dir():
        plan.cwd = Path(env_cwd)
    if root is not None:
        with contextlib.suppress(ValueError, OSError):
            plan.workdir = plan.cwd.resolve().relative_to(root.resolve()).as_posix()
        if meta.workdir is not None and isinstance(env_cwd, str):
            depth = 0 if meta.workdir == "." else len(Path(meta.workdir).parts)
            plan.original_root = Path(env_cwd).parents[depth - 1] if depth else Path(env_cwd)
    if plan.at_head:
        _compare_code(project, plan, meta, project.workspace.path(plan.original)
                      if not plan.pull_original else None)
        return
    if plan.commit is None:
        plan.warnings.append(f"{plan.original} recorded no git commit: rerunning the code as "
                             "it is now")
    elif root is None:
        plan.warnings.append(f"not in a git repository: rerunning the code here as it is, not "
                             f"commit {plan.commit[:10]}")
    elif plan.workdir is None:
        plan.warnings.append(f"{plan.cwd} is outside the git work tree {root}: rerunning the "
                             "code as it is")
    elif not git.has_commit(root, plan.commit):
        plan.problem = (f"commit {plan.commit[:10]} of {plan.original} is not in this "
                        "repository: 'git fetch' it, or rerun today's code with --at-head")
        return
    else:
        plan.checkout = True
        plan.overlay = [*meta.uncommitted_files, *meta.untracked_files]
        return
    _compare_code(project, plan, meta, None if plan.pull_original
                  else project.workspace.path(plan.original))


def _compare_code(
    project: Project, plan: ReproducePlan, meta: ExpMeta, folder: Path | None
) -> None:
    """Warnings for a rerun in place: how today's code differs from the recorded run's."""
    state = git_state(plan.cwd if plan.cwd.is_dir() else project.config.root)
    if plan.commit is not None and state.commit is not None and state.commit != plan.commit:
        plan.warnings.append(f"{plan.original} ran at commit {plan.commit[:10]}, HEAD is "
                             f"{state.commit[:10]}: this reruns today's code")
    if state.root is None:
        return
    # What the decorator never copies (results, key files) does not count as a difference.
    skip = [project.config.results_dir.resolve(), *(p.resolve() for p in project.key_files())]
    now = set()
    for rel in state.changed:
        path = (state.root / rel).resolve()
        if not any(x == path or x in path.parents for x in skip):
            now.add(rel)
    then = set(meta.uncommitted_files) | set(meta.untracked_files)
    differ = sorted(now - then)
    for rel in sorted(then):
        current = state.root / rel
        if not current.is_file():
            differ.append(rel)
        elif folder is not None:
            copy = folder / UNCOMMITTED_DIR / rel
            if copy.is_file() and not filecmp.cmp(copy, current, shallow=False):
                differ.append(rel)
        elif rel not in now and rel not in meta.untracked_files:
            differ.append(rel)
    if differ:
        shown = ", ".join(sorted(set(differ))[:5]) + (" ..." if len(set(differ)) > 5 else "")
        how = "" if folder is not None else " (compared by name: the original is not local)"
        plan.warnings.append(f"uncommitted files differ from the recorded run{how}: {shown}")


def _rewrite(arg: str, names: dict[str, str], results: Path, original_root: Path | None,
             tree: Path | None) -> str:
    """One recorded argument for the rerun: an experiment folder in it takes the current
    name of that experiment (relabelled since, or moved); an absolute path into the work
    tree the original ran in points into ``tree``, one into its results folder into ours."""
    flag, eq, value = arg.partition("=") if arg.startswith("-") else ("", "", arg)
    parts = value.split("/")
    changed = False
    for i, part in enumerate(parts):
        parsed = parse_name(part)
        if parsed is not None and parsed.identity in names:
            if names[parsed.identity] != part:
                parts[i] = names[parsed.identity]
                changed = True
            if value.startswith("/") and i > 0:  # into the original's results folder: ours
                return flag + eq + str(results.joinpath(*parts[i:]))
            break
    value = "/".join(parts) if changed else value
    if original_root is not None and tree is not None and value.startswith("/"):
        with contextlib.suppress(ValueError):
            value = str(tree / Path(value).relative_to(original_root))
    return flag + eq + value


# -- the run -----------------------------------------------------------------------------------
def reproduce(
    project: Project, plan: ReproducePlan, on_output: Callable[[str], None] = lambda line: None,
    ignore: Iterable[str] = (), progress: CallbackFactory = NO_PROGRESS_FACTORY,
) -> ReproduceResult:
    """Pull what is missing, rerun the command as a new experiment (in a checkout of the
    recorded commit unless ``plan.at_head``), publish it and compare its files with the
    original's; ``ignore`` globs name files known to vary; ``progress`` reports the pulls
    and the push."""
    from .pipeline import STEP_LOG, execute, push_folder
    from .runs import new_experiment
    from .sync import ensure_local

    ws = project.workspace
    if plan.problem:
        raise ResutilError(plan.problem)
    if plan.missing:
        where = "locally or on the remote"
        if project.no_remote:
            where = "locally (RESUTIL_NO_REMOTE is set)"
        raise ResutilError(f"upstream {plan.missing[0]} of {plan.original} is not found {where}")
    if plan.pulls:
        ensure_local(project, plan.pulls, progress)
    original = ws.path(ws.local_name(plan.original) or plan.original)
    folder, meta = new_experiment(project, plan.comment, claim=not project.no_remote)
    meta.extra["reproduces"] = {"run_id": plan.run_id, "name": plan.original}
    for up in plan.upstreams:
        local = ws.local_name(up.name or up.recorded) or up.recorded
        meta.add_dependency(local, "declared", **upstream_record(ws.path(local)))
    env: dict[str, str] = {}
    if plan.job is not None:
        env = {SNAKEMAKE_INPUTS_ENV: json.dumps(_snakemake_pins(plan))}
    elif plan.step is not None:
        env = {"RESUTIL_PIPELINE_STEP": str(plan.step.get("step")),
               "RESUTIL_PARAMS": json.dumps(plan.step.get("params") or {}),
               **{str(k): str(v) for k, v in (plan.step.get("env") or {}).items()}}
    warnings: list[str] = []
    with _code(project, plan, original, warnings) as tree:
        cwd = tree / plan.workdir if plan.checkout and plan.workdir else plan.cwd
        command = plan.command(project, folder, tree)
        if plan.checkout and os.environ.get("PYTHONPATH"):
            env["PYTHONPATH"] = _pythonpath(plan.root, tree)  # type: ignore[arg-type]
        outcome = execute(project, folder, meta, command, cwd, env, on_output,
                          code_files=_sources(plan, cwd))
    result = ReproduceResult(plan, folder.name, outcome.status, outcome.returncode,
                             outcome.seconds, folder / STEP_LOG, warnings=warnings)
    if not project.no_remote:
        now, result.push_error = push_folder(project, folder, progress)
        result.pushed = result.push_error is None
        if now != folder.name:
            folder = ws.path(now)
            result.experiment, result.log = now, folder / STEP_LOG
    if outcome.status == "finished":
        globs = [*RUN_LOGS, *ignore, *([f"{UNCOMMITTED_DIR}/*"] if plan.at_head else [])]
        result.files = compare_files(_manifest(original), _manifest(folder), globs,
                                     (original, folder))
    return result


@contextlib.contextmanager
def _code(project: Project, plan: ReproducePlan, original: Path,
          warnings: list[str]) -> Iterator[Path]:
    """The work tree the command runs in: a temporary checkout of the recorded commit with
    the original's files laid over it, or (in place) the work tree as it is."""
    if not plan.checkout:
        yield plan.root or plan.cwd
        return
    root, commit = plan.root, plan.commit
    assert root is not None and commit is not None
    tmp = Path(tempfile.mkdtemp(prefix="resutil-reproduce-"))
    tree = tmp / "tree"
    try:
        problem = git.worktree_add(root, tree, commit)
        if problem:
            raise ResutilError(f"cannot check out commit {commit[:10]} into a temporary "
                               f"work tree: {problem}")
        for rel in plan.overlay:
            copy = original / UNCOMMITTED_DIR / rel
            target = tree / rel
            if not copy.is_file():
                warnings.append(f"{plan.original} holds no copy of {rel}: the rerun uses the "
                                "committed version")
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            if target.is_symlink() or target.exists():
                target.unlink()
            shutil.copy2(copy, target)
        _link_ignored(project, root, tree)
        yield tree
    finally:
        git.worktree_remove(root, tree)
        shutil.rmtree(tmp, ignore_errors=True)


def _link_ignored(project: Project, root: Path, tree: Path) -> None:
    """Make what git ignores in the work tree (data, caches, the results folder) reachable
    from the checkout under the same paths, as links: a script reads its data where it
    always does, and writes its results where resutil expects them."""
    results = project.config.results_dir.resolve()
    top = root.resolve()
    links = []
    with contextlib.suppress(ValueError):
        links.append(results.relative_to(top).as_posix())
    for entry in git.ignored_entries(root) or []:
        rel = entry.rstrip("/")
        parts = rel.split("/")
        if "__pycache__" in parts or rel.endswith((".pyc", ".pyo")):
            continue
        links.append(rel)
    done: list[str] = []
    for rel in links:
        if any(rel == d or rel.startswith(d + "/") for d in done):
            continue  # inside a folder linked already (the results folder)
        target = tree / rel
        if os.path.lexists(target):
            continue  # the commit holds it (tracked then)
        with contextlib.suppress(OSError):
            target.parent.mkdir(parents=True, exist_ok=True)
            os.symlink(top / rel, target, target_is_directory=(top / rel).is_dir())
            done.append(rel)


def _pythonpath(root: Path, tree: Path) -> str:
    """PYTHONPATH with entries inside the work tree pointing into the checkout instead."""
    out = []
    top = root.resolve()
    for entry in os.environ.get("PYTHONPATH", "").split(os.pathsep):
        if not entry:
            continue
        try:
            out.append(str(tree / Path(entry).resolve().relative_to(top)))
        except ValueError:
            out.append(entry)
    return os.pathsep.join(out)


def _sources(plan: ReproducePlan, cwd: Path) -> list[Path]:
    """The files a pipeline step runs, in ``cwd`` (the script itself finds its own)."""
    if plan.step is None:
        return []
    from .pipeline.fingerprint import StepCode
    from .pipeline.spec import Step

    step = Step(str(plan.step.get("step")), str(plan.step.get("run") or ""),
                deps=[str(d) for d in plan.step.get("deps") or []])
    return StepCode(cwd).sources(step)


def _manifest(folder: Path) -> Any:
    meta = read_meta(folder)
    return meta.manifest if meta.manifest is not None else compute_manifest(folder)


def plan_rows(project: Project, plan: ReproducePlan) -> list[tuple[str, str]]:
    """What a rerun will do, as (what, value) rows: ``reproduce --dry-run`` prints them and
    the terminal UI asks with them."""
    if plan.checkout:
        code = f"commit {(plan.commit or '')[:10]} in a temporary git worktree"
        if plan.overlay:
            code += f", with {len(plan.overlay)} uncommitted file(s) laid over it"
    else:
        code = f"the work tree as it is (HEAD {(plan.head or '-')[:10]})"
    rows = [("reproduces", plan.original), ("code", code),
            ("command", display(plan.command(project))),
            ("in", (str(Path("<checkout>") / plan.workdir) if plan.checkout else str(plan.cwd)))]
    for up in plan.upstreams:
        if up.renamed:
            rows.append(("upstream", f"{up.name} (recorded as {up.recorded})"))
    rows += [("pull", name) for name in plan.pulls]
    return rows


def display(command: str | list[str]) -> str:
    """A command as one line."""
    import shlex

    return command if isinstance(command, str) else shlex.join(
        [os.path.basename(command[0]) if command[0] == sys.executable else command[0], *command[1:]]
    )
