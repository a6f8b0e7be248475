"""The runs the pipeline knows: every experiment a step made, by fingerprint and by step.

Local experiments are known by their metadata heads (``metadata.read_head``: only heads
with a ``pipeline`` key, only it and ``status`` parsed), remote ones by their sidecars, so
no result is hashed or downloaded to decide what is up to date.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from ..errors import ResutilError
from ..metadata import read_head
from ..naming import IDENTITY_LEN
from ..project import Project


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
            try:
                meta = read_head(ws.path(name), keys=("status", "pipeline"), require="pipeline")
            except ResutilError:
                continue  # broken metadata: not a candidate (and not our business here)
            info = meta.pipeline if meta is not None else None
            if isinstance(info, dict) and info.get("fingerprint"):
                self._add(ident, Candidate(name, meta.status, info, local=True))

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
            done.sort(key=lambda c: (c.local, c.name[:IDENTITY_LEN]))
            return done[-1] if done else None

        found = best()
        if found is None or not found.local:
            self.load_remote()
            found = best()
        return found

    def latest(self, step: str) -> Candidate | None:
        """The newest experiment of a step, whatever its fingerprint (to say why it is stale)."""
        self.load_remote()
        cands = sorted(self.by_step.get(step, ()), key=lambda c: c.name[:IDENTITY_LEN])
        return cands[-1] if cands else None


def _safe_sidecar(remote: Any) -> Callable[[Any], dict[str, Any] | None]:
    def one(exp: Any) -> dict[str, Any] | None:
        try:
            return remote.sidecar(exp)
        except ResutilError:
            return None

    return one

