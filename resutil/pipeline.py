"""``resutil-pipeline.yaml``: steps that become experiments, rerun only when they changed.

A step is up to date when a finished experiment carries its fingerprint: a hash of the
step's definition (``run``, ``params``, ``env``), the code (the committed tree and the
uncommitted changes to tracked files, the pipeline and config files left out, plus any
file named in ``run``) and the identities of its upstream experiments. Fingerprints live
in each experiment's metadata (``pipeline: {step, fingerprint, ...}``), so deciding needs
no hashing of results: local metadata heads and the remote's sidecars are enough.
"""

from __future__ import annotations

import hashlib
import json
import re
import shlex
import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from graphlib import CycleError, TopologicalSorter
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable

import yaml

from .config import read_yaml
from .errors import ExperimentError, ExperimentNotFound, PipelineError, ResutilError
from .metadata import (
    EXP_FILE, hash_file, read_meta, read_meta_text,
)
from .naming import NAME_IN_TEXT_RE, comment_problem, identity_of
from .project import Project

if TYPE_CHECKING:
    import networkx as nx

PIPELINE_FILE = "resutil-pipeline.yaml"
STEP_LOG = "resutil-step.log"  # the step's whole output, written by the runner
STEP_KEYS = ("run", "needs", "params", "env", "comment")
FINGERPRINT_FORMAT = 1
MAX_NAMED_FILE = 1 << 20  # files named in `run` are hashed only up to this size
# The decorator adopts the folder named here (decorator.ADOPT_ENV; not imported: the
# decorator is a front end, this is the library below it).
ADOPT_ENV = "RESUTIL_EXPERIMENT_DIR"

_STEP_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
_TOKEN_RE = re.compile(r"\{\{|\}\}|\{([^{}]*)\}")
# What an upstream experiment looks like when it is not a step: a name, or a bare prefix.
_EXP_LIKE_RE = re.compile(r"^[a-z]{6}(_[0-9T]*)?$")
_HEAD_STATUS_RE = re.compile(r"^status: ['\"]?(\w+)", re.M)
_Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


# -- the pipeline file ------------------------------------------------------------------------
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
        import networkx as nx

        g = nx.DiGraph(name="pipeline")
        for name, step in self.steps.items():
            label = name
            if step.params:
                label += "\n" + ", ".join(f"{k}={_text(v)}" for k, v in step.params.items())
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
        from .config import find_config_file

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
    return Step(name, run, needs, {str(k): v for k, v in params.items()},
                {str(k): str(v) for k, v in env.items()}, comment)


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


def _text(value: Any) -> str:
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
            value = _text(_lookup(params, key[7:]))
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
    from importlib import resources

    try:
        return (resources.files("resutil") / "templates" / PIPELINE_FILE).read_text("utf-8")
    except (FileNotFoundError, NotADirectoryError, ModuleNotFoundError):
        pass
    repo = Path(__file__).resolve().parents[1] / "templates" / PIPELINE_FILE
    try:
        return repo.read_text(encoding="utf-8")
    except OSError:
        raise PipelineError(f"the pipeline template is missing ({repo})") from None


# -- fingerprints -------------------------------------------------------------------------------
@dataclass(frozen=True)
class CodeState:
    """The code a step runs: HEAD, the committed tree, the uncommitted changes."""

    commit: str | None = None
    committed: str | None = None  # digest of HEAD's tree, the pipeline/config files left out
    uncommitted: str | None = None  # digest of `git diff HEAD` ("" when clean)

    @property
    def digest(self) -> str:
        return _sha(f"{self.committed}\0{self.uncommitted}")

    def as_dict(self) -> dict[str, Any]:
        return {"commit": self.commit, "committed": self.committed, "uncommitted": self.uncommitted}


def _git(args: list[str], cwd: Path) -> str | None:
    try:
        out = subprocess.run(["git", *args], cwd=cwd, capture_output=True, timeout=60, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.decode("utf-8", "surrogateescape") if out.returncode == 0 else None


def code_state(folder: Path, leave_out: Iterable[Path] = ()) -> CodeState:
    """The code fingerprint of the git work tree holding ``folder`` (empty without git).

    The files in ``leave_out`` (the pipeline file, the config) do not count: changing one
    step's params must not make every step stale, nor must committing that change.
    """
    top_text = _git(["rev-parse", "--show-toplevel"], folder)
    if not top_text:
        return CodeState()
    top = Path(top_text.strip())
    skip = set()
    for p in leave_out:
        try:
            skip.add(p.resolve().relative_to(top.resolve()).as_posix())
        except ValueError:
            pass
    head = _git(["rev-parse", "--verify", "-q", "HEAD"], top)
    commit = head.strip() if head else None
    paths = ["--", ".", *(f":(exclude){p}" for p in sorted(skip))]
    diff_args = ["diff", "--binary", "--no-color", "--no-ext-diff"]
    if commit:
        diff = _git([*diff_args, "HEAD", *paths], top)
        committed = _tree_digest(top, skip)
    else:  # no commit yet: what is staged, and the changes on top of it
        staged = _git(["ls-files", "-s", *paths], top) or ""
        diff = staged + (_git([*diff_args, *paths], top) or "")
        committed = None
    return CodeState(commit, committed, _sha(diff) if diff else "")


def _tree_digest(top: Path, skip: set[str]) -> str | None:
    """HEAD's tree without the ``skip`` paths, listing only the folders on their way."""
    on_path = {""}
    for p in skip:
        parts = p.split("/")
        on_path.update("/".join(parts[:i]) for i in range(1, len(parts)))
    h = hashlib.sha256()
    for d in sorted(on_path):
        out = _git(["ls-tree", "-z", "HEAD", *([d + "/"] if d else [])], top)
        if out is None:
            return None
        for entry in out.split("\0"):
            rel = entry.partition("\t")[2]
            if entry and rel not in skip and rel not in on_path:
                h.update(entry.encode("utf-8", "surrogateescape") + b"\n")
    return h.hexdigest()


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8", "surrogateescape")).hexdigest()[:32]


def named_files(step: Step, cwd: Path) -> dict[str, str]:
    """Content hashes of the (small) files the step's ``run`` names, e.g. its script.

    They count even when untracked or outside git, where the code state sees nothing.
    """
    try:
        tokens = shlex.split(step.run)
    except ValueError:
        tokens = step.run.split()
    out = {}
    for token in tokens:
        if "{" in token or token.startswith("-") or len(token) > 255:
            continue
        path = cwd / token
        try:
            if path.is_file() and path.stat().st_size <= MAX_NAMED_FILE:
                out[token] = hash_file(path)
        except OSError:
            continue
    return out


def fingerprint(step: Step, needs: dict[str, str], code: CodeState, files: dict[str, str]) -> str:
    """The step's fingerprint; ``needs`` maps each key to its upstream experiment's name."""
    payload = {
        "format": FINGERPRINT_FORMAT, "step": step.name, "run": step.run, "params": step.params,
        "env": step.env, "needs": {k: identity_of(v) for k, v in needs.items()},
        "code": code.digest, "files": files,
    }
    return _sha(json.dumps(payload, sort_keys=True, default=str, separators=(",", ":")))


# -- what exists: local heads and remote sidecars --------------------------------------------
@dataclass
class Candidate:
    """An experiment made by a pipeline step, as found locally or on the remote."""

    name: str
    status: str
    info: dict[str, Any]
    local: bool = False
    remote: bool = False

    @property
    def where(self) -> str:
        if self.local:
            return "local and remote" if self.remote else "local"
        return "remote"


def _local_head(folder: Path) -> tuple[str, dict[str, Any] | None]:
    """(status, pipeline info) read from the metadata head alone (no manifest, no full parse)."""
    try:  # (size-capped; a FIFO or folder of that name is refused, not waited on)
        head = read_meta_text(folder / EXP_FILE, with_manifest=False)
    except (OSError, ResutilError):
        return "", None
    m = _HEAD_STATUS_RE.search(head)
    status = m.group(1) if m else "finished"
    start = head.find("\npipeline:\n")
    if start < 0:
        return status, None
    lines = []
    for line in head[start + 1:].split("\n")[1:]:
        if line and not line.startswith(" "):
            break
        lines.append(line)
    try:
        info = (yaml.load("pipeline:\n" + "\n".join(lines), Loader=_Loader) or {}).get("pipeline")
    except yaml.YAMLError:
        try:
            info = read_meta(folder, with_manifest=False).pipeline
        except ResutilError:
            info = None  # broken metadata: not a candidate (and not our business here)
    return status, info if isinstance(info, dict) else None


class Known:
    """Every experiment a step made: by fingerprint and by step name.

    Local metadata is read at once; the remote (one listing, then sidecars) only when first
    needed. Of the remote-only experiments, sidecars already cached are read, and fetched
    only for experiments whose comment is one of the steps' (a step's experiment renamed
    since is then not found, and the step reruns: slower, never wrong).
    """

    def __init__(self, project: Project, use_remote: bool, comments: set[str]) -> None:
        self.project = project
        self.use_remote = use_remote
        self.comments = comments
        self.remote_error: str | None = None
        self.by_fp: dict[str, list[Candidate]] = {}
        self.by_step: dict[str, list[Candidate]] = {}
        self._local: dict[str, Candidate] = {}
        self._remote_listing: dict[str, Any] | None = None
        self._remote_loaded = False
        self._lock = threading.Lock()
        self._load_lock = threading.Lock()
        ws = project.workspace
        for ident, name in ws.names().items():
            status, info = _local_head(ws.path(name))
            if info and info.get("fingerprint"):
                self._add(ident, Candidate(name, status, info, local=True))

    def _add(self, ident: str, cand: Candidate) -> None:
        if cand.local:
            self._local[ident] = cand
        self.by_fp.setdefault(str(cand.info["fingerprint"]), []).append(cand)
        self.by_step.setdefault(str(cand.info.get("step")), []).append(cand)

    def listing(self) -> dict[str, Any]:
        """identity -> RemoteExperiment ({} without a remote or when it cannot be reached)."""
        with self._lock:
            if self._remote_listing is None:
                self._remote_listing = {}
                if self.use_remote:
                    try:
                        self._remote_listing = self.project.remote.experiments()
                    except ResutilError as e:
                        self.remote_error = str(e)
                        self.use_remote = False
                for ident in self._remote_listing:
                    if ident in self._local:
                        self._local[ident].remote = True
            return self._remote_listing

    def load_remote(self) -> None:
        """Add the remote-only step experiments (sidecars, fetched once then cached)."""
        listing = self.listing()
        with self._load_lock:
            if self._remote_loaded:
                return
            remote = self.project.remote
            sides: list[tuple[Any, dict[str, Any] | None]] = []
            todo = []
            for ident, exp in listing.items():
                if ident in self._local or exp.sidecar is None:
                    continue
                cached = remote.sidecar(exp, fetch=False)
                if cached is not None:
                    sides.append((exp, cached))
                elif exp.name[len(ident) + 1:] in self.comments:
                    todo.append(exp)
            with ThreadPoolExecutor(8) as pool:
                sides += zip(todo, pool.map(_safe_sidecar(remote), todo))
            for exp, side in sides:
                meta = (side or {}).get("meta") or {}
                info = meta.get("pipeline")
                if isinstance(info, dict) and info.get("fingerprint"):
                    status = str(meta.get("status") or "finished")
                    with self._lock:
                        self._add(exp.identity, Candidate(exp.name, status, info, remote=True))
            self._remote_loaded = True

    def find(self, fp: str) -> Candidate | None:
        """The newest finished experiment with this fingerprint; a local one first."""
        def best() -> Candidate | None:
            done = [c for c in self.by_fp.get(fp, ()) if c.status == "finished"]
            done.sort(key=lambda c: (c.local, c.name[:22]))
            return done[-1] if done else None

        found = best()
        if found is None or not found.local:
            self.load_remote()
            found = best()
        return found

    def latest(self, step: str) -> Candidate | None:
        """The newest experiment of a step, whatever its fingerprint (to say why it is stale)."""
        self.load_remote()
        cands = sorted(self.by_step.get(step, ()), key=lambda c: c.name[:22])
        return cands[-1] if cands else None


def _safe_sidecar(remote: Any) -> Callable[[Any], dict[str, Any] | None]:
    def one(exp: Any) -> dict[str, Any] | None:
        try:
            return remote.sidecar(exp)
        except ResutilError:
            return None

    return one


# -- status -----------------------------------------------------------------------------------
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


class _Context:
    """What deciding needs, computed once per command: code state, known experiments, inputs."""

    def __init__(self, project: Project, pipeline: Pipeline, names: list[str]) -> None:
        self.project = project
        self.pipeline = pipeline
        cfg = project.config
        self.code = code_state(pipeline.root, [pipeline.path, cfg.path])
        comments = {s.comment for s in pipeline.steps.values()}
        self.known = Known(project, not project.no_remote, comments)
        self.files = {n: named_files(pipeline.steps[n], pipeline.root) for n in names}
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
            "fingerprint": fingerprint(step, needs, self.code, files),
            "file": rel,
            "run": step.run,
            "params": step.params,
            "needs": dict(needs),
            "code": self.code.as_dict(),
            "files": files,
        }
        if step.env:
            info["env"] = step.env
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
        if oldp.get(key, _MISSING) != newp.get(key, _MISSING):
            before = _text(oldp[key]) if key in oldp else "unset"
            after = _text(newp[key]) if key in newp else "unset"
            out.append(f"params.{key} {before} -> {after}")
    if (old.get("env") or {}) != (new.get("env") or {}):
        out.append("env changed")
    oldn, newn = old.get("needs") or {}, new.get("needs") or {}
    for key in sorted(set(oldn) | set(newn)):
        a, b = oldn.get(key), newn.get(key)
        if not a or not b or identity_of(str(a)) != identity_of(str(b)):
            out.append(f"upstream {key}: {a or 'none'} -> {b or 'none'}")
    oc, nc = old.get("code") or {}, new.get("code") or {}
    if oc.get("committed") != nc.get("committed"):
        before, after = str(oc.get("commit"))[:8], str(nc.get("commit"))[:8]
        out.append(f"code changed (commit {before} -> {after})")
    if oc.get("uncommitted") != nc.get("uncommitted"):
        out.append("uncommitted changes differ")
    of, nf = old.get("files") or {}, new.get("files") or {}
    for path in sorted(set(of) | set(nf)):
        if of.get(path) != nf.get(path):
            out.append(f"{path} changed")
    return out


def pipeline_status(
    project: Project, pipeline: Pipeline, targets: list[str] | tuple[str, ...] = (),
    force: list[str] | tuple[str, ...] = (),
) -> list[StepStatus]:
    """Each step's state and why, in order (also what ``run --dry-run`` shows)."""
    names = pipeline.closure(targets)
    pipeline.check_names(force)
    ctx = _Context(project, pipeline, names)
    ctx.known.listing()  # so "where" tells local from local-and-remote
    forced = pipeline.downstream(set(force))
    local = project.workspace.names()
    made: dict[str, str] = {}
    rows: list[StepStatus] = []
    for name in names:
        step = pipeline.steps[name]
        pulls = [ctx.inputs[n.ref] for n in step.needs
                 if not n.is_step and ctx.inputs[n.ref][:22] not in local]
        needs = ctx.upstream(step, made)
        if needs is None:
            late = [u for u in step.upstream_steps if u not in made]
            stale = ctx.known.latest(name) is not None
            reasons = [f"upstream step {late[0]} will run" if stale else "never run"]
            rows.append(StepStatus(name, "stale" if stale else "missing", reasons=reasons,
                                   pulls=pulls, forced=name in forced))
            continue
        info = ctx.info(step, needs)
        found = ctx.known.find(info["fingerprint"])
        if found is not None:
            if name not in forced:
                made[name] = found.name
            reasons = []
            if name in force:
                reasons = ["forced"]
            elif name in forced:
                reasons = [f"upstream step {_first_forced(pipeline, name, force)} is forced"]
            rows.append(StepStatus(name, "up to date", found.name, found.where, reasons,
                                   name in forced, pulls))
            continue
        state, reasons = ctx.why(step, info)
        rows.append(StepStatus(name, state, reasons=reasons, pulls=pulls, forced=name in forced))
    if ctx.known.remote_error:
        for row in rows:
            row.reasons.append(f"remote not checked: {ctx.known.remote_error}")
            break
    return rows


def _first_forced(pipeline: Pipeline, name: str, force: list[str] | tuple[str, ...]) -> str:
    for f in force:
        if name in pipeline.downstream({f}):
            return f
    return "?"
