"""Git, in one place: every question resutil asks a repository goes through ``run``.

Why the ``git`` command and not GitPython (measured on this project's 2-core machine):
``import git`` (GitPython 3.2) takes 116 ms, paid by every run when it starts and by
``resutil pipeline status``, and every command resutil needs (rev-parse, diff, ls-files,
ls-tree) is one that GitPython itself runs through the ``git`` binary. So this module calls
the binary directly, with a time-out, and treats a missing git or a failing command as "no
answer" (a run outside a repository records no commit; it never fails because of git).
"""

from __future__ import annotations

import subprocess
from pathlib import Path

TIMEOUT = 60.0


def run(args: list[str], cwd: Path) -> str | None:
    """The output of ``git ARGS`` in ``cwd``, or None when git is missing or fails.

    Output is decoded as UTF-8 with surrogate escapes, so any file name round-trips.
    """
    try:
        out = subprocess.run(["git", *args], cwd=cwd, capture_output=True, timeout=TIMEOUT,
                             check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.decode("utf-8", "surrogateescape") if out.returncode == 0 else None


def toplevel(cwd: Path) -> Path | None:
    """The root of the work tree holding ``cwd``, or None outside a repository."""
    top = run(["rev-parse", "--show-toplevel"], cwd)
    return Path(top.strip()) if top else None


def head(root: Path) -> str | None:
    """The commit HEAD points at, or None in a repository without commits."""
    out = run(["rev-parse", "--verify", "-q", "HEAD"], root)
    return out.strip() if out else None
