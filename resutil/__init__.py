"""resutil: one readable, self-describing, synced folder per experiment run.

    import resutil

    @resutil.main()
    def main(params):
        (params.ex_dir / "result.txt").write_text("42")

One file of any experiment, local or only on the remote (read from its archive with
ranged requests, checked against its recorded hash)::

    with resutil.open("aapiyl", "metrics.json") as f:
        metrics = json.load(f)

``import resutil`` stays light: the decorator's machinery loads on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, BinaryIO

from .errors import ResutilError

__all__ = ["ResutilError", "experiment", "main", "open", "Params"]

if TYPE_CHECKING:
    from .decorator import Params, experiment, main
    from .project import Project


def open(experiment: str, path: str, project: Project | None = None) -> BinaryIO:  # noqa: A001
    """One file of an experiment as a readable binary file: from its folder when the
    experiment is here, else from its archive on the remote by ranged reads (nothing else
    is downloaded); a damaged file raises ResutilError. ``experiment`` is a name, identity
    or unique prefix; ``project`` defaults to the one whose resutil-conf.yaml is found
    from the current folder up."""
    from .partial import open_file
    from .project import Project

    return open_file(project or Project.load(), experiment, path)


def __getattr__(name: str) -> Any:
    if name in ("main", "experiment", "Params"):
        from . import decorator

        return getattr(decorator, name)
    raise AttributeError(f"module 'resutil' has no attribute {name!r}")
