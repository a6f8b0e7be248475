"""Storage backends, looked up by ``storage_type`` and imported only when used.

``import resutil`` loads no cloud SDK: each backend module imports its SDK lazily and a
missing one becomes ``MissingExtra`` naming the ``pip install 'resutil[...]'`` to run.
"""

from __future__ import annotations

import importlib

from ..errors import ConfigError, MissingExtra
from .base import ObjectInfo, Storage, StorageSettings

# storage_type -> ("module:Class", extra)
BACKENDS: dict[str, tuple[str, str | None]] = {
    "local": ("resutil.storage.local:LocalStorage", None),
    "gcs": ("resutil.storage.gcs:GCSStorage", "gcs"),
    "gdrive": ("resutil.storage.gdrive:GDriveStorage", "gdrive"),
    "box": ("resutil.storage.box:BoxStorage", "box"),
}
DISPLAY_NAMES = {
    "local": "local folder",
    "gcs": "Google Cloud Storage",
    "gdrive": "Google Drive",
    "box": "Box",
}


def backend_class(storage_type: str) -> type[Storage]:
    """The Storage class for a storage type."""
    try:
        target, extra = BACKENDS[storage_type]
    except KeyError:
        raise ConfigError(
            f"unknown storage_type '{storage_type}'; use one of {', '.join(BACKENDS)}"
        ) from None
    module_name, cls_name = target.split(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as e:
        raise MissingExtra(DISPLAY_NAMES[storage_type], extra or storage_type) from e
    return getattr(module, cls_name)


def open_storage(settings: StorageSettings) -> Storage:
    """The configured backend (no network access until it is used)."""
    return backend_class(settings.storage_type)(settings)


__all__ = ["BACKENDS", "ObjectInfo", "Storage", "StorageSettings", "backend_class", "open_storage"]
