"""The plugin's tests run in a clean environment, in their own working folder."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def _isolated(monkeypatch, tmp_path):
    for var in ("RESUTIL_NO_REMOTE", "RESUTIL_CONFIG", "SNAKEMAKE_STORAGE_RESUTIL_CONFIG",
                "RESUTIL_EXPERIMENT_DIR", "RESUTIL_SNAKEMAKE_INPUTS"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.chdir(tmp_path)  # git capture looks at the working directory
