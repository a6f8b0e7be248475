"""Snakemake's workflow sources archive, when resutil is the default storage provider.

Executors without a shared file system (``--job-deploy-sources``; Kubernetes, Google
Batch) store the workflow's sources through the default storage provider before the jobs
start, and every job fetches them first (``--deploy-sources``). That archive is not a
result: it goes to the storage beside the experiments (``Remote.put_file``), never into
one, and is removed with the run. With it goes the commit the main process ran at and the
files changed since, so a job on a node without the git repository still records the
workflow's commit; the node's copy of that is ``.snakemake/resutil-workflow.json``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from resutil.capture import GitState, git_state
from resutil.project import Project

INFO_SUFFIX = ".resutil.json"
NODE_INFO = Path(".snakemake") / "resutil-workflow.json"


def store(project: Project, name: str, src: Path) -> None:
    """Upload the sources archive and what the main process knows of the code."""
    git = git_state(Path.cwd())
    info = {"commit": git.commit, "changed": git.changed}
    project.remote.put_file(name, src)
    project.remote.put_bytes(name + INFO_SUFFIX, json.dumps(info).encode())


def retrieve(project: Project, name: str, dest: Path) -> None:
    """Fetch the sources archive, and keep its code facts for the jobs run here."""
    project.remote.get_file(name, dest)
    try:
        info = json.loads(project.remote.get_bytes(name + INFO_SUFFIX))
    except Exception:  # noqa: BLE001 - the facts are a bonus; the archive is what counts
        return
    NODE_INFO.parent.mkdir(parents=True, exist_ok=True)
    NODE_INFO.write_text(json.dumps(info))


def remove(project: Project, name: str) -> None:
    for n in (name, name + INFO_SUFFIX):
        if project.remote.file_info(n) is not None:
            project.remote.delete_file(n)


def info(project: Project, name: str) -> tuple[float, int] | None:
    """(mtime, size) of the stored sources archive, or None."""
    found = project.remote.file_info(name)
    return None if found is None else (found.mtime or 0.0, found.size)


def node_code(workdir: Path) -> GitState | None:
    """On a node without the workflow's git repository: the commit and changed files the
    main process recorded with the sources deployed here; None elsewhere."""
    try:
        data: Any = json.loads((workdir / NODE_INFO).read_text())
    except (OSError, ValueError):
        return None
    if git_state(workdir).root is not None:
        return None
    if not isinstance(data, dict) or not isinstance(data.get("commit"), str):
        return None
    changed = [c for c in data.get("changed") or [] if isinstance(c, str)]
    return GitState(root=workdir, commit=data["commit"], changed=changed)
