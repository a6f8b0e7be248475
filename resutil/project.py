"""A resutil project: its config, its local results folder and its remote."""

from __future__ import annotations

import hashlib
import os
from functools import cached_property
from pathlib import Path

from .config import Config, load_config
from .errors import ExperimentNotFound
from .remote import Remote
from .storage import Storage, open_storage
from .workspace import Workspace


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
        key = hashlib.sha1(
            f"{self.config.storage_type}:{sorted(self.config.storage_config.items())}".encode()
        ).hexdigest()[:10]
        return Remote(self.storage, self.config.project_name, self.workspace.cache_dir / key)

    @property
    def no_remote(self) -> bool:
        """RESUTIL_NO_REMOTE: work locally, never contact the storage."""
        return bool(os.environ.get("RESUTIL_NO_REMOTE"))

    def resolve(self, query: str, remote: bool = True) -> str:
        """A full experiment name from a name, identity or unique prefix."""
        try:
            return self.workspace.resolve(query)
        except ExperimentNotFound:
            if not remote or self.no_remote:
                raise
        return self.workspace.resolve(query, self.remote.names())

    def key_files(self) -> list[Path]:
        """Credential files named in the config (never copied into an experiment)."""
        out = []
        for key, value in self.config.storage_config.items():
            if "key" in key and isinstance(value, str) and value:
                out.append(self.config.resolve_path(value))
        return out
