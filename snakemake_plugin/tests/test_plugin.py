"""The resutil storage plugin against a real resutil project on the local backend.

Snakemake's own contract suite (``TestStorageBase``) runs for ``new:`` outputs (files and
folders) and for reading an experiment that is only on the remote; an end-to-end test runs a
Snakefile through ``python -m snakemake``.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
import zipfile
from datetime import datetime
from pathlib import Path

import pytest
from snakemake_interface_common.exceptions import WorkflowError
from snakemake_interface_storage_plugins.registry import StoragePluginRegistry
from snakemake_interface_storage_plugins.tests import TestStorageBase
from snakemake_storage_plugin_resutil import (
    StorageProvider,
    StorageProviderSettings,
    parse_query,
)

from resutil.initialize import InitOptions, init_project
from resutil.metadata import ExpMeta, read_meta, write_meta
from resutil.project import Project
from resutil.publish import publish

RESUTIL = [str(Path(sys.executable).with_name("resutil"))]  # the venv's console script


# -- helpers ---------------------------------------------------------------------------------
def make_project(root: Path) -> Path:
    """A resutil project in ``root`` whose remote is ``root/remote``; returns the config."""
    root.mkdir(parents=True, exist_ok=True)
    return init_project(
        InitOptions(project_name="Proj", storage_type="local", path=str(root / "remote")),
        root,
    )


def make_remote_experiment(config: Path, comment: str, files: dict[str, str]) -> str:
    """An experiment (not written by the plugin) pushed and then removed locally."""
    project = Project.load(config.parent)
    ws = project.workspace
    name = ws.create(comment).name
    folder = ws.path(name)
    for rel, text in files.items():
        (folder / rel).parent.mkdir(parents=True, exist_ok=True)
        (folder / rel).write_text(text)
    now = datetime.now().astimezone().isoformat(timespec="seconds")
    write_meta(folder, ExpMeta(name=name, comment=comment, status="finished",
                               started_at=now, ended_at=now))
    name = publish(project, folder).name
    ws.remove(name)
    return name


def read_meta_remote(config: Path, name: str) -> ExpMeta:
    """An experiment's metadata as the remote has it."""
    project = Project.load(config.parent)
    return project.remote.meta(project.remote.require(name))


def provider_for(config: Path, tmp_path: Path) -> StorageProvider:
    return StorageProvider(
        local_prefix=tmp_path / "local_prefix",
        logger=logging.getLogger("test"),
        settings=StorageProviderSettings(config=config),
    )


@pytest.fixture(autouse=True)
def _isolated(monkeypatch, tmp_path):
    for var in ("RESUTIL_NO_REMOTE", "RESUTIL_CONFIG", "SNAKEMAKE_STORAGE_RESUTIL_CONFIG"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.chdir(tmp_path)  # git capture looks at the working directory


# -- Snakemake's contract suite --------------------------------------------------------------
class TestNewExperiment(TestStorageBase):
    """Store, exists, mtime, size, inventory, retrieve and remove of a new: output."""

    __test__ = True
    files_only = False  # also a folder output

    @pytest.fixture(autouse=True)
    def _project(self, tmp_path):
        self.config = make_project(tmp_path / "proj")

    def get_storage_provider_cls(self):
        return StorageProvider

    def get_storage_provider_settings(self):
        return StorageProviderSettings(config=self.config)

    def get_query(self, tmp_path) -> str:
        return "resutil://new:plugin test/test.txt"

    def get_query_not_existing(self, tmp_path) -> str:
        return "resutil://new:never written/test.txt"


class TestExistingExperiment(TestStorageBase):
    """Reading a file of an experiment that is only on the remote (it gets pulled)."""

    __test__ = True
    retrieve_only = True

    @pytest.fixture(autouse=True)
    def _project(self, tmp_path):
        self.config = make_project(tmp_path / "proj")
        self.name = make_remote_experiment(self.config, "upstream", {"test.txt": "test"})

    def get_storage_provider_cls(self):
        return StorageProvider

    def get_storage_provider_settings(self):
        return StorageProviderSettings(config=self.config)

    def get_query(self, tmp_path) -> str:
        return f"resutil://{self.name[:22]}/test.txt"

    def get_query_not_existing(self, tmp_path) -> str:
        return "resutil://zzzzzz/test.txt"


# -- the plugin's own behaviour --------------------------------------------------------------
def test_registry_finds_the_plugin():
    registry = StoragePluginRegistry()
    assert "resutil" in registry.get_registered_plugins()
    plugin = registry.get_plugin("resutil")
    assert plugin.storage_provider is StorageProvider  # this package's, not another's
    assert plugin.is_read_write()  # a method: reads and writes, not read-only


@pytest.mark.parametrize("query", [
    "resutil://aapiyl/data.txt",
    "resutil://aapiyl_20240706T064339_my #1?/sub/data.txt",
    "resutil://new:train/model.pt",
    "resutil://new:{sample}/counts/{sample}.tsv",
    "resutil://{exp}/data.txt",
    "resutil://new:train/plots/",
])
def test_valid_queries(query):
    assert StorageProvider.is_valid_query(query)


@pytest.mark.parametrize("query, reason", [
    ("aapiyl/data.txt", "must start with resutil://"),
    ("gs://bucket/data.txt", "must start with resutil://"),
    ("resutil://aapiyl", "no path inside"),
    ("resutil:///data.txt", "no experiment"),
    ("resutil://aapiyl/../secret", "must be relative"),
    ("resutil://new:/x.txt", "needs a comment"),
    ("resutil://new: padded/x.txt", "white space"),
    ("resutil://old:train/x.txt", "neither an experiment nor new:"),
])
def test_invalid_queries(query, reason):
    result = StorageProvider.is_valid_query(query)
    assert not result
    assert reason in result.reason


def test_query_keeps_special_characters():
    q = parse_query("resutil://aapiyl_20240706T064339_a#1?/sub/d.txt")
    assert (q.experiment, q.path, q.new) == ("aapiyl_20240706T064339_a#1?", "sub/d.txt", False)


def test_existing_experiments_are_read_only(tmp_path):
    config = make_project(tmp_path / "proj")
    name = make_remote_experiment(config, "upstream", {"data.txt": "x"})
    obj = provider_for(config, tmp_path).object(f"resutil://{name}/out.txt")
    obj.local_path().parent.mkdir(parents=True)
    obj.local_path().write_text("y")
    with pytest.raises(WorkflowError, match="read-only"):
        obj.store_object()


def test_remote_only_stat_needs_no_download_and_glob_lists_files(tmp_path):
    config = make_project(tmp_path / "proj")
    name = make_remote_experiment(config, "inputs", {"in/a.txt": "a", "in/b.txt": "bb", "x.csv": ""})
    provider = provider_for(config, tmp_path)
    obj = provider.object(f"resutil://{name[:22]}/in/a.txt")
    assert obj.exists()
    ended = read_meta_remote(config, name).ended_at
    assert obj.mtime() == datetime.fromisoformat(ended).timestamp()
    assert not (config.parent / "results" / name).exists()  # nothing pulled for that
    pattern = provider.object(f"resutil://{name[:22]}/in/{{s}}.txt")
    assert sorted(pattern.list_candidate_matches()) == [
        f"resutil://{name[:22]}/in/a.txt", f"resutil://{name[:22]}/in/b.txt"]


def test_outputs_of_one_comment_share_one_experiment(tmp_path):
    config = make_project(tmp_path / "proj")
    provider = provider_for(config, tmp_path)
    for rel, text in (("a.txt", "A"), ("sub/b.txt", "B")):
        obj = provider.object(f"resutil://new:shared/{rel}")
        obj.local_path().parent.mkdir(parents=True, exist_ok=True)
        obj.local_path().write_text(text)
        obj.store_object()
        assert obj.exists() and obj.size() == 1
    project = Project.load(config.parent)
    [exp] = project.remote.experiments().values()
    assert exp.name.endswith("_shared")
    with project.storage.fetched(project.remote.archive_folder, exp.archive.name) as z:
        names = zipfile.ZipFile(z).namelist()
    assert {"a.txt", "sub/b.txt", "resutil-exp.yaml"} <= set(names)
    meta = read_meta(project.workspace.path(exp.name))
    assert meta.status == "finished"
    assert set(meta.extra["snakemake"]["outputs"]) == {"a.txt", "sub/b.txt"}
    # A fresh provider (the next Snakemake run) finds the outputs without making anything.
    again = provider_for(config, tmp_path).object("resutil://new:shared/sub/b.txt")
    assert again.exists()
    assert again.mtime() == meta.extra["snakemake"]["outputs"]["sub/b.txt"]["mtime"]


# -- end to end ------------------------------------------------------------------------------
SNAKEFILE = """
rule all:
    input: storage.resutil("resutil://new:tripled/out.txt")

rule double:
    input: storage.resutil("resutil://" + config["upstream"] + "/data.txt")
    output: storage.resutil("resutil://new:doubled/out.txt")
    shell: "cat {input} {input} > {output}"

rule triple:
    input: storage.resutil("resutil://new:doubled/out.txt")
    output: storage.resutil("resutil://new:tripled/out.txt")
    shell: "cat {input} {input} {input} > {output}"
"""


def snakemake(workdir: Path, config: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "SNAKEMAKE_STORAGE_RESUTIL_CONFIG": str(config)}
    env.pop("RESUTIL_NO_REMOTE", None)
    proc = subprocess.run(
        [sys.executable, "-m", "snakemake", "--cores", "1", "--directory", str(workdir), *args],
        cwd=workdir, env=env, capture_output=True, text=True, timeout=120, check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


@pytest.mark.slow
def test_snakemake_reads_a_remote_experiment_and_writes_a_new_one(tmp_path):
    root = tmp_path / "proj"
    root.mkdir()
    subprocess.run([*RESUTIL, "init", "--project", "Proj", "--storage", "local",
                    "--path", str(tmp_path / "remote"), "--yes"], cwd=root, check=True,
                   capture_output=True)
    config = root / "resutil-conf.yaml"
    upstream = make_remote_experiment(config, "upstream", {"data.txt": "hello\n"})
    assert not (root / "results" / upstream).exists()
    (root / "Snakefile").write_text(SNAKEFILE)

    first = snakemake(root, config, "--config", f"upstream={upstream[:22]}")
    assert "Storing in storage: resutil://new:tripled/out.txt" in first.stderr

    rows = resutil_list(root)
    doubled, tripled = (_one(rows, "_doubled"), _one(rows, "_tripled"))
    for name in (doubled, tripled):
        assert rows[name]["remote"] and rows[name]["status"] == "finished"
    assert rows[upstream]["local"]  # pulled to be read

    project = Project.load(root)
    exp = project.remote.require(tripled)
    with project.storage.fetched(project.remote.archive_folder, exp.archive.name) as z:
        assert zipfile.ZipFile(z).read("out.txt") == b"hello\n" * 6
    # Lineage: each experiment depends on what its rule read, not on everything the run read.
    deps = {n: [(d.name, d.source) for d in project.remote.meta(project.remote.require(n)).dependencies]
            for n in (doubled, tripled)}
    assert deps == {doubled: [(upstream, "declared")], tripled: [(doubled, "declared")]}

    # The next run finds the outputs on the remote, without the local folders or
    # Snakemake's own metadata, and makes no new experiment.
    project.workspace.remove(doubled)
    project.workspace.remove(tripled)
    shutil.rmtree(root / ".snakemake")
    second = snakemake(root, config, "--config", f"upstream={upstream[:22]}")
    assert "Nothing to be done" in second.stderr
    assert sorted(resutil_list(root)) == sorted(rows)


def resutil_list(root: Path) -> dict[str, dict]:
    out = subprocess.run([*RESUTIL, "list", "--json"], cwd=root, check=True,
                         capture_output=True, text=True).stdout
    return {r["name"]: r for r in json.loads(out)}


def _one(rows: dict[str, dict], suffix: str) -> str:
    [name] = [n for n in rows if n.endswith(suffix)]
    return name
