"""A resutil project: its config, its local results folder and its remote."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

from .config import Config, load_config, remote_off
from .errors import ExperimentNotFound
from .metadata import ExpMeta, read_meta
from .remote import Remote, RemoteExperiment
from .storage import Storage, open_storage
from .workspace import Workspace


@dataclass
class Located:
    """An experiment found by name: its metadata, and where it is."""

    name: str  # the local folder's name when it is local, else the remote one
    meta: ExpMeta
    folder: Path | None  # the local folder, if any
    remote: RemoteExperiment | None  # the remote copy, if any (looked up only when not local)


class Project:
    """Everything a command needs; the storage is opened only when first used."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.workspace = Workspace(config.results_dir)

    @classmethod
    def load(cls, start: Path | None = None) -> Project:
        return cls(load_config(start=start))

    @cached_property
    def storage(self) -> Storage:
        return open_storage(self.config.storage_settings(self.workspace.tmp_dir))

    @cached_property
    def remote(self) -> Remote:
        return Remote(self.storage, self.config.project_name, self.remote_cache_dir)

    @property
    def remote_cache_dir(self) -> Path:
        """Where what was read from this storage is cached (one folder per storage)."""
        key = hashlib.sha1(
            f"{self.config.storage_type}:{sorted(self.config.storage_config.items())}".encode()
        ).hexdigest()[:10]
        return self.workspace.cache_dir / key

    @property
    def no_remote(self) -> bool:
        """RESUTIL_NO_REMOTE: work locally, never contact the storage."""
        return remote_off()

    def resolve(self, query: str, remote: bool = True) -> str:
        """A full experiment name from a name, identity or unique prefix."""
        try:
            return self.workspace.resolve(query)
        except ExperimentNotFound:
            if not remote or self.no_remote:
                raise
        return self.workspace.resolve(query, self.remote.names())

    def locate(self, query: str, with_manifest: bool = False) -> Located:
        """An experiment's metadata from its local folder, else from the remote (sidecar, or
        the archive once for one pushed by 0.1.x); ExperimentNotFound when neither has it."""
        name = self.resolve(query)
        local = self.workspace.local_name(name)
        if local:
            folder = self.workspace.path(local)
            return Located(local, read_meta(folder, with_manifest=with_manifest), folder, None)
        exp = None if self.no_remote else self.remote.get(name)
        if exp is None:
            raise ExperimentNotFound(f"no experiment '{query}' locally or on the remote")
        return Located(exp.name, self.remote.meta(exp), None, exp)

    def key_files(self) -> list[Path]:
        """Credential files named in the config (never copied into an experiment)."""
        out = []
        for key, value in self.config.storage_config.items():
            if "key" in key and isinstance(value, str) and value:
                out.append(self.config.resolve_path(value))
        return out
