"""One exception tree for everything a user can cause or fix.

The CLI prints a ``ResutilError`` as ``Error: <message>`` with exit code 1 and no
traceback; any other exception is a bug and keeps its traceback.
"""

from __future__ import annotations


class ResutilError(Exception):
    """Base of every user-facing error; the message says what to do next."""


class ConfigError(ResutilError):
    """The config file is missing, unreadable or has a wrong key."""


class ExperimentError(ResutilError):
    """An experiment name is unknown, ambiguous or invalid."""


class ExperimentNotFound(ExperimentError):
    """No experiment matches the given name or prefix."""


class DependencyError(ResutilError):
    """An operation would break the lineage (e.g. removing an upstream experiment)."""


class NotConfirmed(ResutilError):
    """A step that loses data needs a person's yes at a terminal, or ``--yes``."""


class ArchiveError(ResutilError):
    """An archive is corrupt, unsafe to extract, or does not match its recorded hash."""


class StorageError(ResutilError):
    """A storage backend operation failed."""


class StorageUnavailable(StorageError):
    """The storage cannot be reached (network down, mount missing)."""


class StorageNotFound(StorageError):
    """An object or folder does not exist on the storage."""


class StorageChanged(StorageError):
    """An object was replaced or removed on the storage since it was listed."""


class StoragePermission(StorageError):
    """The storage refused the operation (read-only, no permission, bad credentials)."""


class MissingExtra(ResutilError):
    """A backend needs an optional dependency that is not installed."""

    def __init__(self, what: str, extra: str) -> None:
        super().__init__(f"{what} needs an optional dependency: pip install 'resutil[{extra}]'")
        self.extra = extra


class LineageError(ResutilError):
    """The lineage graph cannot be built or rendered."""


class PipelineError(ResutilError):
    """The pipeline file is invalid or a step cannot run."""
