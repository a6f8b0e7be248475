"""A scatter/gather workflow on Snakemake's cluster-generic executor: every job a separate
process, submitted the way a cluster would run it, with and without a shared file system.
"""

from __future__ import annotations

import os
from datetime import datetime
from pathlib import Path

import pytest
from plugin_helpers import (
    BIN,
    RESUTIL,
    git,
    make_experiment,
    make_project,
    remote_meta,
    remote_names,
    run,
    said,
    snakemake,
)

from resutil.naming import IDENTITY_LEN
from resutil.project import Project

pytestmark = pytest.mark.slow

SNAKEFILE = """
RAW = config["raw"]
S = ["a", "b", "c", "d"]

rule all:
    input: storage.resutil("resutil://new:report/summary.txt")

rule count:
    input: storage.resutil(f"resutil://{RAW}/{{s}}.txt")
    output: storage.resutil("resutil://new:counts/{s}.tsv")
    log: storage.resutil("resutil://new:counts/{s}.log")
    shell: "python -c 'import time; print(time.time())' > {log}; wc -c < {input} > {output}"

rule gather:
    input: storage.resutil(expand("resutil://new:counts/{s}.tsv", s=S))
    output: storage.resutil("resutil://new:report/summary.txt")
    shell: "cat {input} > {output}"
"""

# Submit: run the job script in the background as its own process; print its id.
SUBMIT_SHARED = """#!/bin/sh
nohup sh "$1" > "$1.log" 2>&1 &
echo $!
"""
# A cluster without a shared file system, on one machine: each job runs in its own empty
# "node" folder (Snakemake deploys the workflow's sources there); only the resutil storage
# is shared. The job id is the node folder; the status command reads its exit code.
SUBMIT_NODE = """#!/bin/sh
id="$(basename "$1" .sh)-$$"
mkdir -p "$NODES/$id"
cp "$1" "$NODES/$id/job.sh"
( cd "$NODES/$id" && sh job.sh > job.log 2>&1; echo $? > rc ) > /dev/null 2>&1 &
echo "$id"
"""
STATUS_NODE = """#!/bin/sh
rc="$NODES/$1/rc"
if [ ! -f "$rc" ]; then echo running; elif [ "$(cat "$rc")" = 0 ]; then echo success; \
else echo failed; fi
"""
CLUSTER = ("--executor", "cluster-generic", "--jobs", "4", "--latency-wait", "20",
           "--seconds-between-status-checks", "1")


def workflow(tmp_path: Path) -> tuple[Path, Path, str]:
    """A git repository with the Snakefile and the resutil config; a raw experiment on the
    remote. Returns (root, config, raw experiment)."""
    root = tmp_path / "proj"
    config = make_project(root)
    (root / "Snakefile").write_text(SNAKEFILE)
    (root / ".gitignore").write_text("results/\n.snakemake/\n")
    for name, text in (("submit.sh", SUBMIT_SHARED), ("submit-node.sh", SUBMIT_NODE),
                       ("status-node.sh", STATUS_NODE)):
        (root / name).write_text(text)
        os.chmod(root / name, 0o755)
    git(root, "init", "-q")
    git(root, "add", "-A")
    git(root, "commit", "-qm", "workflow")
    raw = make_experiment(config, "raw", {f"{s}.txt": s * (i + 1) for i, s in enumerate("abcd")})
    return root, config, raw


def job_experiments(config: Path, raw: str) -> dict[str, list[str]]:
    """comment -> names of the experiments the workflow made."""
    out: dict[str, list[str]] = {}
    for name in remote_names(config):
        if name != raw:
            out.setdefault(name[IDENTITY_LEN + 1:], []).append(name)
    return out


def check_lineage_and_records(config: Path, raw: str, commit: str) -> dict[str, list[str]]:
    made = job_experiments(config, raw)
    assert sorted(made) == ["counts", "report"], made  # no other experiment (no "wf")
    assert len(made["counts"]) == 4 and len(made["report"]) == 1  # one per job
    names = made["counts"] + made["report"]
    assert len({n[:IDENTITY_LEN] for n in names}) == 5  # no identity clash
    project = Project.load(config.parent)
    samples = []
    for name in made["counts"]:
        meta = remote_meta(config, name)
        job = meta.extra["snakemake"]
        assert job["rule"] == "count"
        samples.append(job["wildcards"]["s"])
        assert [d.name for d in meta.dependencies] == [raw]
        assert meta.commit_hash == commit
        assert meta.args == job["shellcmd"] and "wc -c" in meta.args  # the job's own command
        # Started before the job ran: the job wrote the time it ran into its output.
        with project.storage.fetched(project.remote.archive_folder,
                                     project.remote.require(name).archive.name) as z:
            import zipfile

            ran = float(zipfile.ZipFile(z).read(f"{job['wildcards']['s']}.log"))
        assert datetime.fromisoformat(meta.started_at).timestamp() <= ran
        assert meta.started_at <= meta.ended_at
        assert sorted(job["outputs"]) == [f"{job['wildcards']['s']}.{x}" for x in ("log", "tsv")]
    assert sorted(samples) == ["a", "b", "c", "d"]
    report = remote_meta(config, made["report"][0])
    assert report.extra["snakemake"]["rule"] == "gather"
    assert sorted(d.name for d in report.dependencies) == sorted(made["counts"])
    return made


def test_shared_file_system(tmp_path):
    root, config, raw = workflow(tmp_path)
    env = {"SNAKEMAKE_STORAGE_RESUTIL_CONFIG": str(config)}
    snakemake(root, *CLUSTER, "--cluster-generic-submit-cmd", str(root / "submit.sh"),
              "--config", f"raw={raw}", env=env)
    made = check_lineage_and_records(config, raw, git(root, "rev-parse", "HEAD"))

    # Up to date: nothing runs, nothing is made.
    again = snakemake(root, "--cores", "2", "--config", f"raw={raw}", env=env)
    assert "Nothing to be done" in said(again)
    assert job_experiments(config, raw) == made

    # Reproducing one job's experiment reruns that job only, at the recorded commit, with
    # the input it read; its output is identical (the log holds the time it ran).
    name = sorted(made["counts"])[0]
    run([*RESUTIL, "reproduce", "--ignore", "*.log", name], root, env)
    repro = job_experiments(config, raw)
    [new] = repro.pop("counts-repro")
    assert repro == made
    meta = remote_meta(config, new)
    assert meta.extra["reproduces"]["name"] == name and meta.status == "finished"
    assert [d.name for d in meta.dependencies] == [raw]


def test_no_shared_file_system(tmp_path):
    """Nodes share nothing but the resutil storage: the workflow's sources go through it
    (not as an experiment), each node has its own results folder, and the jobs still
    record the workflow's commit and their lineage."""
    root, config, raw = workflow(tmp_path)
    nodes = tmp_path / "nodes"
    nodes.mkdir()
    inline = (f"{{project_name: Proj, results_dir: results, storage_type: local, "
              f"storage_config: {{path: {root / 'remote'}}}}}")
    env = {"NODES": str(nodes), "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}
    snakemake(root, *CLUSTER, "--cluster-generic-submit-cmd", str(root / "submit-node.sh"),
              "--cluster-generic-status-cmd", str(root / "status-node.sh"),
              "--shared-fs-usage", "none", "--job-deploy-sources",
              "--default-storage-provider", "resutil",
              "--default-storage-prefix", "resutil://new:wf",
              "--storage-resutil-config", inline, "--config", f"raw={raw}", env=env)
    made = check_lineage_and_records(config, raw, git(root, "rev-parse", "HEAD"))
    assert len(list(nodes.iterdir())) == 5  # five jobs, five nodes
    for name in made["counts"] + made["report"]:  # made on a node, never in the main folder
        assert not (root / "results" / name).exists()
    remote_files = root / "remote" / "Proj.resutil-files"
    assert not remote_files.exists() or not list(remote_files.iterdir())  # sources removed
