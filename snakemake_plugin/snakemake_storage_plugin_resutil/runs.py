"""The experiments this process writes: one per job (and comment), stored once, complete.

A job's first stored output makes its experiment, named by the time the job started, with
the job's record (rule, wildcards, command, the workflow's commit and changed files).
Each output is copied in; when the job's last output is stored the experiment records
where its inputs came from, is marked finished and is published (``resutil.publish``: the
run id and identity claim keep jobs finishing at the same second on different nodes
apart). Until then, Snakemake's checks after each stored output are answered from here.

Inside ``resutil reproduce`` (RESUTIL_EXPERIMENT_DIR set) the outputs go to the folder it
made, and it publishes.
"""

from __future__ import annotations

import os
import shlex
import shutil
import sys
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Callable

from resutil.capture import copy_changed_files
from resutil.errors import ResutilError
from resutil.metadata import ExpMeta, read_meta, upstream_record, write_meta
from resutil.project import Project
from resutil.publish import publish
from resutil.runs import ADOPT_ENV, mark_ended, new_experiment, record_start, seal

from . import records, sources
from .jobs import JobInfo, command_line, reproduce_command, workflow_file
from .queries import parse_query
from .records import Found


@dataclass
class Run:
    """One experiment this process writes: the outputs of one job with one comment."""

    comment: str
    job: JobInfo | None
    folder: Path
    meta: ExpMeta
    expected: set[str]  # the output paths the job will store; empty: not known
    outputs: dict[str, dict[str, Any]] = field(default_factory=dict)
    queries: dict[str, str] = field(default_factory=dict)  # path -> the query stored there
    published: bool = False

    @property
    def name(self) -> str:
        return self.folder.name

    def complete(self) -> bool:
        return bool(self.expected) and self.expected <= set(self.outputs)

    def found(self, path: str) -> Found | None:
        rec = records.output_holding(self.outputs, path)
        target = self.folder / path
        if rec is None or not target.exists():
            return None
        mtime = float(rec.get("mtime") or 0.0)
        if target.is_dir():
            return Found(self.name, self.folder, mtime, 0, records.folder_size(target))
        size = target.stat().st_size
        return Found(self.name, self.folder, mtime, size, size, rec.get("sha256"))


class Runs:
    """This process's experiments, by job and comment."""

    def __init__(self, project: Callable[[], Project], use_remote: Callable[[], bool],
                 local_prefix: Path, snakefile: Callable[[], str | None],
                 log: Callable[[str], None]) -> None:
        self._project = project
        self._use_remote = use_remote
        self._local_prefix = local_prefix
        self._snakefile = snakefile
        self._log = log
        self._lock = threading.RLock()
        self.by_key: dict[tuple[str, str], Run] = {}
        self.by_query: dict[str, Run] = {}
        adopt = os.environ.get(ADOPT_ENV)
        self.adopted = Path(adopt).resolve() if adopt else None

    @property
    def project(self) -> Project:
        return self._project()

    def find(self, query: str, path: str) -> Found | None:
        """The output ``query`` if this process stored it."""
        run = self.by_query.get(query)
        return run.found(path) if run is not None else None

    def pending(self) -> list[Run]:
        return [r for r in self.by_key.values() if not r.published]

    # -- writing ----------------------------------------------------------------------------
    def store(self, query: str, comment: str, path: str, src: Path, job: JobInfo | None,
              inputs: Callable[[Run], dict[str, dict[str, Any]]]) -> Run:
        """Copy an output into its job's experiment; publish the experiment when the job's
        last output is in (at once when the job is not known)."""
        with self._lock:
            run = self._run(comment, job)
            dest = run.folder / path
            _replace(src, dest)
            now = time.time()
            records.set_mtime(dest, now)
            # Snakemake sets the local copy's mtime to the stored one after most stores but
            # not in a cluster job: do it here, so the copy says it is the stored output.
            records.set_mtime(src, now)
            is_dir = dest.is_dir()
            run.outputs[path] = {
                "mtime": now,
                "size": 0 if is_dir else dest.stat().st_size,
                "dir": is_dir,
                "sha256": records.content_sha256(dest),
            }
            run.queries[path] = query
            self.by_query[query] = run
            run.published = False
            if not run.expected or run.complete():
                self.finish(run, inputs(run))
            return run

    def _run(self, comment: str, job: JobInfo | None) -> Run:
        key = ("" if self.adopted else job.key if job else "", "" if self.adopted else comment)
        run = self.by_key.get(key)
        if run is not None:
            return run
        expected = set()
        if job is not None and not self.adopted:
            for q in job.products:
                parsed = parse_query(q)
                if parsed.new and parsed.experiment == comment:
                    expected.add(parsed.path)
        folder, meta = self._create(comment, job)
        run = Run(comment, job, folder, meta, expected)
        self.by_key[key] = run
        self._log(f"resutil: {'job ' + job.key if job else 'outputs of new:' + comment} "
                  f"go to experiment {folder.name}")
        return run

    def _create(self, comment: str, job: JobInfo | None) -> tuple[Path, ExpMeta]:
        project = self.project
        workdir = Path.cwd()
        if self.adopted is not None:
            folder, meta = self.adopted, read_meta(self.adopted, with_manifest=False)
        else:
            started = datetime.fromtimestamp(job.started) if job else datetime.now()
            folder, meta = new_experiment(project, comment, claim=self._use_remote(),
                                          when=started)
            node = sources.node_code(workdir)  # no repository here: the main process's
            record_start(project, folder, meta, shlex.join(sys.argv), cwd=workdir,
                         code=node is None, argv=None if job else sys.argv)
            if node is not None:
                meta.commit_hash = node.commit
                meta.uncommitted_files = copy_changed_files(
                    node, folder, exclude=[*project.key_files(), project.config.results_dir])
            meta.started_at = started.astimezone().isoformat(timespec="seconds")
        section: dict[str, Any] = {"format": records.FORMAT, "workdir": str(workdir)}
        if job is not None:
            snakefile = workflow_file(self._snakefile())
            targets = [str(Path(".snakemake/storage") / self._local_prefix.name
                           / parse_query(q).local_suffix()) for q in job.outputs]
            argv = reproduce_command(job, snakefile, targets, ".snakemake/storage")
            section.update(rule=job.rule, wildcards=dict(job.wildcards), started=job.started,
                           shellcmd=job.shellcmd, snakefile=snakefile, reproduce=argv)
            if self.adopted is None:
                meta.args = command_line(job, argv)
        section.update(inputs={}, outputs={})
        meta.extra[records.RECORD_KEY] = section
        write_meta(folder, meta)
        return folder, meta

    def finish(self, run: Run, inputs: dict[str, dict[str, Any]]) -> None:
        """Record the job's inputs and outputs, mark it finished and publish it."""
        meta = run.meta
        section = meta.extra[records.RECORD_KEY]
        section["outputs"] = dict(run.outputs)
        section["inputs"] = inputs
        ws = self.project.workspace
        for used in inputs.values():
            local = ws.local_name(used["name"])
            upstream = upstream_record(ws.path(local)) if local else {"run_id": used.get("run_id")}
            meta.add_dependency(local or used["name"], "declared", **upstream)
        if self.adopted is None:
            failed = run.job is not None and run.job.failed
            mark_ended(meta, "failed" if failed else "finished")
        meta.manifest = None  # sealed anew by the push (or below)
        write_meta(run.folder, meta)
        run.published = True
        if self.adopted is not None:
            return  # resutil reproduce records the end and publishes
        if not self._use_remote():
            seal(run.folder, meta)
            return
        try:
            published = publish(self.project, run.folder)
        except ResutilError as e:
            raise ResutilError(
                f"{e}; the output is kept in {run.folder} - run 'resutil push {run.name}' later"
            ) from None
        if published.name != run.folder.name:
            run.folder = self.project.workspace.path(published.name)
            run.meta = read_meta(run.folder, with_manifest=False)

    def forget(self, run: Run) -> None:
        """Stop writing ``run`` (its experiment was removed)."""
        with self._lock:
            self.by_key = {k: r for k, r in self.by_key.items() if r is not run}
            self.by_query = {q: r for q, r in self.by_query.items() if r is not run}


def _replace(src: Path, dest: Path) -> None:
    """Copy ``src`` (file or folder) to ``dest``, replacing what is there."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.resutil-tmp")
    _remove(tmp)
    if src.is_dir():
        shutil.copytree(src, tmp, symlinks=False)
    else:
        shutil.copy2(src, tmp)
    _remove(dest)
    os.rename(tmp, dest)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()
