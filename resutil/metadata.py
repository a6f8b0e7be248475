"""``resutil-exp.yaml``: what an experiment is, where it came from, what it holds.

The 0.1.x keys (``args``, ``result_dir``, ``dependency``, ``git``) keep their meaning and
spelling; new keys sit beside them and unknown keys survive a rewrite. The manifest is
written last, one line per file, so readers that do not need it stop before it.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import errno
import json
import operator
import os
import pickle
import re
import stat
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .atomic import TMP_MARK, write_atomic
from .errors import ExperimentError
from .hashing import HASH_ALGORITHM, new_hasher
from .liveness import Owner
from .naming import identity_of, name_in_entry, parse_name
from .progress import NO_PROGRESS, Callback

EXP_FILE = "resutil-exp.yaml"
UNCOMMITTED_DIR = "uncommited_files"  # 0.1.x spelling, kept for compatibility
SCHEMA_VERSION = 2
STATUSES = ("running", "finished", "failed", "interrupted")
DEP_SOURCES = ("argv", "observed", "declared", "manual", "recorded")
_MANIFEST_MARK = "\nmanifest:\n"
_PLAIN_PATH = re.compile(r"[A-Za-z0-9_./ +=,@%-]*")  # needs no escaping inside "..."

# Local metadata is untrusted input: bounded before it is read or parsed. The part before
# the manifest (args, environment, ...) is a few KB; the manifest has one line per file.
MAX_HEAD_BYTES = 16 << 20
MAX_MANIFEST_BYTES = 1 << 30
MAX_NODES = 1_000_000  # YAML aliases can make a small file expand enormously
MAX_DEPTH = 100
_Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_Dumper = getattr(yaml, "CSafeDumper", yaml.SafeDumper)


class _Unusable(ValueError):
    """A value in the metadata that cannot be used; the message names the key."""


# Recorded (true) in an experiment made while the remote was off (RESUTIL_NO_REMOTE): it is
# local on purpose, so no "not pushed yet" reminder counts it. `resutil push` still can.
NO_REMOTE_KEY = "no_remote"


def hash_file(path: Path, bufsize: int = 256 << 10, callback: Callback = NO_PROGRESS) -> str:
    """The content hash of one file (``callback`` hears of every chunk read)."""
    h = new_hasher()
    with open(path, "rb", buffering=0) as f:
        buf = bytearray(bufsize)
        view = memoryview(buf)
        while n := f.readinto(buf):
            h.update(view[:n])
            callback.advance(n)
    return h.hexdigest()


@dataclass
class Manifest:
    """Relative path -> (size, content hash) for every file of an experiment."""

    files: dict[str, tuple[int, str]] = field(default_factory=dict)
    algorithm: str = HASH_ALGORITHM

    @property
    def total_size(self) -> int:
        return sum(size for size, _ in self.files.values())

    @property
    def digest(self) -> str:
        """One hash over all entries: the content identity of the experiment.

        Kept once taken (a push takes it for the metadata file and again for the sidecar:
        a sort and a hash of 20,000 entries), for as long as ``files`` is the same mapping
        of as many entries: nothing changes a manifest's entries in place."""
        return self._digest_of(None)

    def _digest_of(self, entries: list | None) -> str:
        kept = self.__dict__.get("_kept_digest")
        if kept is not None and kept[0] is self.files and kept[1] == len(self.files):
            return kept[2]
        value = _digest(sorted(self.files.items()) if entries is None else entries)
        self.__dict__["_kept_digest"] = (self.files, len(self.files), value)
        return value

    def to_text(self) -> str:
        """The YAML block for the manifest (flow entries, one line per file)."""
        entries = sorted(self.files.items())
        lines = [
            "manifest:",
            f"  algorithm: {self.algorithm}",
            f"  digest: '{self._digest_of(entries)}'",
            f"  count: {len(self.files)}",
            f"  total_size: {self.total_size}",
            "  files:" + ("" if self.files else " {}"),
        ]
        # One search over all paths (joined by a plain "/"): usually none needs escaping.
        if _PLAIN_PATH.fullmatch("/".join(p for p, _ in entries)):
            lines += [f'    "{path}": [{size}, \'{digest}\']' for path, (size, digest) in entries]
        else:
            for path, (size, digest) in entries:
                key = f'"{path}"' if _PLAIN_PATH.fullmatch(path) else json.dumps(path, ensure_ascii=False)
                lines.append(f"    {key}: [{size}, '{digest}']")
        return "\n".join(lines) + "\n"

    @classmethod
    def from_dict(cls, data: Any) -> Manifest | None:
        """The manifest of a parsed ``manifest:`` mapping; None when there is none or it is
        a summary without the file list (as in a sidecar).

        Raises ValueError naming what is wrong with any other shape."""
        if data is None or (isinstance(data, dict) and data.get("files") is None):
            return None
        if not isinstance(data, dict) or not isinstance(data["files"], dict):
            raise _Unusable("'manifest' must be a mapping with a 'files' mapping")
        files = {}
        for k, v in data["files"].items():
            if (not isinstance(k, str) or not isinstance(v, (list, tuple)) or len(v) != 2
                    or not _is_int(v[0]) or v[0] < 0 or not isinstance(v[1], str)):
                raise _Unusable("'manifest' has an entry that is not 'path: [size, hash]'")
            files[k] = (v[0], v[1])
        algorithm = data.get("algorithm", HASH_ALGORITHM)
        if not isinstance(algorithm, str):
            raise _Unusable("'manifest.algorithm' must be a string")
        return cls(files, algorithm)


def _digest(entries: list[tuple[str, tuple[int, str]]]) -> str:
    """``Manifest.digest`` of its sorted entries."""
    text = "".join(f"{p}\0{s}\0{d}\n" for p, (s, d) in entries)
    return new_hasher(text.encode()).hexdigest()


def compute_manifest(folder: Path, exclude: Iterable[str] = (EXP_FILE,)) -> Manifest:
    """Hash every file under ``folder`` (the metadata file itself is left out)."""
    skip = set(exclude)
    files = {}
    for rel, path in walk_files(folder):
        if rel in skip:
            continue
        files[rel] = (path.stat().st_size, hash_file(path))
    return Manifest(files)


def manifest_changes(folder: Path, manifest: Manifest, quick: bool = False) -> list[str]:
    """How a folder's files differ from its manifest ([] when intact): ``changed: p``,
    ``missing: p``, ``not in manifest: p``.

    ``quick`` hashes only files whose size matches and that were written around or after
    the metadata file (which is written after its manifest); older files of the right size
    are taken as recorded. That is what a push checks; ``verify`` hashes everything.
    """
    since = None
    if quick:
        try:
            # Two seconds of slack for file systems with coarse timestamps.
            since = (folder / EXP_FILE).stat().st_mtime_ns - 2_000_000_000
        except OSError:
            since = None
    problems = []
    seen = set()
    for rel, path, st in iter_files(folder):
        if rel == EXP_FILE or (rel.startswith(f".{EXP_FILE}{TMP_MARK}") and "/" not in rel):
            continue
        seen.add(rel)
        recorded = manifest.files.get(rel)
        if recorded is None:
            problems.append(f"not in manifest: {rel}")
        elif st.st_size != recorded[0]:
            problems.append(f"changed: {rel}")
        elif (since is None or st.st_mtime_ns >= since) and hash_file(Path(path)) != recorded[1]:
            problems.append(f"changed: {rel}")
    problems += [f"missing: {rel}" for rel in manifest.files if rel not in seen]
    return sorted(problems, key=lambda p: p.split(": ", 1)[1])


def scan_files(folder: Path) -> list[tuple[str, str, os.stat_result]]:
    """(relative posix path, path, stat) of every regular file (see ``iter_files``);
    a folder's files (by name) come before its subfolders (by name)."""
    return list(iter_files(folder))


def iter_files(folder: Path, refuse: Callable[[str, str], None] | None = None
               ) -> Iterator[tuple[str, str, os.stat_result]]:
    """``scan_files`` one file at a time.

    Nothing outside ``folder`` is ever read. A symbolic link stands for what it points to
    when that is inside ``folder``: a file is yielded under the link's relative path (with
    the path and stat of the file itself), a folder is walked under it. A link that points
    outside, dangles or would loop is not followed: ``refuse(rel, why)`` is called (it may
    raise; by default the link is left out).
    """
    return _walk(folder, refuse, True)  # type: ignore[return-value] - every file stated


def list_files(folder: Path, refuse: Callable[[str, str], None] | None = None
               ) -> Iterator[tuple[str, str, os.stat_result | None]]:
    """``iter_files`` without a stat of each regular file: (rel, path, None) for one (the
    directory entry's type says what it is), (rel, real path, stat) for a link's target.

    The archive's packers take a file's facts where they open it (see ``archive.build``).
    """
    return _walk(folder, refuse, False)


def _walk(folder: Path, refuse: Callable[[str, str], None] | None, stat_files: bool
          ) -> Iterator[tuple[str, str, os.stat_result | None]]:
    """The walk of ``iter_files`` (``stat_files``) and ``list_files`` (not)."""
    root = os.path.realpath(folder)
    stack = [(str(folder), "", root, (root,))]  # (path, rel prefix, real path, real chain)
    while stack:
        d, prefix, real, chain = stack.pop()
        with os.scandir(d) as it:
            entries = sorted(it, key=_NAME)
        subfolders = []
        for e in entries:
            if e.is_file(follow_symlinks=False):  # most entries: tested first
                yield (prefix + e.name, e.path,
                       e.stat(follow_symlinks=False) if stat_files else None)
            elif e.is_symlink():
                found = _follow(e.path, root, chain)
                if isinstance(found, str):
                    if refuse is not None:
                        refuse(prefix + e.name, found)
                elif found is not None:
                    target, st = found
                    if stat.S_ISDIR(st.st_mode):
                        subfolders.append((target, prefix + e.name + "/", target, chain + (target,)))
                    else:
                        yield prefix + e.name, target, st
            elif e.is_dir(follow_symlinks=False):
                sub = real + os.sep + e.name
                subfolders.append((e.path, prefix + e.name + "/", sub, chain + (sub,)))
        stack.extend(reversed(subfolders))


_NAME = operator.attrgetter("name")


def _follow(link: str, root: str, chain: tuple[str, ...]) -> tuple[str, os.stat_result] | str | None:
    """(real path, stat) of what a link inside ``root`` points to; why it is refused (a
    string) when that is outside, missing or a folder being walked; None for anything but
    a file or a folder (a socket, a device)."""
    target = os.path.realpath(link)
    if target != root and not target.startswith(root + os.sep):
        return f"points outside the experiment folder (to {target})"
    try:
        st = os.stat(target)
    except OSError:
        return "points to nothing (a dangling link)"
    if stat.S_ISDIR(st.st_mode):
        if any(target == c or c.startswith(target + os.sep) for c in chain):
            return "points to a folder that contains it (a loop)"
        return target, st
    return (target, st) if stat.S_ISREG(st.st_mode) else None


def walk_files(folder: Path) -> Iterator[tuple[str, Path]]:
    """(relative posix path, path) of every regular file, sorted (see ``iter_files``)."""
    for rel, path, _ in scan_files(folder):
        yield rel, Path(path)


@dataclass
class Dependency:
    """An upstream experiment and how the dependency was found."""

    name: str
    source: str = "recorded"
    manifest: str | None = None  # the upstream manifest digest when it was used
    run_id: str | None = None  # the upstream run, when it was recorded with one

    @property
    def identity(self) -> str:
        return identity_of(self.name)


@dataclass
class ExpMeta:
    """The content of ``resutil-exp.yaml``."""

    name: str = ""
    comment: str = ""
    run_id: str | None = None  # globally unique, from creation on; None for 0.1.x runs
    status: str = "finished"
    args: str = ""  # 0.1.x: the command line joined by spaces (kept for 0.1.x readers)
    argv: list[str] | None = None  # the command line as a list (what a rerun uses)
    result_dir: str = ""
    dependencies: list[Dependency] = field(default_factory=list)
    commit_hash: str | None = None
    uncommitted_files: list[str] = field(default_factory=list)
    # Code the run used that git does not track (its script, modules it imported), copied
    # into uncommited_files/ like the changed tracked files.
    untracked_files: list[str] = field(default_factory=list)
    workdir: str | None = None  # the working directory, relative to the git work tree
    started_at: str | None = None
    ended_at: str | None = None
    environment: dict[str, Any] = field(default_factory=dict)
    pipeline: dict[str, Any] | None = None
    process: Owner | None = None  # the process that runs it (tells a dead 'running' one)
    manifest: Manifest | None = None
    schema_version: int = SCHEMA_VERSION
    extra: dict[str, Any] = field(default_factory=dict)

    def set_name(self, name: str) -> None:
        """Take the name (and so the comment) the folder or archive is known by now."""
        self.name = name
        parsed = parse_name(name)
        if parsed is not None:
            self.comment = parsed.comment

    def add_dependency(self, name: str, source: str, manifest: str | None = None,
                       run_id: str | None = None) -> bool:
        """Record an upstream experiment once (by identity); True if it was new."""
        ident = identity_of(name)
        for dep in self.dependencies:
            if dep.identity == ident:
                return False
        self.dependencies.append(Dependency(name, source, manifest, run_id))
        return True

    # -- (de)serialisation ---------------------------------------------------------------
    def head_dict(self) -> dict[str, Any]:
        """Every key but the manifest, 0.1.x keys first."""
        git: dict[str, Any] = {"commit_hash": self.commit_hash,
                               "uncommited_files": self.uncommitted_files}
        if self.untracked_files:
            git["untracked_files"] = self.untracked_files
        if self.workdir is not None:
            git["workdir"] = self.workdir
        d: dict[str, Any] = {
            "args": self.args,
            **({"argv": list(self.argv)} if self.argv is not None else {}),
            "result_dir": self.result_dir,
            "dependency": [dep.name for dep in self.dependencies],
            "git": git,
            "schema_version": self.schema_version,
            "name": self.name,
            "run_id": self.run_id,
            "comment": self.comment,
            "status": self.status,
            "started_at": self.started_at,
            "ended_at": self.ended_at,
            "dependency_sources": [
                {"name": dep.name, "source": dep.source, "manifest": dep.manifest,
                 **({"run_id": dep.run_id} if dep.run_id else {})}
                for dep in self.dependencies
            ],
            "environment": self.environment,
        }
        if self.pipeline:
            d["pipeline"] = self.pipeline
        if self.process:
            d["process"] = self.process.to_dict()
        d.update(self.extra)
        return d

    def to_text(self) -> str:
        head = self.head_dict()
        env = head.get("environment")
        if not env:
            text = _dump(head)
        else:
            # The environment (hundreds of package versions) is most of the head and the
            # same for every run of a sweep: its YAML block is made once. Top-level keys
            # dump independently, so the pieces join into what one dump writes.
            keys = list(head)
            at = keys.index("environment")
            rest = {k: head[k] for k in keys[at + 1:]}
            text = (_dump({k: head[k] for k in keys[:at]}) + _environment_text(env)
                    + (_dump(rest) if rest else ""))
        return text + (self.manifest.to_text() if self.manifest else "")

    @classmethod
    def from_dict(cls, data: Any, manifest: Manifest | None = None,
                  where: str = "experiment metadata") -> ExpMeta:
        """Metadata from a parsed mapping; ExperimentError naming ``where`` and the key on any
        shape it cannot use. The only coercions are those that cannot change the meaning:
        an empty value is the default, a YAML timestamp is its ISO text, a lone dependency
        is a list of one."""
        try:
            return cls._from_dict(data, manifest)
        except _Unusable as e:
            raise ExperimentError(f"{where}: {e}; fix it by hand") from None

    @classmethod
    def _from_dict(cls, data: Any, manifest: Manifest | None) -> ExpMeta:
        if not isinstance(data, dict):
            raise _Unusable(f"the content is {_kind(data)}, not a mapping of keys to values")
        _check_shape({k: v for k, v in data.items() if k != "manifest"})
        known = {
            "args", "argv", "result_dir", "dependency", "git", "schema_version", "name", "run_id",
            "comment",
            "status", "started_at", "ended_at", "dependency_sources", "environment", "pipeline",
            "manifest", "process",
        }
        git = _mapping(data, "git")
        deps: list[Dependency] = []
        sources = {}
        for item in _list(data, "dependency_sources"):
            if not isinstance(item, dict):
                raise _Unusable(f"'dependency_sources' holds {_kind(item)}, not a mapping")
            src_name = _text(item, "name", "dependency_sources.name")
            source = _text(item, "source", "dependency_sources.source") or "recorded"
            digest = _text(item, "manifest", "dependency_sources.manifest", None)
            with contextlib.suppress(ExperimentError):  # not a name: nothing refers to it
                sources[identity_of(src_name)] = (source, digest, _opt_str(item.get("run_id")))
        seen = set()
        entries = data.get("dependency")
        if isinstance(entries, str):
            entries = [entries]  # one dependency written without the list around it
        for entry in _list({"dependency": entries}, "dependency"):
            if not isinstance(entry, str):
                raise _Unusable(f"'dependency' holds {_kind(entry)}, not an experiment name")
            try:
                ident = identity_of(entry)
            except ExperimentError:
                continue  # 0.1.x `add -d` stored whatever was typed
            if ident in seen:
                continue
            seen.add(ident)
            source, digest, run_id = sources.get(ident, ("recorded", None, None))
            deps.append(Dependency(name_in_entry(entry), source, digest, run_id))
        uncommitted = _list(git, "uncommited_files", "git.uncommited_files")
        if not all(isinstance(f, str) for f in uncommitted):
            raise _Unusable("'git.uncommited_files' must be a list of file names")
        untracked = _list(git, "untracked_files", "git.untracked_files")
        if not all(isinstance(f, str) for f in untracked):
            raise _Unusable("'git.untracked_files' must be a list of file names")
        argv = data.get("argv")
        if argv is not None and not (isinstance(argv, list)
                                     and all(isinstance(a, str) for a in argv)):
            raise _Unusable(f"'argv' is {_kind(argv)}, not a list of strings")
        version = data.get("schema_version")
        if isinstance(version, str) and version.isdigit():
            version = int(version)
        if version is not None and not _is_int(version):
            raise _Unusable(f"'schema_version' is {_kind(version)}, not a whole number")
        pipeline = data.get("pipeline")
        if pipeline is not None and not isinstance(pipeline, dict):
            raise _Unusable(f"'pipeline' is {_kind(pipeline)}, not a mapping")
        return cls(
            name=_text(data, "name"),
            run_id=_opt_str(data.get("run_id")),
            comment=_text(data, "comment"),
            status=_text(data, "status") or "finished",
            args=_text(data, "args"),
            argv=list(argv) if argv is not None else None,
            result_dir=_text(data, "result_dir"),
            dependencies=deps,
            commit_hash=_text(git, "commit_hash", "git.commit_hash", None),
            uncommitted_files=list(uncommitted),
            untracked_files=list(untracked),
            workdir=_text(git, "workdir", "git.workdir", None),
            started_at=_text(data, "started_at", default=None),
            ended_at=_text(data, "ended_at", default=None),
            environment=dict(_mapping(data, "environment")),
            pipeline=pipeline or None,
            process=Owner.from_dict(data.get("process")),
            manifest=manifest or Manifest.from_dict(data.get("manifest")),
            schema_version=version or 1,
            extra={k: v for k, v in data.items() if k not in known},
        )


def _dump(data: dict[str, Any]) -> str:
    return yaml.dump(data, Dumper=_Dumper, sort_keys=False, allow_unicode=True, width=10000)


_ENV_TEXTS: dict[str, str] = {}  # repr of an environment -> its YAML block


def _environment_text(env: dict[str, Any]) -> str:
    key = repr(env)
    text = _ENV_TEXTS.get(key)
    if text is None:
        text = _dump({"environment": env})
        if len(_ENV_TEXTS) >= 64:
            _ENV_TEXTS.clear()
        _ENV_TEXTS[key] = text
    return text


def _opt_str(value: Any) -> str | None:
    return str(value) if isinstance(value, (str, int)) and value != "" else None


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _kind(v: Any) -> str:
    """How a wrong value is named in an error: its YAML kind, not Python's."""
    if isinstance(v, dict):
        return "a mapping"
    if isinstance(v, (list, tuple, set)):
        return "a list"
    if isinstance(v, bool):
        return "true/false"
    if isinstance(v, (int, float)):
        return "a number"
    if isinstance(v, (dt.date, dt.datetime)):
        return "a date"
    if isinstance(v, bytes):
        return "binary data"
    return "a string" if isinstance(v, str) else "empty"


def _text(d: dict[str, Any], key: str, label: str | None = None, default: Any = "") -> Any:
    v = d.get(key)
    if v is None or v == "":
        return default
    if isinstance(v, str):
        return v
    if isinstance(v, (dt.datetime, dt.date)):  # an unquoted timestamp
        return v.isoformat()
    hint = " (quote it)" if isinstance(v, (int, float)) else ""
    raise _Unusable(f"'{label or key}' is {_kind(v)}, not a string{hint}")


def _mapping(d: dict[str, Any], key: str, label: str | None = None) -> dict[str, Any]:
    v = d.get(key)
    if v is None:
        return {}
    if not isinstance(v, dict):
        raise _Unusable(f"'{label or key}' is {_kind(v)}, not a mapping")
    return v


def _list(d: dict[str, Any], key: str, label: str | None = None) -> list[Any]:
    v = d.get(key)
    if v is None:
        return []
    if not isinstance(v, list):
        raise _Unusable(f"'{label or key}' is {_kind(v)}, not a list")
    return v


def _check_shape(root: Any) -> None:
    """Refuse parsed YAML that refers to itself, nests deeper than MAX_DEPTH or, with every
    alias expanded, has more than MAX_NODES values. (Recursive, but never deeper than
    MAX_DEPTH; mapping keys are scalars, since YAML's unhashable keys do not load.)"""
    done: dict[int, int] = {}  # id -> expanded size of a container already walked
    active: set[int] = set()
    containers = (dict, list, set, tuple)

    def size(node: Any, depth: int) -> int:
        key = id(node)
        if key in done:
            return done[key]
        if key in active:
            raise _Unusable("it refers to itself (a YAML alias inside its own anchor)")
        if depth > MAX_DEPTH:
            raise _Unusable(f"it nests deeper than {MAX_DEPTH} levels")
        active.add(key)
        n = 1 + (len(node) if isinstance(node, dict) else 0)
        for child in node.values() if isinstance(node, dict) else node:
            n += size(child, depth + 1) if isinstance(child, containers) else 1
            if n > MAX_NODES:
                raise _Unusable(f"it expands to more than {MAX_NODES} values (YAML aliases)")
        active.discard(key)
        done[key] = n
        return n

    if isinstance(root, containers):
        size(root, 1)


def parse_meta(text: str, with_manifest: bool = True,
               where: str = "experiment metadata") -> ExpMeta:
    """Parse the text of a ``resutil-exp.yaml``; ExperimentError naming ``where`` on
    anything that is not usable metadata."""
    data, manifest = _parse_text(text, with_manifest, where)
    return ExpMeta.from_dict(data, manifest, where)


def _parse_text(text: str, with_manifest: bool, where: str, head_known: bool = False
                ) -> tuple[Any, Manifest | None]:
    """(the YAML mapping of the head, the manifest) of a metadata file's text; with
    ``head_known`` only the manifest is parsed (the mapping is None)."""
    head, sep, tail = text.partition(_MANIFEST_MARK)
    try:
        data = None if head_known else yaml.load(head if sep else text, Loader=_Loader)
        manifest = _parse_manifest_block(tail) if sep and with_manifest else None
        if head_known:
            return None, manifest
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        line = f" (line {mark.line + 1})" if mark else ""
        raise ExperimentError(f"{where} is not valid YAML{line}; fix it by hand") from None
    except _Unusable as e:
        raise ExperimentError(f"{where}: {e}; fix it by hand") from None
    except (ValueError, RecursionError):  # e.g. a number too long to convert, deep nesting
        raise ExperimentError(f"{where} is not usable metadata; fix it by hand") from None
    return {} if data is None else data, manifest


def _parse_manifest_block(tail: str) -> Manifest | None:
    # Fast path for the layout to_text() writes; anything else goes through YAML.
    files: dict[str, tuple[int, str]] = {}
    algorithm = HASH_ALGORITHM
    try:
        lines = tail.splitlines()
        for line in lines:
            if line.startswith("    "):
                key, _, value = line.strip().rpartition(": [")
                size, digest = value.rstrip("]").split(", ")
                path = json.loads(key)
                if not isinstance(path, str) or int(size) < 0:
                    raise ValueError("not a manifest entry")
                files[path] = (int(size), digest.strip("'\""))
            elif line.startswith("  algorithm:"):
                algorithm = line.split(":", 1)[1].strip()
            elif line.startswith("  files:") and line[8:].strip() not in ("", "{}"):
                raise ValueError("files written in another layout")
            elif line and not line.startswith("  "):
                raise ValueError("more keys after the manifest")
        return Manifest(files, algorithm)
    except (ValueError, RecursionError):
        data = yaml.load("manifest:\n" + tail, Loader=_Loader)
        if not isinstance(data, dict):
            raise _Unusable("'manifest' is not a mapping") from None
        return Manifest.from_dict(data.get("manifest"))


def read_meta(folder: Path, with_manifest: bool = True) -> ExpMeta:
    """The metadata of an experiment folder (a bare one if the file is missing).

    ExperimentError naming the file when it cannot be read or used. A head read before in
    this process with the very same text is not parsed again (a push of many experiments
    asks several times); the caller gets its own copy all the same."""
    path = folder / EXP_FILE
    try:
        text = read_meta_text(path, with_manifest)
    except FileNotFoundError:
        return ExpMeta(name=folder.name, status="finished", result_dir=str(folder))
    where = str(path)
    # (a read without the manifest keeps the newline before it: the same head either way;
    # trailing newlines change nothing YAML reads)
    head = text.partition(_MANIFEST_MARK)[0].rstrip("\n")
    known = _PARSED.get(where)
    if known is not None and known[0] == head:
        _, manifest = _parse_text(text, with_manifest, where, head_known=True)
        data = pickle.loads(known[1])
    else:
        data, manifest = _parse_text(text, with_manifest, where)
        blob = pickle.dumps(data)  # (before the caller can change what it shares)
        if len(_PARSED) >= MAX_PARSED:
            _PARSED.clear()
        _PARSED[where] = (head, blob)
    meta = ExpMeta.from_dict(data, manifest, where)
    meta.set_name(folder.name)  # the folder name is the authority (comment may have changed)
    return meta


# Heads of metadata files parsed in this process: path -> (head text, pickled YAML mapping).
_PARSED: dict[str, tuple[str, bytes]] = {}
MAX_PARSED = 4096


# The newline before a top-level key (or the document's end); a literal first, so fast.
_TOP_KEY = re.compile(r"\n(?=[^\s#-])")


def read_head(folder: Path, skip_environment: bool = True, keys: Iterable[str] | None = None,
              require: str | None = None, manifest: bool = False) -> ExpMeta | None:
    """An experiment folder's metadata without its manifest, read fast: for scanning many
    folders (the lineage index, the pipeline's known runs, what a push skips).

    ``skip_environment`` cuts the ``environment`` block (hundreds of package versions, most
    of the head) out of the text before parsing; ``keys`` keeps only these top-level keys
    (the others keep their defaults). With ``require``, a head without that top-level key
    is not parsed at all: None. ``manifest`` reads the manifest too. A head that does not
    parse this way goes through ``read_meta``; ExperimentError naming the file when the
    metadata cannot be used. Never write back what this returns: it lacks what it skipped.
    """
    files = None
    try:
        text = "\n" + read_meta_text(folder / EXP_FILE, with_manifest=manifest)
    except FileNotFoundError:
        return None if require is not None else read_meta(folder, with_manifest=manifest)
    if manifest:
        text, sep, tail = text.partition(_MANIFEST_MARK)
        text += "\n"
        if sep:
            try:
                files = _parse_manifest_block(tail)
            except (ValueError, yaml.YAMLError, _Unusable, RecursionError):
                return read_meta(folder)  # the whole file decides
    if require is not None and f"\n{require}:" not in text:
        return None
    if keys is not None:
        wanted = tuple(f"{k}:" for k in keys)
        starts = [m.end() for m in _TOP_KEY.finditer(text)] + [len(text)]
        text = text[:starts[0]] + "".join(
            text[a:b] for a, b in zip(starts, starts[1:]) if text.startswith(wanted, a)
        )
    elif skip_environment:
        # (not at the very start: resutil writes it after other keys; a file that begins
        # with it was not written by resutil and is parsed whole, checks and all)
        start = text.find("\nenvironment:", 1)
        if start >= 0:
            nxt = _TOP_KEY.search(text, start + 1)
            text = text[: start + 1] + (text[nxt.end():] if nxt else "")
    try:
        meta = parse_meta(text, with_manifest=False, where=str(folder / EXP_FILE))
    except ExperimentError:
        return read_meta(folder, with_manifest=manifest)  # the whole head decides
    meta.manifest = files
    meta.set_name(folder.name)
    return meta


def read_meta_text(path: Path, with_manifest: bool = True) -> str:
    """The text of a metadata file, read with a size cap; without ``with_manifest`` only
    the part before the manifest is read. FileNotFoundError when it does not exist;
    ExperimentError naming the file when it cannot be read, is too large or is not text."""
    return _read_capped(path, MAX_MANIFEST_BYTES if with_manifest else 0, strict=True)


def _read_capped(path: Path, after_mark: int, strict: bool) -> str:
    """Up to MAX_HEAD_BYTES before the manifest mark and ``after_mark`` bytes after it
    (more: ExperimentError if ``strict``, else cut off)."""
    mark = _MANIFEST_MARK.encode()
    fd = -1
    try:
        # Non-blocking: a FIFO named like the metadata file must not hang every command.
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
        st = os.fstat(fd)
        mode = st.st_mode
    except FileNotFoundError:
        raise
    except IsADirectoryError:
        mode = stat.S_IFDIR
    except OSError as e:
        if fd >= 0:
            os.close(fd)
        raise ExperimentError(f"cannot read {path}: {e.strerror or e}") from None
    if not stat.S_ISREG(mode):
        if fd >= 0:
            os.close(fd)
        what = "a folder" if stat.S_ISDIR(mode) else "a special file"
        raise ExperimentError(f"{path} is {what}, not a metadata file; remove it")
    buf = bytearray()
    limit = MAX_HEAD_BYTES + len(mark)
    cut = -1
    try:
        while True:
            # One read for a usual file (a few KB); large ones in 1 MiB steps.
            want = min(max(st.st_size - len(buf) + 1, 64 << 10), 1 << 20, limit - len(buf) + 1)
            chunk = os.read(fd, want)
            if not chunk:
                break
            searched = max(0, len(buf) - len(mark) + 1)
            buf += chunk
            if cut < 0:
                cut = buf.find(mark, searched)
                if cut >= 0:
                    if not after_mark:
                        del buf[cut + 1:]  # keep the newline that ends the head
                        break
                    limit = cut + len(mark) + after_mark
            if len(buf) > limit:
                if cut < 0 or strict:
                    raise ExperimentError(
                        f"{path} is larger than resutil reads "
                        f"({(MAX_HEAD_BYTES if cut < 0 else limit) >> 20} MiB); fix or remove it"
                    )
                del buf[limit:]
                break
    except OSError as e:
        raise ExperimentError(f"cannot read {path}: {e.strerror or e}") from None
    finally:
        os.close(fd)
    try:
        return buf.decode("utf-8")
    except UnicodeDecodeError as e:
        if not strict and e.start >= len(buf) - 3:  # cut inside a character
            return buf[:e.start].decode("utf-8")
        raise ExperimentError(f"{path} is not UTF-8 text (binary data?); fix or remove it") from None


class MetaWriteError(OSError, ExperimentError):
    """Writing a metadata file failed (a full disk, permissions). An OSError still, for
    callers that handle those, and a ResutilError, so that a command reports it in one line.
    ``filename`` stays unset: the file is named in the message and in ``path``."""

    def __init__(self, path: Path, e: OSError) -> None:
        super().__init__(e.errno, e.strerror)
        self.path = path

    def __str__(self) -> str:
        hint = ("; free some space on that disk and try again"
                if self.errno in (errno.ENOSPC, errno.EDQUOT) else "")
        return f"cannot write {self.path}: {self.strerror}{hint}"


def write_meta(folder: Path, meta: ExpMeta, unless_same: bool = False) -> bytes:
    """Write ``resutil-exp.yaml`` atomically; returns the bytes written. MetaWriteError
    when that fails; nothing is changed then. ``unless_same``: a file that holds these
    very bytes already is left as it is (a push of an unchanged experiment writes
    nothing)."""
    path = folder / EXP_FILE
    data = meta.to_text().encode("utf-8")
    if unless_same and _holds(path, data):
        return data
    try:
        write_atomic(path, data)
    except MetaWriteError:
        raise
    except OSError as e:
        raise MetaWriteError(path, e) from None
    return data


def _holds(path: Path, data: bytes) -> bool:
    try:
        with open(path, "rb") as f:
            return f.read(len(data) + 1) == data
    except OSError:
        return False


def manifest_digest(folder: Path) -> str | None:
    """The manifest digest of an experiment folder, read without parsing the file list."""
    return upstream_record(folder)["manifest"]


def upstream_record(folder: Path) -> dict[str, str | None]:
    """What a downstream experiment records of an upstream folder: its manifest digest and
    its run id (``add_dependency(name, source, **upstream_record(folder))``), read without
    parsing the file list."""
    record: dict[str, str | None] = {"manifest": None, "run_id": None}
    try:
        text = _read_capped(folder / EXP_FILE, 4096, strict=False)
    except (OSError, ExperimentError):
        return record
    head, sep, tail = text.partition(_MANIFEST_MARK)
    for line in head.splitlines():
        if line.startswith("run_id:"):
            value = line.split(":", 1)[1].strip().strip("'\"")
            record["run_id"] = value if value not in ("", "null", "~") else None
            break
    for line in tail.splitlines()[:6] if sep else ():
        if line.startswith("  digest:"):
            record["manifest"] = line.split(":", 1)[1].strip().strip("'\"")
    return record
