"""Helpers for the plugin's tests: real resutil projects on the local backend, Snakemake
runs as subprocesses, the job announcements Snakemake logs."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

from snakemake_storage_plugin_resutil import StorageProvider, StorageProviderSettings

from resutil.initialize import InitOptions, init_project
from resutil.metadata import ExpMeta, read_meta, write_meta
from resutil.project import Project
from resutil.publish import publish
from resutil.runs import new_experiment

BIN = Path(sys.executable).parent
RESUTIL = [str(BIN / "resutil")]  # the venv's console script


def make_project(root: Path, remote: Path | None = None) -> Path:
    """A resutil project in ``root`` (remote: ``root/remote``); returns the config file."""
    root.mkdir(parents=True, exist_ok=True)
    return init_project(InitOptions(project_name="Proj", storage_type="local",
                                    path=str(remote or root / "remote")), root)


def make_experiment(config: Path, comment: str, files: dict[str, str],
                    keep_local: bool = False, when: datetime | None = None) -> str:
    """A finished experiment (not written by the plugin), pushed; removed locally unless
    ``keep_local``. Returns its name."""
    project = Project.load(config.parent)
    folder, meta = new_experiment(project, comment, when=when)
    for rel, text in files.items():
        (folder / rel).parent.mkdir(parents=True, exist_ok=True)
        (folder / rel).write_text(text)
    meta.status = "finished"
    meta.started_at = meta.ended_at = datetime.now().astimezone().isoformat(timespec="seconds")
    write_meta(folder, meta)
    name = publish(project, folder).name
    if not keep_local:
        project.workspace.remove(name)
    return name


def remote_meta(config: Path, name: str) -> ExpMeta:
    project = Project.load(config.parent)
    return project.remote.meta(project.remote.require(name))


def local_meta(config: Path, name: str) -> ExpMeta:
    project = Project.load(config.parent)
    return read_meta(project.workspace.path(project.workspace.local_name(name)))


def remote_names(config: Path) -> list[str]:
    return sorted(Project.load(config.parent).remote.names())


def provider_for(config: Path | str, tmp_path: Path, logger: logging.Logger | None = None
                 ) -> StorageProvider:
    return StorageProvider(
        local_prefix=tmp_path / "local_prefix" / "resutil",
        logger=logger or logging.getLogger(f"test.{time.monotonic_ns()}"),
        settings=StorageProviderSettings(config=str(config)),
    )


def announce(provider: StorageProvider, rule: str, outputs: list[str],
             inputs: list[str] = (), wildcards: dict | None = None, local: bool = True,
             started: float | None = None, shellcmd: str | None = None) -> None:
    """What Snakemake logs before it runs a job (LogEvent.JOB_INFO), sent to the provider."""
    record = logging.LogRecord("snakemake.logging", logging.INFO, __file__, 0,
                               f"rule {rule}", None, None)
    record.event = "job_info"
    record.rule_name, record.jobid, record.local = rule, 1, local
    record.wildcards = wildcards or {}
    record.output = [f"{q} (send to storage)" for q in outputs]
    record.input = [f"{q} (retrieve from storage)" for q in inputs]
    record.log, record.benchmark, record.shellcmd = [], None, shellcmd
    if started is not None:
        record.created = started
    provider.events.handle(record)


def write_local(obj, text: str) -> None:
    path = obj.local_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


# -- running things --------------------------------------------------------------------------
def run(cmd: list[str], cwd: Path, env: dict | None = None, ok: bool = True,
        timeout: float = 180) -> subprocess.CompletedProcess:
    full = {k: v for k, v in os.environ.items()
            if not k.startswith(("RESUTIL_", "SNAKEMAKE_STORAGE_RESUTIL"))}
    full["PATH"] = f"{BIN}{os.pathsep}{full.get('PATH', '')}"
    full.update(env or {})
    proc = subprocess.run(cmd, cwd=cwd, env=full, capture_output=True, text=True,
                          timeout=timeout, check=False)
    if ok:
        assert proc.returncode == 0, (proc.stdout[-2000:], proc.stderr[-4000:])
    return proc


def snakemake(workdir: Path, *args: str, env: dict | None = None,
              ok: bool = True) -> subprocess.CompletedProcess:
    return run([sys.executable, "-m", "snakemake", *args], workdir, env, ok)


def said(proc: subprocess.CompletedProcess) -> str:
    """Everything a command printed (Snakemake logs to stderr, a dry run's plan to stdout)."""
    return proc.stdout + proc.stderr


def resutil_list(root: Path) -> dict[str, dict]:
    out = run([*RESUTIL, "list", "--json"], root).stdout
    return {r["name"]: r for r in json.loads(out)}


def git(root: Path, *args: str) -> str:
    return run(["git", "-c", "user.email=t@example.org", "-c", "user.name=t", *args],
               root).stdout.strip()
