"""The resutil storage plugin against real resutil projects on the local backend.

Snakemake's own contract suite (``TestStorageBase``) runs for every kind of query; the
plugin's own tests follow: queries, jobs announced by Snakemake's log events, what
``new:`` names, reruns, touch, remove, identity claims across processes.
"""

from __future__ import annotations

import logging
import subprocess
import sys
import textwrap
import time
from datetime import datetime
from pathlib import Path

import pytest
import snakemake_storage_plugin_resutil.runs as runs
from plugin_helpers import (
    announce,
    local_meta,
    make_experiment,
    make_project,
    provider_for,
    remote_meta,
    remote_names,
    write_local,
)
from snakemake_interface_common.exceptions import WorkflowError
from snakemake_interface_storage_plugins.registry import StoragePluginRegistry
from snakemake_interface_storage_plugins.tests import TestStorageBase
from snakemake_storage_plugin_resutil import (
    StorageProvider,
    StorageProviderSettings,
    parse_query,
)

from resutil.naming import IDENTITY_LEN
from resutil.project import Project


# -- Snakemake's contract suite, for every kind of query -------------------------------------
class _Base(TestStorageBase):
    """Runs against a fresh project; remembers its objects to check what remove() did."""

    def get_storage_provider_cls(self):
        return StorageProvider

    def get_storage_provider_settings(self):
        return StorageProviderSettings(config=str(self.config))

    def _get_obj(self, tmp_path, query):
        obj = super()._get_obj(tmp_path, query)
        self.objects.append(obj)
        return obj


class TestNewOutput(_Base):
    """Store, exists, mtime, size, checksum, inventory, touch, retrieve, remove of an
    output (a file, then a folder); afterwards the output is gone everywhere."""

    __test__ = True
    files_only = False
    touch = True

    @pytest.fixture(autouse=True)
    def _project(self, tmp_path):
        self.config = make_project(tmp_path / "proj")
        self.objects = []

    def get_query(self, tmp_path) -> str:
        return "resutil://new:plugin test/test.txt"

    def get_query_not_existing(self, tmp_path) -> str:
        return "resutil://new:never written/test.txt"

    def test_storage(self, tmp_path):
        super().test_storage(tmp_path)
        assert len(self.objects) == 2  # the file pass and the folder pass
        for obj in self.objects:
            assert not obj.exists()  # remove() removed it ...
        assert remote_names(self.config) == []  # ... on the remote too
        assert not list((self.config.parent / "results").glob("*_plugin test"))


class TestStoreOnly(_Base):
    __test__ = True
    store_only = True

    @pytest.fixture(autouse=True)
    def _project(self, tmp_path):
        self.config = make_project(tmp_path / "proj")
        self.objects = []

    def get_query(self, tmp_path) -> str:
        return "resutil://new:only stored/sub/out.bin"

    def get_query_not_existing(self, tmp_path) -> str:
        return "resutil://new:only stored/sub/other.bin"


class TestRemoteOnlyFolder(_Base):
    """A folder (and, first, the same query as a file pass) of an experiment that is only
    on the remote; a missing path inside that experiment does not exist."""

    __test__ = True
    retrieve_only = True
    files_only = False

    @pytest.fixture(autouse=True)
    def _project(self, tmp_path):
        self.config = make_project(tmp_path / "proj")
        self.objects = []
        self.name = make_experiment(self.config, "upstream",
                                    {"dir/test.txt": "test", "other.txt": "x"})

    def get_query(self, tmp_path) -> str:
        return f"resutil://{self.name[:IDENTITY_LEN]}/dir"

    def get_query_not_existing(self, tmp_path) -> str:
        return f"resutil://{self.name[:IDENTITY_LEN]}/missing.txt"


class TestRemoteOnlyFile(_Base):
    __test__ = True
    retrieve_only = True

    @pytest.fixture(autouse=True)
    def _project(self, tmp_path):
        self.config = make_project(tmp_path / "proj")
        self.objects = []
        self.name = make_experiment(self.config, "upstream", {"test.txt": "test"})

    def get_query(self, tmp_path) -> str:
        return f"resutil://{self.name}/test.txt"

    def get_query_not_existing(self, tmp_path) -> str:
        return f"resutil://{self.name}/test.txt.missing"

    def test_no_archive_is_fetched_to_answer(self, tmp_path):
        obj = self._get_obj(tmp_path, self.get_query(tmp_path))
        assert obj.exists() and obj.size() == 4
        assert not obj.provider.project.workspace.local_name(self.name)


class TestLocalExperiment(_Base):
    __test__ = True
    retrieve_only = True

    @pytest.fixture(autouse=True)
    def _project(self, tmp_path):
        self.config = make_project(tmp_path / "proj")
        self.objects = []
        self.name = make_experiment(self.config, "here", {"test.txt": "test"}, keep_local=True)

    def get_query(self, tmp_path) -> str:
        return f"resutil://{self.name[:IDENTITY_LEN]}/test.txt"

    def get_query_not_existing(self, tmp_path) -> str:
        return f"resutil://{self.name[:IDENTITY_LEN]}/nothing/test.txt"


class TestMissingExperiment(_Base):
    """A query naming no experiment at all does not exist (and is not an error)."""

    __test__ = True
    retrieve_only = True

    @pytest.fixture(autouse=True)
    def _project(self, tmp_path):
        self.config = make_project(tmp_path / "proj")
        self.objects = []
        self.name = make_experiment(self.config, "up", {"test.txt": "test"})

    def get_query(self, tmp_path) -> str:
        return f"resutil://{self.name}/test.txt"

    def get_query_not_existing(self, tmp_path) -> str:
        return "resutil://zzzzzz_20991231T235959/test.txt"


# -- queries ------------------------------------------------------------------------------
def test_registry_finds_the_plugin():
    registry = StoragePluginRegistry()
    assert "resutil" in registry.get_registered_plugins()
    plugin = registry.get_plugin("resutil")
    assert plugin.storage_provider is StorageProvider  # this package's, not another's
    assert plugin.is_read_write() is True


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


# -- reading ------------------------------------------------------------------------------
def test_existing_experiments_are_read_only(tmp_path):
    config = make_project(tmp_path / "proj")
    name = make_experiment(config, "upstream", {"data.txt": "x"})
    obj = provider_for(config, tmp_path).object(f"resutil://{name}/out.txt")
    write_local(obj, "y")
    for call in (obj.store_object, obj.remove, obj.touch):
        with pytest.raises(WorkflowError, match="read-only"):
            call()


def test_remote_only_facts_come_from_the_sidecar(tmp_path):
    config = make_project(tmp_path / "proj")
    name = make_experiment(config, "inputs", {"in/a.txt": "a", "in/b.txt": "bb", "x.csv": ""})
    provider = provider_for(config, tmp_path)
    obj = provider.object(f"resutil://{name[:IDENTITY_LEN]}/in/b.txt")
    assert obj.exists() and obj.size() == 2  # the file's size, not the experiment's
    assert obj.mtime() == datetime.fromisoformat(remote_meta(config, name).ended_at).timestamp()
    assert obj.checksum() is None  # resutil hashes with xxh128, which Snakemake cannot check
    assert not provider.object(f"resutil://{name}/in/c.txt").exists()
    assert provider.object(f"resutil://{name}/in").size() == 0  # a folder
    pattern = provider.object(f"resutil://{name[:IDENTITY_LEN]}/in/{{s}}.txt")
    assert sorted(pattern.list_candidate_matches()) == [
        f"resutil://{name[:IDENTITY_LEN]}/in/a.txt", f"resutil://{name[:IDENTITY_LEN]}/in/b.txt"]
    assert not (config.parent / "results" / name).exists()  # nothing pulled for all that


def test_an_archive_without_a_file_list_is_answered_without_a_pull(tmp_path):
    """Pushed before sidecars listed files (or by 0.1.x): the list is only in the archive,
    whose directory is read with ranged requests; nothing is pulled."""
    config = make_project(tmp_path / "proj")
    name = make_experiment(config, "old", {"a.txt": "a"})
    project = Project.load(config.parent)
    exp = project.remote.require(name)
    side = project.remote.sidecar(exp)
    del side["meta"]["manifest"]["files"]
    project.remote._write_sidecar_data(exp.identity, side)
    provider = provider_for(config, tmp_path)
    assert provider.object(f"resutil://{name}/a.txt").exists()
    assert not provider.object(f"resutil://{name}/b.txt").exists()
    assert provider.object(f"resutil://{name}/a.txt").size() == 1
    assert not project.workspace.local_name(name)  # answered from the archive's directory


def test_inventory_fills_every_file_of_an_experiment_from_one_listing(tmp_path):
    import asyncio

    from snakemake.io import IOCache

    config = make_project(tmp_path / "proj")
    name = make_experiment(config, "many", {f"f{i}.txt": "x" * i for i in range(5)})
    provider = provider_for(config, tmp_path)
    cache = IOCache(max_wait_time=10)
    asyncio.run(provider.object(f"resutil://{name}/f1.txt").inventory(cache))
    other = provider.object(f"resutil://{name}/f3.txt")
    assert cache.exists_in_storage[other.cache_key()] is True
    assert cache.size[other.cache_key()] == 3


# -- one experiment per job --------------------------------------------------------------
def test_a_jobs_outputs_become_one_experiment_published_once(tmp_path, monkeypatch):
    config = make_project(tmp_path / "proj")
    provider = provider_for(config, tmp_path)
    outs = [f"resutil://new:shared/{rel}" for rel in ("a.txt", "sub/b.txt", "c.txt")]
    pushes = []
    real = runs.publish
    monkeypatch.setattr(runs, "publish", lambda p, f: (pushes.append(f.name), real(p, f))[1])
    announce(provider, "make", outs, shellcmd="make all")
    for i, query in enumerate(outs):
        obj = provider.object(query)
        write_local(obj, "x" * (i + 1))
        obj.store_object()
        assert obj.exists() and obj.size() == i + 1  # seen at once, before the push
    assert len(pushes) == 1  # when the last output was in
    [name] = remote_names(config)
    meta = remote_meta(config, name)
    assert name.endswith("_shared") and meta.status == "finished"
    assert meta.args == "make all"
    assert meta.extra["snakemake"]["rule"] == "make"
    assert set(meta.extra["snakemake"]["outputs"]) == {"a.txt", "sub/b.txt", "c.txt"}
    # A fresh provider (the next Snakemake run) finds the outputs without making anything.
    again = provider_for(config, tmp_path).object("resutil://new:shared/sub/b.txt")
    assert again.exists()
    assert again.mtime() == meta.extra["snakemake"]["outputs"]["sub/b.txt"]["mtime"]
    assert again.checksum().startswith("sha256:")


def test_two_jobs_with_one_comment_make_two_experiments(tmp_path):
    config = make_project(tmp_path / "proj")
    provider = provider_for(config, tmp_path)
    for s in "ab":
        query = f"resutil://new:counts/{s}.tsv"
        announce(provider, "count", [query], wildcards={"s": s})
        obj = provider.object(query)
        write_local(obj, s)
        obj.store_object()
    names = remote_names(config)
    assert len(names) == 2 and len({n[:IDENTITY_LEN] for n in names}) == 2
    wildcards = sorted(remote_meta(config, n).extra["snakemake"]["wildcards"]["s"] for n in names)
    assert wildcards == ["a", "b"]


def test_a_job_is_named_by_its_start_and_records_its_inputs(tmp_path):
    config = make_project(tmp_path / "proj")
    up = make_experiment(config, "raw", {"a.txt": "aaa"})
    provider = provider_for(config, tmp_path)
    query_in, query_out = f"resutil://{up[:IDENTITY_LEN]}/a.txt", "resutil://new:n/a.tsv"
    provider.object(query_in)  # the Snakefile declares it
    started = time.time() - 120
    announce(provider, "count", [query_out], [query_in], {"s": "a"}, started=started)
    inp = provider.object(query_in)
    inp.retrieve_object()
    out = provider.object(query_out)
    write_local(out, "3")
    out.store_object()
    [name] = [n for n in remote_names(config) if n.endswith("_n")]
    meta = remote_meta(config, name)
    assert datetime.fromisoformat(meta.started_at).timestamp() == int(started)
    assert name[7:IDENTITY_LEN] == datetime.fromtimestamp(started).strftime("%Y%m%dT%H%M%S")
    assert [(d.name, d.source) for d in meta.dependencies] == [(up, "declared")]
    assert meta.extra["snakemake"]["inputs"][query_in]["name"] == up


@pytest.mark.slow
def test_processes_starting_a_job_in_the_same_second_get_distinct_identities(tmp_path):
    """Cluster nodes without a shared results folder: each job's experiment claims its
    identity on the storage; a clash moves the later one, and both are kept."""
    remote = tmp_path / "remote"
    configs = [make_project(tmp_path / f"node{i}", remote) for i in range(4)]
    start = tmp_path / "go"
    started = time.time()
    script = textwrap.dedent(f"""
        import os, sys, time
        sys.path.insert(0, {str(Path(__file__).parent)!r})
        from plugin_helpers import announce, provider_for, write_local
        from pathlib import Path
        node = Path(sys.argv[1])
        os.chdir(node)
        provider = provider_for(node / "resutil-conf.yaml", node)
        query = "resutil://new:counts/" + node.name + ".tsv"
        announce(provider, "count", [query], wildcards={{"s": node.name}}, started={started})
        obj = provider.object(query)
        write_local(obj, node.name)
        while not Path({str(start)!r}).exists():
            time.sleep(0.01)
        obj.store_object()
    """)
    procs = [subprocess.Popen([sys.executable, "-c", script, str(c.parent)]) for c in configs]
    time.sleep(1.5)  # all four are waiting: store at once
    start.touch()
    assert [p.wait(60) for p in procs] == [0, 0, 0, 0]
    names = remote_names(configs[0])
    assert len(names) == 4
    assert len({n[:IDENTITY_LEN] for n in names}) == 4  # no identity held by two runs
    assert sorted(remote_meta(configs[0], n).extra["snakemake"]["wildcards"]["s"]
                  for n in names) == ["node0", "node1", "node2", "node3"]
    assert sum(n[7:IDENTITY_LEN] == datetime.fromtimestamp(started).strftime(
        "%Y%m%dT%H%M%S") for n in names) == 1  # one got the second, the others moved


# -- what new: names ---------------------------------------------------------------------
def _job(provider, query_out, inputs, text, rule="r"):
    for q in inputs:
        provider.object(q)  # declared in the Snakefile
    announce(provider, rule, [query_out], inputs)
    for q in inputs:
        provider.object(q).retrieve_object()
    out = provider.object(query_out)
    write_local(out, text)
    out.store_object()
    return out


def test_new_names_the_experiment_made_from_the_same_inputs(tmp_path):
    config = make_project(tmp_path / "proj")
    raw1 = make_experiment(config, "raw", {"d.txt": "1"})
    raw2 = make_experiment(config, "raw", {"d.txt": "2"})
    first = provider_for(config, tmp_path)
    _job(first, "resutil://new:f/x.txt", [f"resutil://{raw1}/d.txt"], "from raw1")
    _job(first, "resutil://new:g/y.txt", ["resutil://new:f/x.txt"], "from f1")

    # The next run, on raw2 (another config): nothing of raw1's outputs is current.
    second = provider_for(config, tmp_path)
    second.object(f"resutil://{raw2}/d.txt")
    second.object("resutil://new:f/x.txt")
    assert not second.object("resutil://new:f/x.txt").exists()
    assert not second.object("resutil://new:g/y.txt").exists()
    _job(second, "resutil://new:f/x.txt", [f"resutil://{raw2}/d.txt"], "from raw2")
    assert not second.object("resutil://new:g/y.txt").exists()  # its input changed
    _job(second, "resutil://new:g/y.txt", ["resutil://new:f/x.txt"], "from f2")

    # Back on raw1: its outputs are current again, and raw2's are not.
    third = provider_for(config, tmp_path)
    third.object(f"resutil://{raw1}/d.txt")
    for q, text in (("resutil://new:f/x.txt", "from raw1"), ("resutil://new:g/y.txt", "from f1")):
        obj = third.object(q)
        assert obj.exists()
        obj.retrieve_object()
        assert obj.local_path().read_text() == text
    assert len([n for n in remote_names(config) if n.endswith("_g")]) == 2


def test_an_upstream_rerun_makes_downstream_outputs_stale(tmp_path):
    config = make_project(tmp_path / "proj")
    provider = provider_for(config, tmp_path)
    _job(provider, "resutil://new:f/x.txt", [], "one")
    _job(provider, "resutil://new:g/y.txt", ["resutil://new:f/x.txt"], "from one")
    fresh = provider_for(config, tmp_path)
    _job(fresh, "resutil://new:f/x.txt", [], "two")  # the upstream job ran again
    assert not fresh.object("resutil://new:g/y.txt").exists()


def test_a_job_process_trusts_what_its_main_process_decided(tmp_path, monkeypatch):
    """A cluster job's process never evaluates the input functions of rules it does not
    run, so it does not see every query of the workflow; it resolves by experiment."""
    config = make_project(tmp_path / "proj")
    raw = make_experiment(config, "raw", {"d.txt": "1"})
    _job(provider_for(config, tmp_path), "resutil://new:f/x.txt", [f"resutil://{raw}/d.txt"], "x")
    main = provider_for(config, tmp_path)
    assert not main.object("resutil://new:f/x.txt").exists()  # raw's query is not declared
    # A cluster job is a Snakemake process started with `--mode remote`: the plugin reads
    # sys.argv only to tell that (Snakemake hands storage providers no documented flag for
    # it), so setting argv here is that process's real input, not a patch of Snakemake.
    monkeypatch.setattr(sys, "argv", ["snakemake", "--mode", "remote"])
    job = provider_for(config, tmp_path)
    assert job.object("resutil://new:f/x.txt").exists()


def test_a_cluster_jobs_output_stored_again_by_the_main_process_is_not_duplicated(tmp_path):
    config = make_project(tmp_path / "proj")
    query = "resutil://new:c/out.txt"
    node = provider_for(config, tmp_path)  # the job's own process
    announce(node, "r", [query], wildcards={"s": "1"})
    obj = node.object(query)
    write_local(obj, "result")
    obj.store_object()
    main = provider_for(config, tmp_path)  # Snakemake's main process, shared file system
    announce(main, "r", [query], wildcards={"s": "1"}, local=False, started=time.time() - 5)
    again = main.object(query)
    again.local_path().touch()  # the main process touches outputs before it stores them
    again.store_object()
    assert len(remote_names(config)) == 1
    # Another job (other wildcards) writing the same content is another experiment.
    announce(main, "r", ["resutil://new:c/out.txt"], wildcards={"s": "2"}, local=False)
    main.object(query).store_object()
    assert len(remote_names(config)) == 2


def test_rerunning_a_job_keeps_the_earlier_experiment(tmp_path):
    config = make_project(tmp_path / "proj")
    first = provider_for(config, tmp_path)
    _job(first, "resutil://new:f/x.txt", [], "one")
    second = provider_for(config, tmp_path)
    announce(second, "r", ["resutil://new:f/x.txt"])
    second.object("resutil://new:f/x.txt").remove()  # Snakemake's cleanup before rerunning
    assert len(remote_names(config)) == 1
    out = second.object("resutil://new:f/x.txt")
    write_local(out, "two")
    out.store_object()
    assert len(remote_names(config)) == 2


# -- touch, remove -------------------------------------------------------------------------
def test_touch_marks_an_output_newer_everywhere(tmp_path):
    config = make_project(tmp_path / "proj")
    _job(provider_for(config, tmp_path), "resutil://new:f/x.txt", [], "one")
    provider = provider_for(config, tmp_path)
    obj = provider.object("resutil://new:f/x.txt")
    before = obj.mtime()
    obj.touch()
    assert obj.mtime() > before
    [name] = remote_names(config)
    assert remote_meta(config, name).extra["snakemake"]["outputs"]["x.txt"]["mtime"] > before
    with pytest.raises(WorkflowError, match="no experiment"):
        provider.object("resutil://new:f/never.txt").touch()


def test_remove_respects_experiments_that_depend_on_it(tmp_path, caplog):
    config = make_project(tmp_path / "proj")
    provider = provider_for(config, tmp_path)
    _job(provider, "resutil://new:f/x.txt", [], "one")
    _job(provider, "resutil://new:g/y.txt", ["resutil://new:f/x.txt"], "two")
    fresh = provider_for(config, tmp_path, logging.getLogger("test.remove"))
    with caplog.at_level(logging.WARNING, "test.remove"):
        fresh.object("resutil://new:f/x.txt").remove()  # g depends on it: kept
    assert "is upstream of" in caplog.text
    assert len(remote_names(config)) == 2
    fresh.object("resutil://new:g/y.txt").remove()
    fresh.object("resutil://new:f/x.txt").remove()
    assert remote_names(config) == []


# -- settings -----------------------------------------------------------------------------
def test_a_tagged_provider_configures_only_itself(tmp_path, monkeypatch):
    """Snakemake hands a tagged provider's settings to the untagged one too; the untagged
    one ignores them and uses its own configuration."""
    mine = make_project(tmp_path / "mine")
    other = make_project(tmp_path / "other")
    monkeypatch.setenv("SNAKEMAKE_STORAGE_RESUTIL_CONFIG", str(mine))
    settings = StorageProviderSettings(config=str(other))
    log = logging.getLogger("test.tag")
    tagged = StorageProvider(local_prefix=tmp_path / "s" / "other", logger=log,
                             settings=settings)
    untagged = StorageProvider(local_prefix=tmp_path / "s" / "resutil", logger=log,
                               settings=settings)
    assert tagged.project.config.path == other
    assert untagged.project.config.path == mine


def test_the_config_can_be_given_inline(tmp_path):
    remote = tmp_path / "remote"
    config = make_project(tmp_path / "proj", remote)
    name = make_experiment(config, "up", {"a.txt": "a"})
    node = tmp_path / "node"
    node.mkdir()
    inline = f"{{project_name: Proj, results_dir: res, storage_type: local, " \
             f"storage_config: {{path: {remote}}}}}"
    provider = provider_for(inline, node)
    obj = provider.object(f"resutil://{name}/a.txt")
    obj.retrieve_object()
    assert Path(obj.local_path()).read_text() == "a"  # one file, read from the archive
    assert provider.project.config.results_dir == Path.cwd() / "res"  # relative to the working folder


def test_offline_outputs_stay_local_with_a_manifest(tmp_path, monkeypatch):
    config = make_project(tmp_path / "proj")
    monkeypatch.setenv("RESUTIL_NO_REMOTE", "1")
    provider = provider_for(config, tmp_path)
    _job(provider, "resutil://new:f/x.txt", [], "one")
    [name] = Project.load(config.parent).workspace.names().values()
    assert local_meta(config, name).manifest is not None
    monkeypatch.delenv("RESUTIL_NO_REMOTE")
    assert remote_names(config) == []


def test_workflow_sources_are_not_an_experiment(tmp_path):
    config = make_project(tmp_path / "proj")
    provider = provider_for(config, tmp_path)
    query = "resutil://new:wf/snakemake-workflow-sources." + "ab" * 32 + ".tar.xz"
    obj = provider.object(query)
    write_local(obj, "sources")
    obj.store_object()
    assert obj.exists() and obj.size() == 7
    assert remote_names(config) == []
    obj.local_path().unlink()
    obj.retrieve_object()
    assert obj.local_path().read_text() == "sources"
    obj.remove()
    assert not obj.exists()
