"""``resutil-pipeline.yaml``: steps that become experiments, rerun only when they changed.

A step is up to date when a finished experiment carries its fingerprint: a hash of the
step's definition, the content of the files it runs and the identities of its upstream
experiments. Fingerprints
live in each experiment's metadata (``pipeline: {step, fingerprint, ...}``), so deciding
needs no hashing of results: local metadata heads and the remote's sidecars are enough.

- ``spec``: the pipeline file: format, validation, ``load_pipeline``, ``expand``.
- ``fingerprint``: the files a step runs (``StepCode``) and a step's fingerprint.
- ``index``: the runs the pipeline knows (``Known``, ``Candidate``), local and remote.
- ``plan``: which steps are up to date or stale and why (``Planner.decide``, the one place
  a step is decided; ``pipeline_status``).
- ``runner``: running the steps (``run_pipeline``), one command in an experiment folder
  (``execute``, shared with reproduce) and publishing it (``push_folder``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .index import Candidate, Known
from .plan import Decision, Planner, StepStatus, changes, pipeline_status
from .spec import (
    PIPELINE_FILE,
    Need,
    Pipeline,
    Step,
    expand,
    find_pipeline_file,
    init_template,
    load_pipeline,
    param_text,
    template_text,
)

if TYPE_CHECKING:
    from .runner import (
        ADOPT_ENV,
        STEP_LOG,
        Event,
        Outcome,
        RunReport,
        StepResult,
        execute,
        log_tail,
        push_folder,
        run_pipeline,
    )

# The runner's names load on first use: it imports the runs' records and publication (runs,
# publish), which `pipeline status` and `pipeline graph` do not need.
_RUNNER = ("ADOPT_ENV", "STEP_LOG", "Event", "Outcome", "RunReport", "StepResult", "execute",
           "log_tail", "push_folder", "run_pipeline")


def __getattr__(name: str) -> Any:
    if name in _RUNNER:
        from . import runner

        return getattr(runner, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


# (``fingerprint`` is not re-exported: the name stays the submodule's.)
__all__ = [
    "ADOPT_ENV", "PIPELINE_FILE", "STEP_LOG", "Candidate", "Decision", "Event", "Known",
    "Need", "Outcome", "Pipeline", "Planner", "RunReport", "Step", "StepResult", "StepStatus",
    "changes", "execute", "expand", "find_pipeline_file", "init_template", "load_pipeline",
    "log_tail", "param_text", "pipeline_status", "push_folder", "run_pipeline",
    "template_text",
]
