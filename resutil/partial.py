"""One file of an experiment without the whole experiment: open it, save it, list them.

An experiment that is here is read from its folder. One that is only on the remote is read
from its archive with ranged requests (``Remote.open_member``): for a small file, one
request of its compressed bytes, checked against its recorded size, CRC and content hash
before its last bytes are handed out; a damaged file is refused in one line.

Files saved this way never go under the results folder: a partial copy must never pass
for a pulled experiment.
"""

from __future__ import annotations

import fnmatch
import io
import os
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from .archive import safe_member_path
from .errors import ArchiveError, ExperimentError, ExperimentNotFound, ResutilError
from .liveness import scratch_prefix
from .metadata import iter_files
from .project import Project
from .remote import MemberIndex, RemoteExperiment

BUFFER = 1 << 20
_GLOB = set("*?[")


@dataclass(frozen=True)
class Source:
    """Where an experiment's files are read from: its local folder, else its archive."""

    name: str
    folder: Path | None
    remote: RemoteExperiment | None
    index: MemberIndex | None = None

    def files(self) -> list[str]:
        """The relative path of every file, sorted."""
        if self.folder is not None:
            return sorted(rel for rel, _, _ in iter_files(self.folder))
        assert self.index is not None
        return sorted(n for n in self.index.members if not n.endswith("/"))


def find_source(project: Project, experiment: str, index: bool = True) -> Source:
    """The experiment named by ``experiment`` (a name, identity, unique prefix), local if
    it is here, else on the remote (with its member index when ``index``)."""
    name = project.resolve(experiment)
    local = project.workspace.local_name(name)
    if local:
        return Source(local, project.workspace.path(local), None)
    exp = None if project.no_remote else project.remote.get(name)
    if exp is None:
        raise ExperimentNotFound(f"no experiment '{experiment}' locally or on the remote")
    return Source(exp.name, None, exp, project.remote.member_index(exp) if index else None)


def open_file(project: Project, experiment: str, path: str) -> BinaryIO:
    """One file of an experiment as a readable binary file object: the local file when the
    experiment is here, else a reader of its archive's member (ranged reads as it is
    read). A damaged remote file raises ArchiveError, at the latest on the read that would
    return its last bytes. ExperimentNotFound when there is no such file."""
    return _open(project, find_source(project, experiment), clean_path(path))


def open_from(project: Project, source: Source, path: str) -> BinaryIO:
    """``open_file`` for an experiment already found (``find_source``): many files of one
    experiment without finding it again for each."""
    return _open(project, source, clean_path(path))


def retrieve_file(project: Project, experiment: str, path: str, dest: Path) -> int:
    """Write one file of an experiment to ``dest`` (anywhere but the results folder),
    replacing it only once the whole file arrived and checked out; returns its size.
    The one call the Snakemake plugin needs to fetch a single file of a remote run."""
    source = find_source(project, experiment)
    _refuse_results(project, Path(dest).parent)
    return _save(project, source, clean_path(path), Path(dest))


@dataclass(frozen=True)
class Saved:
    """A file ``get_files`` saved: its path in the experiment, where it went, its size."""

    path: str
    dest: Path
    size: int


def get_files(project: Project, experiment: str, patterns: list[str], out_dir: Path,
              force: bool = False) -> list[Saved]:
    """Save the files of an experiment that ``patterns`` name into ``out_dir`` under their
    paths in the experiment: a file, a folder (everything under it) or a glob (``*``
    matches across folders too). Nothing is saved when a pattern matches nothing, when
    ``out_dir`` is inside the results folder, or when a file would replace an existing
    one (unless ``force``)."""
    source = find_source(project, experiment)
    out_dir = Path(out_dir)
    _refuse_results(project, out_dir)
    chosen = match_files(source, patterns)
    targets = [(rel, out_dir / safe_member_path(rel)) for rel in chosen]
    if not force:
        existing = [str(dest) for _, dest in targets if os.path.lexists(dest)]
        if existing:
            more = f" and {len(existing) - 1} more" if len(existing) > 1 else ""
            raise ResutilError(f"{existing[0]}{more} exists; nothing was saved - remove it, "
                               "choose another -o folder, or use --force to replace it")
    return [Saved(rel, dest, _save(project, source, rel, dest)) for rel, dest in targets]


def match_files(source: Source, patterns: list[str]) -> list[str]:
    """The files (sorted, each once) that the patterns name; ExperimentNotFound naming a
    pattern that matches nothing."""
    files = source.files()
    chosen: dict[str, None] = {}
    for pattern in patterns:
        pat = pattern.strip().replace("\\", "/").removeprefix("./").rstrip("/")
        if not pat:
            raise ExperimentError("an empty path was given")
        if _GLOB & set(pat):
            hits = [f for f in files if fnmatch.fnmatchcase(f, pat)]
        else:
            rel = clean_path(pat)
            hits = [f for f in files if f == rel or f.startswith(rel + "/")]
        if not hits:
            raise ExperimentNotFound(f"{source.name} has no file matching '{pattern}'"
                                     + _where(source))
        chosen.update(dict.fromkeys(hits))
    return sorted(chosen)


def clean_path(path: str) -> str:
    """A path inside an experiment, as its manifest spells it; ExperimentError for one
    that leaves it (absolute, ``..``) or is empty."""
    text = str(path).strip().replace("\\", "/")
    while text.startswith("./"):
        text = text[2:]
    text = text.rstrip("/")
    if not text:
        raise ExperimentError("an empty path was given; name a file in the experiment")
    try:
        return safe_member_path(text)
    except ArchiveError:
        raise ExperimentError(f"'{path}' is not a path inside an experiment") from None


# -- internals ------------------------------------------------------------------------------
def _open_local(folder: Path, rel: str, name: str) -> BinaryIO:
    path = folder / rel
    root = os.path.realpath(folder)
    real = os.path.realpath(path)
    if not real.startswith(root + os.sep) or not os.path.isfile(real):
        if os.path.isdir(real) and real.startswith(root + os.sep):
            raise ExperimentError(f"'{rel}' is a folder in {name}; name a file in it")
        raise ExperimentNotFound(f"{name} has no file '{rel}'")
    return open(real, "rb")  # noqa: SIM115 - the caller closes it


def _no_such_file(source: Source, rel: str) -> ResutilError:
    assert source.index is not None
    if any(n.startswith(rel + "/") for n in source.index.members):
        return ExperimentError(f"'{rel}' is a folder in {source.name}; name a file in it")
    return ExperimentNotFound(f"{source.name} has no file '{rel}'" + _where(source))


def _where(source: Source) -> str:
    return f" (see 'resutil show --files {source.name}')" if source.folder is None else ""


def inside_results(project: Project, path: Path) -> bool:
    """Whether ``path`` is the results folder or inside it (links resolved)."""
    results = os.path.realpath(project.workspace.root)
    target = os.path.realpath(path)
    return target == results or target.startswith(results + os.sep)


def _refuse_results(project: Project, out_dir: Path) -> None:
    if inside_results(project, out_dir):
        raise ResutilError(
            f"{out_dir} is inside the results folder {project.workspace.root}, where a partial "
            "copy could pass for a pulled experiment; choose another folder with -o (or "
            "'resutil pull' the whole experiment)")


def _save(project: Project, source: Source, rel: str, dest: Path) -> int:
    """Copy one file to ``dest`` through a scratch file beside it, renamed into place only
    once the file arrived whole and checked out."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.parent / f"{scratch_prefix('.resutil-get')}{uuid.uuid4().hex[:8]}-{dest.name}"
    size = 0
    try:
        with _open(project, source, rel) as src, open(tmp, "wb") as out:
            while chunk := src.read(BUFFER):
                out.write(chunk)
                size += len(chunk)
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)
    return size


def _open(project: Project, source: Source, rel: str) -> BinaryIO:
    if source.folder is not None:
        return _open_local(source.folder, rel, source.name)
    assert source.remote is not None and source.index is not None
    if rel not in source.index.members:
        raise _no_such_file(source, rel)
    reader = project.remote.open_member(source.remote, rel, source.index)
    return io.BufferedReader(reader, BUFFER)

