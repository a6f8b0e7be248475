"""``resutil-exp.yaml``: what an experiment is, where it came from, what it holds.

The 0.1.x keys (``args``, ``result_dir``, ``dependency``, ``git``) keep their meaning and
spelling; new keys sit beside them and unknown keys survive a rewrite. The manifest is
written last, one line per file, so readers that do not need it stop before it.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator

import yaml

from .errors import ExperimentError
from .hashing import HASH_ALGORITHM, new_hasher
from .liveness import Owner
from .naming import NAME_IN_TEXT_RE, identity_of, parse_name

EXP_FILE = "resutil-exp.yaml"
UNCOMMITTED_DIR = "uncommited_files"  # 0.1.x spelling, kept for compatibility
SCHEMA_VERSION = 2
STATUSES = ("running", "finished", "failed", "interrupted")
DEP_SOURCES = ("argv", "observed", "declared", "manual", "recorded")
_MANIFEST_MARK = "\nmanifest:\n"
_PLAIN_PATH = re.compile(r"[A-Za-z0-9_./ +=,@%-]*")  # needs no escaping inside "..."

_Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_Dumper = getattr(yaml, "CSafeDumper", yaml.SafeDumper)


def hash_file(path: Path, bufsize: int = 256 << 10) -> str:
    """The content hash of one file."""
    h = new_hasher()
    with open(path, "rb", buffering=0) as f:
        buf = bytearray(bufsize)
        view = memoryview(buf)
        while n := f.readinto(buf):
            h.update(view[:n])
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
        """One hash over all entries: the content identity of the experiment."""
        text = "".join(f"{p}\0{s}\0{d}\n" for p, (s, d) in sorted(self.files.items()))
        return new_hasher(text.encode()).hexdigest()

    def to_text(self) -> str:
        """The YAML block for the manifest (flow entries, one line per file)."""
        lines = [
            "manifest:",
            f"  algorithm: {self.algorithm}",
            f"  digest: '{self.digest}'",
            f"  count: {len(self.files)}",
            f"  total_size: {self.total_size}",
            "  files:" + ("" if self.files else " {}"),
        ]
        for path, (size, digest) in sorted(self.files.items()):
            key = f'"{path}"' if _PLAIN_PATH.fullmatch(path) else json.dumps(path, ensure_ascii=False)
            lines.append(f"    {key}: [{size}, '{digest}']")
        return "\n".join(lines) + "\n"

    @classmethod
    def from_dict(cls, data: Any) -> Manifest | None:
        if not isinstance(data, dict) or not isinstance(data.get("files"), dict):
            return None
        files = {str(k): (int(v[0]), str(v[1])) for k, v in data["files"].items()}
        return cls(files, str(data.get("algorithm", HASH_ALGORITHM)))


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
        if rel == EXP_FILE or (rel.startswith(f".{EXP_FILE}.tmp") and "/" not in rel):
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
    """(relative posix path, path, stat) of every regular file, dir links not followed;
    a folder's files (by name) come before its subfolders (by name)."""
    return list(iter_files(folder))


def iter_files(folder: Path) -> Iterator[tuple[str, str, os.stat_result]]:
    """``scan_files`` one file at a time."""
    stack = [(str(folder), "")]
    while stack:
        d, prefix = stack.pop()
        with os.scandir(d) as it:
            entries = sorted(it, key=lambda e: e.name)
        subfolders = []
        for e in entries:
            if e.is_dir(follow_symlinks=False):
                subfolders.append((e.path, prefix + e.name + "/"))
            elif e.is_file():
                yield prefix + e.name, e.path, e.stat()
        stack.extend(reversed(subfolders))


def walk_files(folder: Path) -> Iterator[tuple[str, Path]]:
    """(relative posix path, path) of every regular file, sorted, not following dir links."""
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
    args: str = ""
    result_dir: str = ""
    dependencies: list[Dependency] = field(default_factory=list)
    commit_hash: str | None = None
    uncommitted_files: list[str] = field(default_factory=list)
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
        d: dict[str, Any] = {
            "args": self.args,
            "result_dir": self.result_dir,
            "dependency": [dep.name for dep in self.dependencies],
            "git": {"commit_hash": self.commit_hash, "uncommited_files": self.uncommitted_files},
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
        head = yaml.dump(
            self.head_dict(), Dumper=_Dumper, sort_keys=False, allow_unicode=True, width=10000
        )
        return head + (self.manifest.to_text() if self.manifest else "")

    @classmethod
    def from_dict(cls, data: dict[str, Any], manifest: Manifest | None = None) -> ExpMeta:
        known = {
            "args", "result_dir", "dependency", "git", "schema_version", "name", "run_id", "comment",
            "status", "started_at", "ended_at", "dependency_sources", "environment", "pipeline",
            "manifest", "process",
        }
        git = data.get("git") or {}
        deps: list[Dependency] = []
        sources = {}
        for item in data.get("dependency_sources") or []:
            if isinstance(item, dict) and item.get("name"):
                sources[identity_of(str(item["name"]))] = item
        seen = set()
        for entry in data.get("dependency") or []:
            try:
                ident = identity_of(str(entry))
            except ExperimentError:
                continue  # 0.1.x `add -d` stored whatever was typed
            if ident in seen:
                continue
            seen.add(ident)
            src = sources.get(ident, {})
            found = NAME_IN_TEXT_RE.search(str(entry))  # 0.1.x wrote results/<name>
            name = found.group(0) if found else str(entry)
            deps.append(Dependency(name, str(src.get("source", "recorded")), src.get("manifest"),
                                   _opt_str(src.get("run_id"))))
        return cls(
            name=str(data.get("name") or ""),
            run_id=_opt_str(data.get("run_id")),
            comment=str(data.get("comment") or ""),
            status=str(data.get("status") or "finished"),
            args=str(data.get("args") or ""),
            result_dir=str(data.get("result_dir") or ""),
            dependencies=deps,
            commit_hash=git.get("commit_hash"),
            uncommitted_files=list(git.get("uncommited_files") or []),
            started_at=data.get("started_at"),
            ended_at=data.get("ended_at"),
            environment=dict(data.get("environment") or {}),
            pipeline=data.get("pipeline"),
            process=Owner.from_dict(data.get("process")),
            manifest=manifest or Manifest.from_dict(data.get("manifest")),
            schema_version=int(data.get("schema_version") or 1),
            extra={k: v for k, v in data.items() if k not in known},
        )


def _opt_str(value: Any) -> str | None:
    return str(value) if isinstance(value, (str, int)) and value != "" else None


def parse_meta(text: str, with_manifest: bool = True) -> ExpMeta:
    """Parse the text of a ``resutil-exp.yaml``."""
    head, sep, tail = text.partition(_MANIFEST_MARK)
    if not sep:
        data = yaml.load(text, Loader=_Loader) or {}
        manifest = None
    else:
        data = yaml.load(head, Loader=_Loader) or {}
        manifest = _parse_manifest_block(tail) if with_manifest else None
    if not isinstance(data, dict):
        raise ValueError("not a mapping")
    return ExpMeta.from_dict(data, manifest)


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
                files[json.loads(key)] = (int(size), digest.strip("'\""))
            elif line.startswith("  algorithm:"):
                algorithm = line.split(":", 1)[1].strip()
            elif line and not line.startswith("  "):
                raise ValueError("more keys after the manifest")
        return Manifest(files, algorithm)
    except ValueError:
        data = yaml.load("manifest:\n" + tail, Loader=_Loader)
        return Manifest.from_dict((data or {}).get("manifest"))


def read_meta(folder: Path, with_manifest: bool = True) -> ExpMeta:
    """The metadata of an experiment folder (a bare one if the file is missing)."""
    path = folder / EXP_FILE
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return ExpMeta(name=folder.name, status="finished", result_dir=str(folder))
    try:
        meta = parse_meta(text, with_manifest)
    except (yaml.YAMLError, ValueError, TypeError) as e:
        raise ExperimentError(f"{path} is not valid metadata ({e.__class__.__name__}); fix it by hand") from None
    meta.set_name(folder.name)  # the folder name is the authority (comment may have changed)
    return meta


def write_meta(folder: Path, meta: ExpMeta) -> bytes:
    """Write ``resutil-exp.yaml`` atomically; returns the bytes written."""
    path = folder / EXP_FILE
    tmp = folder / f".{EXP_FILE}.tmp{os.getpid()}"
    data = meta.to_text().encode("utf-8")
    try:
        tmp.write_bytes(data)
        os.replace(tmp, path)
    except OSError:
        tmp.unlink(missing_ok=True)  # e.g. a full disk: leave no half-written file behind
        raise
    return data


def manifest_digest(folder: Path) -> str | None:
    """The manifest digest of an experiment folder, read without parsing the file list."""
    return upstream_record(folder)["manifest"]


def upstream_record(folder: Path) -> dict[str, str | None]:
    """What a downstream experiment records of an upstream folder: its manifest digest and
    its run id (``add_dependency(name, source, **upstream_record(folder))``), read without
    parsing the file list."""
    record: dict[str, str | None] = {"manifest": None, "run_id": None}
    try:
        text = (folder / EXP_FILE).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
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
