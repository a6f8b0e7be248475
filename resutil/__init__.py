"""resutil: one readable, self-describing, synced folder per experiment run.

    import resutil

    @resutil.main()
    def main(params):
        (params.ex_dir / "result.txt").write_text("42")

``import resutil`` stays light: the decorator's machinery loads on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .errors import ResutilError

__all__ = ["ResutilError", "experiment", "main", "Params"]

if TYPE_CHECKING:
    from .decorator import Params, experiment, main


def __getattr__(name: str) -> Any:
    if name in ("main", "experiment", "Params"):
        from . import decorator

        return getattr(decorator, name)
    raise AttributeError(f"module 'resutil' has no attribute {name!r}")
