"""The pipeline file, ``resutil-pipeline.yaml``: its format, validation and placeholders.

A step has a ``run`` command, the ``needs`` it reads (other steps, or existing experiments
by name or prefix), ``params``, ``env``, ``deps`` (globs of files its result depends on
beyond the script and the modules it imports) and a ``comment`` (its experiments' label).
``load_pipeline`` checks the schema, the needs, cycles and placeholders and orders the
steps; ``expand`` turns a ``run`` template into the shell command of one run.
"""

from __future__ import annotations

import json
import re
import shlex
import sys
from dataclasses import dataclass, field
from graphlib import CycleError, TopologicalSorter
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..config import find_config_file, read_yaml
from ..errors import PipelineError, ResutilError
from ..naming import NAME_IN_TEXT_RE, comment_problem

if TYPE_CHECKING:
    import networkx as nx

PIPELINE_FILE = "resutil-pipeline.yaml"
STEP_KEYS = ("run", "needs", "params", "env", "comment", "deps")

_STEP_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
_TOKEN_RE = re.compile(r"\{\{|\}\}|\{([^{}]*)\}")
# What an upstream experiment looks like when it is not a step: a name, or a bare prefix.
_EXP_LIKE_RE = re.compile(r"^[a-z]{6}(_[0-9T]*)?$")


@dataclass
class Need:
    """One upstream of a step: another step, or an existing experiment (name or prefix)."""

    key: str
    ref: str
    is_step: bool


@dataclass
class Step:
    """One step of the pipeline file."""

    name: str
    run: str
    needs: list[Need] = field(default_factory=list)
    params: dict[str, Any] = field(default_factory=dict)
    env: dict[str, str] = field(default_factory=dict)
    comment: str = ""
    deps: list[str] = field(default_factory=list)  # globs, relative to the pipeline's folder

    @property
    def upstream_steps(self) -> list[str]:
        return [n.ref for n in self.needs if n.is_step]


@dataclass
class Pipeline:
    """A validated pipeline file; ``steps`` are in a topological order."""

    path: Path
    steps: dict[str, Step]

    @property
    def root(self) -> Path:
        """Steps run with this folder (the pipeline file's) as their working directory."""
        return self.path.parent

    def closure(self, targets: list[str] | tuple[str, ...] = ()) -> list[str]:
        """The named steps and everything upstream of them (all steps if none), in order."""
        if not targets:
            return list(self.steps)
        self.check_names(targets)
        keep: set[str] = set()
        todo = list(targets)
        while todo:
            name = todo.pop()
            if name not in keep:
                keep.add(name)
                todo.extend(self.steps[name].upstream_steps)
        return [s for s in self.steps if s in keep]

    def check_names(self, names: list[str] | tuple[str, ...]) -> None:
        for name in names:
            if name not in self.steps:
                raise PipelineError(
                    f"no step '{name}' in {self.path.name}; steps: {', '.join(self.steps)}"
                )

    def downstream(self, names: set[str]) -> set[str]:
        """``names`` and every step built from them."""
        out = set(names)
        for name, step in self.steps.items():  # topological order: one pass suffices
            if any(u in out for u in step.upstream_steps):
                out.add(name)
        return out

    def graph(self) -> nx.DiGraph:
        """The step DAG for graph_export: steps, input experiments, edges labelled by key."""
        import networkx as nx  # 0.1 s to import: only for drawing

        g = nx.DiGraph(name="pipeline")
        for name, step in self.steps.items():
            label = name
            if step.params:
                label += "\n" + ", ".join(f"{k}={param_text(v)}" for k, v in step.params.items())
            g.add_node(name, label=label, kind="step")
        for name, step in self.steps.items():
            for need in step.needs:
                src = need.ref if need.is_step else f"experiment:{need.ref}"
                if not need.is_step:
                    g.add_node(src, label=need.ref, kind="experiment")
                g.add_edge(src, name, **({"label": need.key} if need.key != need.ref else {}))
        return g


def find_pipeline_file(explicit: Path | None = None, start: Path | None = None) -> Path:
    """The pipeline file: ``explicit``, else the one here, else the one beside resutil-conf.yaml."""
    if explicit is not None:
        if not explicit.is_file():
            raise PipelineError(f"pipeline file {explicit} does not exist")
        return explicit.resolve()
    here = (start or Path.cwd()).resolve()
    candidates = [here / PIPELINE_FILE]
    try:
        candidates.append(find_config_file(here).parent / PIPELINE_FILE)
    except ResutilError:
        pass
    for path in candidates:
        if path.is_file():
            return path
    raise PipelineError(
        f"no {PIPELINE_FILE} in {here}; create one with 'resutil pipeline init' or pass --file"
    )


def load_pipeline(path: Path) -> Pipeline:
    """Read and validate a pipeline file (schema, needs, cycles, placeholders)."""
    data = read_yaml(path, PipelineError)
    if not isinstance(data, dict) or not isinstance(data.get("steps"), dict) or not data["steps"]:
        raise PipelineError(f"{path.name} needs a 'steps:' mapping with at least one step")
    unknown = [k for k in data if k not in ("steps", "version")]
    if unknown:
        raise PipelineError(f"unknown key '{unknown[0]}' in {path.name} (expected: steps)")
    steps = {str(name): _parse_step(str(name), body, path) for name, body in data["steps"].items()}
    for step in steps.values():
        for need in step.needs:
            if need.ref in steps:
                need.is_step = True
            elif not (_EXP_LIKE_RE.match(need.ref) or NAME_IN_TEXT_RE.search(need.ref)):
                raise PipelineError(
                    f"step '{step.name}' needs '{need.ref}', which is neither a step "
                    f"({', '.join(steps)}) nor an experiment name"
                )
        _check_placeholders(step)
    try:
        TopologicalSorter({n: s.upstream_steps for n, s in steps.items()}).prepare()
    except CycleError as e:
        cycle = list(reversed(e.args[1]))
        raise PipelineError(f"steps form a cycle: {' -> '.join(cycle)}") from None
    return Pipeline(path.resolve(), {n: steps[n] for n in _file_order(steps)})


def _file_order(steps: dict[str, Step]) -> list[str]:
    """A topological order that keeps the file's order where the needs allow it."""
    order: list[str] = []
    placed: set[str] = set()
    todo = list(steps)
    while todo:
        name = next(n for n in todo if all(u in placed for u in steps[n].upstream_steps))
        todo.remove(name)
        order.append(name)
        placed.add(name)
    return order


def _parse_step(name: str, body: Any, path: Path) -> Step:
    where = f"step '{name}' in {path.name}"
    if not _STEP_NAME_RE.match(name) or comment_problem(name):
        raise PipelineError(f"{where}: a step name uses letters, digits, '_', '.' and '-'")
    if isinstance(body, str):
        body = {"run": body}
    if not isinstance(body, dict):
        raise PipelineError(f"{where} must be a mapping with a 'run' command")
    for key in body:
        if key not in STEP_KEYS:
            raise PipelineError(f"{where}: unknown key '{key}' (allowed: {', '.join(STEP_KEYS)})")
    run = body.get("run")
    if not isinstance(run, str) or not run.strip():
        raise PipelineError(f"{where} has no 'run' command")
    raw_needs = body.get("needs") or {}
    if isinstance(raw_needs, list):
        raw_needs = {str(v): v for v in raw_needs}
    if not isinstance(raw_needs, dict):
        raise PipelineError(f"{where}: 'needs' maps names to steps or experiments")
    needs = [Need(str(k), str(v).rstrip("/").split("/")[-1], False) for k, v in raw_needs.items()]
    params = body.get("params") or {}
    env = body.get("env") or {}
    if not isinstance(params, dict) or not isinstance(env, dict):
        raise PipelineError(f"{where}: 'params' and 'env' are mappings")
    comment = str(body.get("comment", name))
    problem = comment_problem(comment)
    if problem:
        raise PipelineError(f"{where}: invalid comment: {problem}")
    deps = body.get("deps") or []
    if isinstance(deps, str):
        deps = [deps]
    if not isinstance(deps, list) or not all(isinstance(d, str) and d.strip() for d in deps):
        raise PipelineError(f"{where}: 'deps' is a list of file globs, e.g. [config/*.yaml]")
    if any(Path(d).is_absolute() for d in deps):
        raise PipelineError(f"{where}: 'deps' globs are relative to {path.name}'s folder")
    return Step(name, run, needs, {str(k): v for k, v in params.items()},
                {str(k): str(v) for k, v in env.items()}, comment, deps)


def _check_placeholders(step: Step) -> None:
    known = {"out", "step", "python", "params"}
    known |= {f"needs.{n.key}" for n in step.needs}
    for m in _TOKEN_RE.finditer(step.run):
        key = m.group(1)
        if key is None or key in known:
            continue
        if key.startswith("params.") and _lookup(step.params, key[7:]) is not _MISSING:
            continue
        raise PipelineError(
            f"step '{step.name}': unknown placeholder {{{key}}} in run; use {{out}}, {{step}}, "
            "{python}, {needs.KEY}, {params.KEY}, or {{ and }} for literal braces"
        )


_MISSING = object()


def _lookup(params: dict[str, Any], dotted: str) -> Any:
    value: Any = params
    for part in dotted.split("."):
        if not isinstance(value, dict) or part not in value:
            return _MISSING
        value = value[part]
    return value


def param_text(value: Any) -> str:
    """A parameter as it appears on a command line: strings as they are, the rest as JSON."""
    return value if isinstance(value, str) else json.dumps(value, default=str)


def expand(template: str, step: str, out: Path, needs: dict[str, Path], params: dict[str, Any],
           cwd: Path) -> str:
    """The shell command for ``template``: placeholders replaced by shell-quoted values."""

    def path(p: Path) -> str:
        try:
            return str(p.relative_to(cwd))
        except ValueError:
            return str(p)

    def sub(m: re.Match[str]) -> str:
        token = m.group(0)
        if token in ("{{", "}}"):
            return token[0]
        key = m.group(1)
        if key == "out":
            value = path(out)
        elif key == "step":
            value = step
        elif key == "python":
            value = sys.executable
        elif key == "params":
            value = json.dumps(params, sort_keys=True, default=str)
        elif key.startswith("needs."):
            value = path(needs[key[6:]])
        else:
            value = param_text(_lookup(params, key[7:]))
        return shlex.quote(value)

    return _TOKEN_RE.sub(sub, template)


def init_template(folder: Path, force: bool = False) -> Path:
    """Write the commented template pipeline file into ``folder``."""
    target = folder / PIPELINE_FILE
    if target.exists() and not force:
        raise PipelineError(f"{target} already exists; use --force to overwrite it")
    target.write_text(template_text(), encoding="utf-8")
    return target


def template_text() -> str:
    """The template, from the installed package, else from the repository (editable install)."""
    from importlib import resources  # 5 ms at import time, for `pipeline init` alone

    try:
        return (resources.files("resutil") / "templates" / PIPELINE_FILE).read_text("utf-8")
    except (FileNotFoundError, NotADirectoryError, ModuleNotFoundError):
        pass
    repo = Path(__file__).resolve().parents[2] / "templates" / PIPELINE_FILE
    try:
        return repo.read_text(encoding="utf-8")
    except OSError:
        raise PipelineError(f"the pipeline template is missing ({repo})") from None
