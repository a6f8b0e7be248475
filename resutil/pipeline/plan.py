"""Which steps are up to date, which are stale, and why: the one place a step is decided.

``Planner.decide`` is what both ``pipeline status`` (and ``run --dry-run``) and the runner
ask of each step, in order: its upstream experiments, its fingerprint, and the finished
experiment carrying that fingerprint, if any (reused unless forced).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..errors import ExperimentError, ExperimentNotFound, PipelineError
from ..naming import IDENTITY_LEN, identity_of
from ..project import Project
from .fingerprint import FINGERPRINT_FORMAT, StepCode, fingerprint, head_commit
from .index import Candidate, Known
from .spec import Pipeline, Step, param_text


@dataclass
class StepStatus:
    """Where a step stands: up to date (reusable), stale (changed since) or missing."""

    step: str
    state: str  # "up to date" | "stale" | "missing"
    experiment: str | None = None
    where: str | None = None
    reasons: list[str] = field(default_factory=list)
    forced: bool = False
    pulls: list[str] = field(default_factory=list)  # input experiments not local yet

    @property
    def action(self) -> str:
        """What `pipeline run` would do: reuse, pull (then reuse) or run."""
        if self.forced or self.state != "up to date":
            return "run"
        return "reuse" if self.where != "remote" else "pull"


@dataclass
class Decision:
    """One step, decided: what it needs, its ``pipeline`` metadata, what it can reuse."""

    step: str
    # key -> upstream experiment; None while an upstream step has none yet (it runs first)
    needs: dict[str, str] | None = None
    info: dict[str, Any] | None = None  # the ``pipeline`` metadata of a run with these needs
    found: Candidate | None = None  # the newest finished experiment with this fingerprint
    forced: bool = False

    @property
    def reuse(self) -> Candidate | None:
        """The experiment to reuse instead of running the step, if any."""
        return None if self.forced else self.found


class Planner:
    """What deciding needs, computed once per command: code state, known experiments, inputs."""

    def __init__(self, project: Project, pipeline: Pipeline, names: list[str]) -> None:
        self.project = project
        self.pipeline = pipeline
        self.commit = head_commit(pipeline.root)
        comments = {s.comment for s in pipeline.steps.values()}
        self.known = Known(project, not project.no_remote, comments)
        self.code = StepCode(pipeline.root)
        self.files = {n: self.code.files(pipeline.steps[n]) for n in names}
        self.inputs: dict[str, str] = {}  # need.ref -> full experiment name
        for name in names:
            for need in pipeline.steps[name].needs:
                if not need.is_step and need.ref not in self.inputs:
                    self.inputs[need.ref] = self._resolve_input(name, need.ref)

    def _resolve_input(self, step: str, ref: str) -> str:
        ws = self.project.workspace
        try:
            return ws.resolve(ref)
        except ExperimentNotFound:
            pass
        except ExperimentError as e:
            raise PipelineError(f"step '{step}': {e}") from None
        names = [e.name for e in self.known.listing().values()]
        try:
            return ws.resolve(ref, names)
        except ExperimentNotFound:
            where = "locally or on the remote" if self.known.use_remote else "locally (no remote)"
            raise PipelineError(
                f"step '{step}' needs experiment '{ref}', which is not found {where}"
            ) from None
        except ExperimentError as e:
            raise PipelineError(f"step '{step}': {e}") from None

    def decide(self, step: Step, made: dict[str, str], forced: bool = False) -> Decision:
        """The step given ``made`` (step -> the experiment each upstream step has so far)."""
        needs = self.upstream(step, made)
        if needs is None:
            return Decision(step.name, forced=forced)
        info = self.info(step, needs)
        # Looked up even when forced: the status shows what a forced run replaces.
        return Decision(step.name, needs, info, self.known.find(info["fingerprint"]), forced)

    def upstream(self, step: Step, made: dict[str, str]) -> dict[str, str] | None:
        """key -> upstream experiment name, or None while an upstream step has none."""
        out = {}
        for need in step.needs:
            name = made.get(need.ref) if need.is_step else self.inputs[need.ref]
            if name is None:
                return None
            out[need.key] = name
        return out

    def info(self, step: Step, needs: dict[str, str]) -> dict[str, Any]:
        """The ``pipeline`` metadata of a run of ``step`` with these upstream experiments."""
        files = self.files[step.name]
        try:
            rel = self.pipeline.path.relative_to(self.project.config.root).as_posix()
        except ValueError:
            rel = str(self.pipeline.path)
        info: dict[str, Any] = {
            "step": step.name,
            "fingerprint": fingerprint(step, needs, files),
            "format": FINGERPRINT_FORMAT,
            "file": rel,
            "run": step.run,
            "params": step.params,
            "needs": dict(needs),
            "code": {"commit": self.commit},
            "files": files,
        }
        if step.env:
            info["env"] = step.env
        if step.deps:
            info["deps"] = step.deps
        return info

    def why(self, step: Step, info: dict[str, Any]) -> tuple[str, list[str]]:
        """("stale"|"missing", reasons) for a step with no up-to-date experiment."""
        last = self.known.latest(step.name)
        if last is None:
            return "missing", ["never run"]
        if last.status != "finished":
            return "stale", [f"last run {last.name} {last.status or 'has no status'}"]
        return "stale", changes(last.info, info) or ["fingerprint differs"]


def changes(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """What differs between a recorded step run and the current definition, in words."""
    out = []
    if old.get("run") != new.get("run"):
        out.append("run command changed")
    oldp, newp = old.get("params") or {}, new.get("params") or {}
    for key in sorted(set(oldp) | set(newp)):
        if (key in oldp) != (key in newp) or oldp.get(key) != newp.get(key):
            before = param_text(oldp[key]) if key in oldp else "unset"
            after = param_text(newp[key]) if key in newp else "unset"
            out.append(f"params.{key} {before} -> {after}")
    if (old.get("env") or {}) != (new.get("env") or {}):
        out.append("env changed")
    oldn, newn = old.get("needs") or {}, new.get("needs") or {}
    for key in sorted(set(oldn) | set(newn)):
        a, b = oldn.get(key), newn.get(key)
        if not a or not b or identity_of(str(a)) != identity_of(str(b)):
            out.append(f"upstream {key}: {a or 'none'} -> {b or 'none'}")
    if (old.get("deps") or []) != (new.get("deps") or []):
        out.append("deps changed")
    if old.get("format", 1) != new.get("format", 1):
        out.append("recorded by an earlier resutil, whose fingerprint covered the whole "
                   "repository (this step runs once more)")
        return out
    of, nf = old.get("files") or {}, new.get("files") or {}
    for path in sorted(set(of) | set(nf)):
        if path not in of:
            out.append(f"{path} added")
        elif path not in nf:
            out.append(f"{path} removed")
        elif of[path] != nf[path]:
            out.append(f"{path} changed")
    return out


def pipeline_status(
    project: Project, pipeline: Pipeline, targets: list[str] | tuple[str, ...] = (),
    force: list[str] | tuple[str, ...] = (),
) -> list[StepStatus]:
    """Each step's state and why, in order (also what ``run --dry-run`` shows)."""
    names = pipeline.closure(targets)
    pipeline.check_names(force)
    planner = Planner(project, pipeline, names)
    planner.known.listing()  # so "where" tells local from local-and-remote
    forced = pipeline.downstream(set(force))
    local = project.workspace.names()
    made: dict[str, str] = {}
    rows: list[StepStatus] = []
    for name in names:
        step = pipeline.steps[name]
        pulls = [planner.inputs[n.ref] for n in step.needs
                 if not n.is_step and planner.inputs[n.ref][:IDENTITY_LEN] not in local]
        d = planner.decide(step, made, name in forced)
        if d.needs is None:
            late = [u for u in step.upstream_steps if u not in made]
            last = planner.known.latest(name)
            reasons = [f"upstream step {late[0]} will run" if last else "never run"]
            if last is not None:  # and what changed in the step itself
                reasons += changes(last.info, {**planner.info(step, {}),
                                               "needs": last.info.get("needs")})
            rows.append(StepStatus(name, "stale" if last else "missing", reasons=reasons,
                                   pulls=pulls, forced=d.forced))
            continue
        if d.found is not None:
            if d.reuse is not None:
                made[name] = d.reuse.name
            reasons = []
            if name in force:
                reasons = ["forced"]
            elif d.forced:
                reasons = [f"upstream step {_first_forced(pipeline, name, force)} is forced"]
            rows.append(StepStatus(name, "up to date", d.found.name, d.found.where, reasons,
                                   d.forced, pulls))
            continue
        assert d.info is not None
        state, reasons = planner.why(step, d.info)
        rows.append(StepStatus(name, state, reasons=reasons, pulls=pulls, forced=d.forced))
    if planner.known.remote_error:
        for row in rows:
            row.reasons.append(f"remote not checked: {planner.known.remote_error}")
            break
    return rows


def _first_forced(pipeline: Pipeline, name: str, force: list[str] | tuple[str, ...]) -> str:
    for f in force:
        if name in pipeline.downstream({f}):
            return f
    return "?"
