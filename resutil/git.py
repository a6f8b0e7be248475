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
from collections.abc import Iterable
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


def run_bytes(args: list[str], cwd: Path) -> bytes | None:
    """``run`` for output that is file content (any bytes)."""
    try:
        out = subprocess.run(["git", *args], cwd=cwd, capture_output=True, timeout=TIMEOUT,
                             check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout if out.returncode == 0 else None


def has_commit(root: Path, commit: str) -> bool:
    """Whether the repository holds ``commit`` (a fresh clone may lack an unpushed one)."""
    return run(["cat-file", "-e", f"{commit}^{{commit}}"], root) is not None


def show(root: Path, commit: str, rel: str) -> bytes | None:
    """A file's content at ``commit`` (None when it did not exist there)."""
    return run_bytes(["show", f"{commit}:{rel}"], root)


def names(out: str | None) -> list[str]:
    """The paths of a ``-z`` listing."""
    return [p for p in (out or "").split("\0") if p]


def changed_between(root: Path, a: str, b: str) -> list[str]:
    """The files that differ between two commits (renames as a removal and an addition)."""
    return names(run(["diff", "--name-only", "--no-renames", "-z", a, b, "--"], root))


def diff(root: Path, a: str, b: str, exclude: Iterable[str] = ()) -> str | None:
    """The unified diff between two commits, without the ``exclude`` paths."""
    spec = [f":(exclude,literal){p}" for p in exclude]
    return run(["diff", "--no-color", "--no-ext-diff", "--no-renames", a, b, "--", ".", *spec],
               root)


def untracked(root: Path, rels: list[str]) -> set[str]:
    """Which of ``rels`` git neither tracks nor ignores (so nothing records them)."""
    if not rels:
        return set()
    out = run(["--literal-pathspecs", "ls-files", "-z", "--others", "--exclude-standard",
               "--", *rels], root)
    return set(names(out))


def ignored_entries(root: Path) -> list[str] | None:
    """What git ignores in the work tree, a wholly ignored folder as one entry (``data/``)."""
    out = run(["ls-files", "-z", "--others", "--ignored", "--exclude-standard", "--directory"],
              root)
    return None if out is None else names(out)


def worktree_add(root: Path, path: Path, commit: str) -> str | None:
    """Check ``commit`` out into a new linked work tree at ``path`` (detached: no branch
    moves, the user's work tree is untouched); None when it worked, else git's message."""
    try:
        out = subprocess.run(["git", "worktree", "add", "--detach", "-q", str(path), commit],
                             cwd=root, capture_output=True, timeout=TIMEOUT * 5, check=False)
    except (OSError, subprocess.SubprocessError) as e:
        return str(e)
    if out.returncode == 0:
        return None
    lines = out.stderr.decode("utf-8", "replace").strip().splitlines()
    return lines[-1] if lines else f"git worktree add failed ({out.returncode})"


def worktree_remove(root: Path, path: Path) -> None:
    """Remove a linked work tree made by ``worktree_add`` and forget it."""
    run(["worktree", "remove", "--force", "--force", str(path)], root)
    run(["worktree", "prune"], root)
