"""The local-folder backend needs no server: a fresh temporary folder."""

from __future__ import annotations

import pytest

from resutil.storage import StorageSettings


@pytest.fixture
def local_settings(tmp_path) -> StorageSettings:
    root = tmp_path / "remote-store"
    root.mkdir()
    return StorageSettings(
        values={"path": str(root)}, storage_type="local", scratch_dir=tmp_path / "scratch",
        retry_wait=0.01,
    )
