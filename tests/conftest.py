"""Shared fixtures. Each storage backend contributes a ``<type>_settings`` fixture from
``tests/backend_<type>.py`` that starts its local server and returns StorageSettings; the
``storage_type`` fixture runs the contract suite once per backend."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import pytest

from resutil.storage import StorageSettings

# The shared helpers' asserts say what differed, as the tests' own do.
pytest.register_assert_rewrite("tests.helpers")

BACKENDS = ["local", "gcs", "gdrive", "box"]
# Read before the autouse fixture below clears RESUTIL_* variables.
BIG_MB = int(os.environ.get("RESUTIL_TEST_BIG_MB", "24"))
pytest_plugins = [
    f"tests.backend_{b}" for b in BACKENDS if (Path(__file__).parent / f"backend_{b}.py").exists()
]


def available_backends() -> list[str]:
    return [b for b in BACKENDS if f"tests.backend_{b}" in pytest_plugins]


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch):
    """Tests never inherit the developer's resutil settings, and never block on input."""
    for key in list(os.environ):
        if key.startswith("RESUTIL_"):
            monkeypatch.delenv(key)
    monkeypatch.setenv("RESUTIL_NO_INTERACTIVE", "1")


@pytest.fixture
def proj(tmp_path, monkeypatch):
    """A project made by ``resutil init`` on the local backend; the cwd is its folder."""
    from .helpers import make_project

    p = make_project(tmp_path)
    monkeypatch.chdir(p.root)
    return p


@pytest.fixture(params=available_backends())
def storage_type(request) -> str:
    return request.param


@pytest.fixture
def storage_settings(request, storage_type, tmp_path) -> StorageSettings:
    """Settings for a fresh, empty storage of the parametrised type."""
    return request.getfixturevalue(f"{storage_type}_settings")


@pytest.fixture
def big_file_mb() -> int:
    """Size of the file used to exercise chunked/resumable uploads (RESUTIL_TEST_BIG_MB)."""
    return BIG_MB


def has_module(name: str) -> bool:
    return importlib.util.find_spec(name) is not None
