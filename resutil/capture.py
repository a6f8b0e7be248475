"""What a run observes about itself: code (git), environment, output, upstream reads."""

from __future__ import annotations

import functools
import getpass
import io
import os
import platform
import shutil
import socket
import stat
import subprocess
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, TextIO

from .metadata import UNCOMMITTED_DIR
from .naming import parse_name

STDOUT_LOG = "resutil-stdout.log"
STDERR_LOG = "resutil-stderr.log"


# -- git ------------------------------------------------------------------------------------
@dataclass
class GitState:
    """The commit a run started from and the tracked files that differ from it (files git
    ignores left out, even when tracked)."""

    root: Path | None = None
    commit: str | None = None
    changed: list[str] = field(default_factory=list)


def _git(args: list[str], cwd: Path) -> str | None:
    try:
        out = subprocess.run(
            ["git", *args], cwd=cwd, capture_output=True, text=True, timeout=30, check=False
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout if out.returncode == 0 else None


def git_state(cwd: Path | None = None) -> GitState:
    """Git facts for the repository containing ``cwd``; empty when there is none."""
    cwd = cwd or Path.cwd()
    top = _git(["rev-parse", "--show-toplevel"], cwd)
    if not top:
        return GitState()
    root = Path(top.strip())
    head = _git(["rev-parse", "--verify", "-q", "HEAD"], root)
    # Modified (unstaged) and staged files, deleted ones excluded (nothing to copy).
    unstaged = _git(["diff", "--name-only", "-z", "--diff-filter=d"], root) or ""
    staged = _git(["diff", "--cached", "--name-only", "-z", "--diff-filter=d"], root) or ""
    changed = {p for p in (unstaged + staged).split("\0") if p}
    if changed:
        # A tracked file that is ignored now (a .env committed once, then listed in
        # .gitignore) is as secret as an untracked one. If git cannot tell, copy nothing.
        ignored = _git(["ls-files", "-z", "--cached", "--ignored", "--exclude-standard"], root)
        changed = changed - set(ignored.split("\0")) if ignored is not None else set()
    return GitState(root, head.strip() if head else None, sorted(changed))


def copy_changed_files(state: GitState, dest: Path, exclude: Iterable[Path] = ()) -> list[str]:
    """Copy changed tracked files into ``dest/uncommited_files``; returns what was copied.

    Files under ``exclude`` (key files, the results folder) are never copied, and neither
    is a symlink (its target may be anywhere) or a file reached through a symlinked folder
    that leads out of the repository: only regular files inside it are copied.
    """
    if state.root is None or not state.changed:
        return []
    excluded = [Path(p).resolve() for p in exclude]
    root = state.root.resolve()
    copied = []
    for rel in state.changed:
        path = state.root / rel
        try:
            if not stat.S_ISREG(path.lstat().st_mode):
                continue  # a symlink, a submodule, a folder
            src = path.parent.resolve() / path.name
        except (OSError, RuntimeError):
            continue
        if root not in src.parents or any(src == e or e in src.parents for e in excluded):
            continue
        target = dest / UNCOMMITTED_DIR / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src, target, follow_symlinks=False)
        copied.append(rel)
    return copied


# -- environment ----------------------------------------------------------------------------
@functools.lru_cache(maxsize=1)
def environment() -> dict[str, Any]:
    """Python, packages, platform and host of this process (read once per process)."""
    from importlib import metadata

    packages = {}
    for dist in metadata.distributions():
        name = dist.metadata.get("Name")
        if name:
            packages[name] = dist.version
    try:
        user = getpass.getuser()
    except Exception:  # noqa: BLE001 - no user entry in containers
        user = None
    return {
        "python": platform.python_version(),
        "python_executable": sys.executable,
        "platform": platform.platform(),
        "machine": platform.machine(),
        "host": socket.gethostname(),
        "user": user,
        "cwd": os.getcwd(),
        "resutil": _own_version(),
        "packages": dict(sorted(packages.items(), key=lambda kv: kv[0].lower())),
    }


def _own_version() -> str:
    from importlib import metadata

    try:
        return metadata.version("resutil")
    except metadata.PackageNotFoundError:
        return "unknown"


# -- output -----------------------------------------------------------------------------------
class _Tee(io.TextIOBase):
    """Writes to the original stream and to a log file."""

    def __init__(self, original: TextIO, log: TextIO) -> None:
        self.original = original
        self.log = log
        self.lock = threading.Lock()

    def write(self, s: str) -> int:
        with self.lock:
            try:
                self.log.write(s)
            except ValueError:
                pass  # the log was closed by a late writer thread
        return self.original.write(s)

    def flush(self) -> None:
        self.original.flush()
        try:
            self.log.flush()
        except ValueError:
            pass

    def isatty(self) -> bool:
        return self.original.isatty()

    def fileno(self) -> int:
        return self.original.fileno()

    @property
    def encoding(self) -> str:  # type: ignore[override]
        return getattr(self.original, "encoding", "utf-8")


class OutputCapture:
    """Copies ``sys.stdout``/``sys.stderr`` into the experiment folder while shown as usual."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self._saved: tuple[TextIO, TextIO] | None = None
        self._logs: list[TextIO] = []

    def start(self) -> None:
        out = open(self.folder / STDOUT_LOG, "a", encoding="utf-8", buffering=1)
        err = open(self.folder / STDERR_LOG, "a", encoding="utf-8", buffering=1)
        self._logs = [out, err]
        self._saved = (sys.stdout, sys.stderr)
        sys.stdout = _Tee(sys.stdout, out)  # type: ignore[assignment]
        sys.stderr = _Tee(sys.stderr, err)  # type: ignore[assignment]

    def stop(self) -> None:
        if self._saved is None:
            return
        sys.stdout.flush()
        sys.stderr.flush()
        sys.stdout, sys.stderr = self._saved
        self._saved = None
        for log in self._logs:
            log.close()


# -- observed reads -----------------------------------------------------------------------------
class ReadObserver:
    """Records which other experiments' files this process opens for reading.

    Uses a ``sys.addaudithook`` "open" hook (installed once per process; hooks cannot be
    removed, so an inactive observer costs one list check per ``open``).
    """

    _active: list[ReadObserver] = []
    _installed = False
    _lock = threading.Lock()

    def __init__(self, results_dir: Path, own_name: str | None) -> None:
        self.root = os.path.abspath(results_dir) + os.sep
        self.real_root = os.path.realpath(results_dir) + os.sep
        self.own = parse_name(own_name).identity if own_name and parse_name(own_name) else None
        self.seen: dict[str, None] = {}  # experiment folder names, in first-read order

    def start(self) -> None:
        with ReadObserver._lock:
            if not ReadObserver._installed:
                sys.addaudithook(_audit_hook)
                ReadObserver._installed = True
            ReadObserver._active.append(self)

    def stop(self) -> None:
        with ReadObserver._lock:
            if self in ReadObserver._active:
                ReadObserver._active.remove(self)

    def _saw(self, path: str) -> None:
        for root in (self.root, self.real_root):
            if path.startswith(root):
                first = path[len(root):].split(os.sep, 1)[0]
                parsed = parse_name(first)
                if parsed and parsed.identity != self.own and first not in self.seen:
                    self.seen[first] = None
                return


def _audit_hook(event: str, args: tuple[Any, ...]) -> None:
    if event != "open" or not ReadObserver._active:
        return
    path, mode, flags = args
    if isinstance(path, int) or path is None:
        return
    if isinstance(mode, str):
        if any(c in mode for c in "wax+"):
            return
    elif isinstance(flags, int) and flags & (os.O_WRONLY | os.O_RDWR):
        return
    try:
        p = os.fsdecode(path)
        p = p if os.path.isabs(p) else os.path.join(os.getcwd(), p)
        p = os.path.normpath(p)
    except (TypeError, ValueError, OSError):
        return
    for obs in list(ReadObserver._active):
        obs._saw(p)
