"""Which Snakemake job a file belongs to, learnt from Snakemake's documented log events.

A storage plugin is never told which job stores an output. Snakemake does announce every
job it runs, though: before running it, it logs a ``LogEvent.JOB_INFO`` record carrying the
job's rule, wildcards, input, output, log and benchmark files and shell command (the fields
snakemake-interface-logger-plugins documents for logger plugins). The provider listens on
the logger Snakemake hands it and keeps, per output query, the job that writes it: so the
outputs of one job become one experiment, with its rule, wildcards, command, start time
and the experiments its inputs came from.

Without those events (a Snakemake that no longer sends them, the Python API with another
logger, a direct call) the plugin falls back to one experiment per comment per process.
"""

from __future__ import annotations

import logging
import shlex
import sys
import threading
import time
import weakref
from dataclasses import dataclass, field
from pathlib import Path

from .queries import queries_in

# snakemake-interface-logger-plugins' LogEvent values (a StrEnum), compared as text so that
# this module does not depend on that package.
JOB_INFO = "job_info"
JOB_ERROR = "job_error"
WORKFLOW_STARTED = "workflow_started"


@dataclass
class JobInfo:
    """One job as Snakemake announced it."""

    rule: str
    wildcards: dict[str, str]
    jobid: int | None = None
    shellcmd: str | None = None
    inputs: list[str] = field(default_factory=list)  # resutil queries it reads
    outputs: list[str] = field(default_factory=list)  # resutil queries of its outputs
    logs: list[str] = field(default_factory=list)  # ... of its log and benchmark files
    started: float = field(default_factory=time.time)
    local: bool = True  # run by this process (not submitted to a cluster or cloud)
    failed: bool = False

    @property
    def products(self) -> list[str]:
        """Everything it stores: outputs, log and benchmark files."""
        return [*self.outputs, *self.logs]

    @property
    def key(self) -> str:
        """Rule and wildcards: the same job in every process of a workflow."""
        wildcards = ",".join(f"{k}={v}" for k, v in sorted(self.wildcards.items()))
        return f"{self.rule}:{wildcards}"


class JobEvents(logging.Handler):
    """Collects Snakemake's job announcements for one storage provider."""

    def __init__(self) -> None:
        super().__init__(level=logging.DEBUG)
        self._lock = threading.Lock()
        self.by_query: dict[str, JobInfo] = {}
        self.by_id: dict[int, JobInfo] = {}
        self.snakefile: str | None = None

    def emit(self, record: logging.LogRecord) -> None:
        try:
            event = str(getattr(record, "event", "") or "")
            if event == JOB_INFO:
                self._job_info(record)
            elif event == JOB_ERROR:
                job = self.by_id.get(getattr(record, "jobid", -1))
                if job is not None:
                    job.failed = True
            elif event == WORKFLOW_STARTED:
                snakefile = getattr(record, "snakefile_main", None) \
                    or getattr(record, "snakefile", None)
                if snakefile:
                    self.snakefile = str(snakefile)
        except Exception:  # noqa: BLE001 - never break Snakemake's logging
            pass

    def _job_info(self, record: logging.LogRecord) -> None:
        wildcards = getattr(record, "wildcards", None) or {}
        job = JobInfo(
            rule=str(getattr(record, "rule_name", "") or ""),
            wildcards={str(k): str(v) for k, v in dict(wildcards).items()},
            jobid=getattr(record, "jobid", None),
            shellcmd=getattr(record, "shellcmd", None) or None,
            inputs=queries_in(getattr(record, "input", None)),
            outputs=queries_in(getattr(record, "output", None)),
            logs=[*queries_in(getattr(record, "log", None)),
                  *queries_in([getattr(record, "benchmark", None)])],
            started=record.created,
            local=bool(getattr(record, "local", True)),
        )
        with self._lock:
            if job.jobid is not None:
                self.by_id[job.jobid] = job
            for query in job.products:
                self.by_query[query] = job

    def job_for(self, query: str) -> JobInfo | None:
        """The job that writes ``query`` (the latest announced), or None."""
        with self._lock:
            return self.by_query.get(query)


def listen(logger: logging.Logger, owner: object, handler: JobEvents) -> None:
    """Attach ``handler`` to ``logger`` for as long as ``owner`` lives."""
    logger.addHandler(handler)
    weakref.finalize(owner, logger.removeHandler, handler)


# -- the command line Snakemake was started with -------------------------------------------
def is_job_process(argv: list[str] | None = None) -> bool:
    """Whether this process runs jobs an executor submitted (``--mode remote``): the main
    process already decided what runs, this one runs exactly that."""
    argv = sys.argv if argv is None else argv
    for i, arg in enumerate(argv):
        if arg == "--mode" and i + 1 < len(argv):
            return argv[i + 1] == "remote"
        if arg.startswith("--mode="):
            return arg.split("=", 1)[1] == "remote"
    return False


_CONFIG_FLAGS = ("--config", "-C", "--configfile", "--configfiles")


def config_args(argv: list[str] | None = None) -> list[str]:
    """The ``--config``/``--configfile`` arguments Snakemake was started with."""
    argv = sys.argv if argv is None else argv
    out: list[str] = []
    i = 0
    while i < len(argv):
        arg = argv[i]
        flag, eq, value = arg.partition("=")
        if flag in _CONFIG_FLAGS:
            out.append(flag)
            if eq:
                out.append(value)
            i += 1
            while not eq and i < len(argv) and not argv[i].startswith("-"):
                out.append(argv[i])
                i += 1
            continue
        i += 1
    return out


def reproduce_command(job: JobInfo, snakefile: str | None, targets: list[str],
                      local_storage_prefix: str) -> list[str]:
    """The command that reruns just ``job``, from its working directory: its outputs as
    targets (their local copies' paths), forced, with only its rule allowed."""
    argv = ["python", "-m", "snakemake"]
    if snakefile:
        argv += ["--snakefile", snakefile]
    argv += ["--cores", "1", "--nolock", "--force", "--allowed-rules", job.rule,
             "--local-storage-prefix", local_storage_prefix, *targets]
    return argv + config_args()  # last: --config takes every argument after it


def workflow_file(snakefile: str | None) -> str | None:
    """The Snakefile as a path relative to the working directory when it is inside it."""
    if not snakefile:
        return None
    path = Path(snakefile)
    try:
        return path.resolve().relative_to(Path.cwd().resolve()).as_posix()
    except (OSError, ValueError):
        return str(path)


def command_line(job: JobInfo, reproduce: list[str]) -> str:
    """What a job experiment records as its command (``args``): its shell command, else the
    command that reruns it."""
    return job.shellcmd.strip() if job.shellcmd else shlex.join(reproduce)
