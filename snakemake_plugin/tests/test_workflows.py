"""Whole Snakemake runs: Snakemake's own workflow tests with resutil as the default storage
provider, and a Snakefile reading and writing experiments through ``storage.resutil``."""

from __future__ import annotations

import shutil
import zipfile

import pytest
from plugin_helpers import (
    RESUTIL,
    git,
    make_experiment,
    make_project,
    provider_for,
    remote_meta,
    remote_names,
    resutil_list,
    run,
    said,
    snakemake,
)
from snakemake.common.tests import TestWorkflowsBase
from snakemake_interface_common.plugin_registry.plugin import TaggedSettings
from snakemake_storage_plugin_resutil import StorageProviderSettings

from resutil.naming import IDENTITY_LEN
from resutil.project import Project

pytestmark = pytest.mark.slow


class TestDefaultStorage(TestWorkflowsBase):
    """Snakemake's test workflows (``simple``, ``groups``), every file a resutil output:
    one experiment per job, nothing else."""

    __test__ = True
    latency_wait = 1
    jobs = {"simple": 5, "groups": 7}  # the jobs with outputs in each workflow

    @pytest.fixture(autouse=True)
    def _project(self, tmp_path):
        self.config = make_project(tmp_path / "proj")

    def get_executor(self) -> str:
        return "local"

    def get_executor_settings(self):
        return None

    def get_default_storage_provider(self) -> str:
        return "resutil"

    def get_default_storage_prefix(self) -> str:
        return "resutil://new:wf"

    def get_default_storage_provider_settings(self):
        tagged = TaggedSettings()
        tagged.register_settings(StorageProviderSettings(config=str(self.config)))
        return {"resutil": tagged}

    def run_workflow(self, test_name, tmp_path, deployment_method=frozenset()):
        super().run_workflow(test_name, tmp_path, deployment_method)
        names = remote_names(self.config)
        assert len(names) == self.jobs[test_name], names
        assert len({n[:IDENTITY_LEN] for n in names}) == len(names)
        for name in names:
            meta = remote_meta(self.config, name)
            assert name.endswith("_wf") and meta.status == "finished"
            assert meta.extra["snakemake"]["rule"] in ("a", "b", "c", "d")
            assert meta.extra["snakemake"]["outputs"]  # never an empty experiment


# -- a Snakefile using storage.resutil -------------------------------------------------------
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


def test_snakemake_reads_a_remote_experiment_and_writes_new_ones(tmp_path):
    root = tmp_path / "proj"
    root.mkdir()
    run([*RESUTIL, "init", "--project", "Proj", "--storage", "local",
         "--path", str(tmp_path / "remote"), "--yes"], root)
    config = root / "resutil-conf.yaml"
    upstream = make_experiment(config, "upstream", {"data.txt": "hello\n"})
    (root / "Snakefile").write_text(SNAKEFILE)
    env = {"SNAKEMAKE_STORAGE_RESUTIL_CONFIG": str(config)}

    first = snakemake(root, "--cores", "1", "--config", f"upstream={upstream[:22]}", env=env)
    assert "Storing in storage: resutil://new:tripled/out.txt" in said(first)
    rows = resutil_list(root)
    [doubled] = [n for n in rows if n.endswith("_doubled")]
    [tripled] = [n for n in rows if n.endswith("_tripled")]
    assert not rows[upstream]["local"]  # its one file read from the archive, not pulled
    project = Project.load(root)
    exp = project.remote.require(tripled)
    with project.storage.fetched(project.remote.archive_folder, exp.archive.name) as z:
        assert zipfile.ZipFile(z).read("out.txt") == b"hello\n" * 6
    deps = {n: [(d.name, d.source) for d in remote_meta(config, n).dependencies]
            for n in (doubled, tripled)}
    assert deps == {doubled: [(upstream, "declared")], tripled: [(doubled, "declared")]}

    # The next run finds the outputs on the remote, without the local folders or
    # Snakemake's own metadata, and makes no new experiment.
    project.workspace.remove(doubled)
    project.workspace.remove(tripled)
    shutil.rmtree(root / ".snakemake")
    second = snakemake(root, "--cores", "1", "--config", f"upstream={upstream[:22]}", env=env)
    assert "Nothing to be done" in said(second)
    assert sorted(resutil_list(root)) == sorted(rows)


def test_touch_and_delete_all_output(tmp_path):
    root = tmp_path / "proj"
    config = make_project(root)
    upstream = make_experiment(config, "upstream", {"data.txt": "x\n"})
    (root / "Snakefile").write_text(SNAKEFILE)
    env = {"SNAKEMAKE_STORAGE_RESUTIL_CONFIG": str(config)}
    args = ("--cores", "1", "--config", f"upstream={upstream}")
    snakemake(root, *args, env=env)
    made = remote_names(config)
    # The doubled output touched: now newer than the tripled one, which would rerun ...
    provider = provider_for(config, tmp_path)
    provider.object(f"resutil://{upstream}/data.txt")  # (what the Snakefile declares)
    provider.object("resutil://new:doubled/out.txt").touch()
    assert "triple" in said(snakemake(root, *args, "-n", env=env))
    # ... unless its output is touched too, instead of running the rule.
    snakemake(root, *args, "--touch", env=env)
    assert "Nothing to be done" in said(snakemake(root, *args, "-n", env=env))
    assert remote_names(config) == made  # touching makes no experiment
    deleted = snakemake(root, *args, "--delete-all-output", env=env)
    assert "Deleting" in said(deleted)
    assert [n for n in remote_names(config) if n.endswith(("_doubled", "_tripled"))] == []
    assert "double" in said(snakemake(root, *args, "-n", env=env))


def test_a_fresh_clone_on_another_input_reruns_and_never_mixes(tmp_path):
    root = tmp_path / "proj"
    config = make_project(root)
    raw1 = make_experiment(config, "raw", {"data.txt": "one\n"})
    raw2 = make_experiment(config, "raw", {"data.txt": "two\n"})
    (root / "Snakefile").write_text(SNAKEFILE)
    env = {"SNAKEMAKE_STORAGE_RESUTIL_CONFIG": str(config)}
    snakemake(root, "--cores", "1", "--config", f"upstream={raw1}", env=env)
    git(root, "init", "-q")  # (a clone: no results, no .snakemake)
    shutil.rmtree(root / "results")
    shutil.rmtree(root / ".snakemake")
    rerun = snakemake(root, "--cores", "1", "--config", f"upstream={raw2}", env=env)
    assert "Nothing to be done" not in said(rerun)
    tripled = sorted(n for n in remote_names(config) if n.endswith("_tripled"))
    assert len(tripled) == 2
    newest = remote_meta(config, tripled[-1])
    [doubled] = newest.dependencies
    assert [d.name for d in remote_meta(config, doubled.name).dependencies] == [raw2]
    shutil.rmtree(root / ".snakemake")  # (Snakemake's own record would rerun it anyway)
    back = snakemake(root, "--cores", "1", "--config", f"upstream={raw1}", env=env)
    assert "Nothing to be done" in said(back)  # made from raw1 before: reused
