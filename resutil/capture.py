"""What a run observes about itself: code (git), environment, output, upstream reads."""

from __future__ import annotations

import contextlib
import functools
import getpass
import io
import os
import platform
import re
import shutil
import socket
import stat
import sys
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from . import git
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


def git_state(cwd: Path | None = None) -> GitState:
    """Git facts for the repository containing ``cwd``; empty when there is none."""
    root = git.toplevel(cwd or Path.cwd())
    if root is None:
        return GitState()
    # Modified (unstaged) and staged files, deleted ones excluded (nothing to copy).
    unstaged = git.run(["diff", "--name-only", "-z", "--diff-filter=d"], root) or ""
    staged = git.run(["diff", "--cached", "--name-only", "-z", "--diff-filter=d"], root) or ""
    changed = {p for p in (unstaged + staged).split("\0") if p}
    if changed:
        # A tracked file that is ignored now (a .env committed once, then listed in
        # .gitignore) is as secret as an untracked one. If git cannot tell, copy nothing.
        ignored = git.run(["ls-files", "-z", "--cached", "--ignored", "--exclude-standard"], root)
        changed = changed - set(ignored.split("\0")) if ignored is not None else set()
    return GitState(root, git.head(root), sorted(changed))


def copy_changed_files(state: GitState, dest: Path, exclude: Iterable[Path] = ()) -> list[str]:
    """Copy changed tracked files into ``dest/uncommited_files``; returns what was copied.

    Files under ``exclude`` (key files, the results folder) are never copied, and neither
    is a symlink (its target may be anywhere) or a file reached through a symlinked folder
    that leads out of the repository: only regular files inside it are copied.
    """
    return copy_code(state, state.changed, dest, exclude)


def copy_code(state: GitState, rels: Iterable[str], dest: Path,
              exclude: Iterable[Path] = ()) -> list[str]:
    """Copy work-tree files (repository-relative) into ``dest/uncommited_files`` under the
    rules of ``copy_changed_files``; returns what was copied."""
    if state.root is None:
        return []
    excluded = [Path(p).resolve() for p in exclude]
    root = state.root.resolve()
    copied = []
    for rel in rels:
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


def untracked_code(state: GitState, files: Iterable[Path]) -> list[str]:
    """Which of ``files`` (code a run uses) lie in the work tree but are neither tracked nor
    ignored by git, so nothing else records them; repository-relative, sorted."""
    if state.root is None:
        return []
    root = state.root.resolve()
    rels = set()
    for f in files:
        try:
            rels.add(Path(os.path.abspath(f)).resolve().relative_to(root).as_posix())
        except (ValueError, OSError, RuntimeError):
            continue
    return sorted(git.untracked(root, sorted(rels))) if rels else []


def imported_code() -> list[Path]:
    """The script this process runs and the Python modules it imported from source files,
    leaving out installed packages (site-packages, the interpreter's own library)."""
    import sysconfig

    paths = sysconfig.get_paths()
    prefixes = {os.path.abspath(paths[k]) + os.sep for k in
                ("stdlib", "platstdlib", "purelib", "platlib", "scripts") if paths.get(k)}
    found: dict[str, None] = {}
    main = sys.modules.get("__main__")
    candidates = [getattr(main, "__file__", None)]
    if sys.argv and sys.argv[0] and sys.argv[0] not in ("-c", "-m"):
        candidates.append(sys.argv[0])
    for mod in list(sys.modules.values()):
        f = getattr(mod, "__file__", None)
        if isinstance(f, str) and f.endswith(".py"):
            candidates.append(f)
    for f in candidates:
        if not isinstance(f, str) or not f:
            continue
        path = os.path.abspath(f)
        parts = path.split(os.sep)
        if ("site-packages" in parts or "dist-packages" in parts
                or any(path.startswith(p) for p in prefixes) or not os.path.isfile(path)):
            continue
        found[path] = None
    return [Path(p) for p in found]


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
# Terminal control sequences: CSI (colours, cursor moves), OSC (titles, links), two-byte escapes.
_ANSI_RE = re.compile(r"\x1b(?:\[[0-?]*[ -/]*[@-~]|\][^\x07\x1b]*(?:\x07|\x1b\\)?|[@-Z\\-_])")
_PENDING_LIMIT = 1 << 16  # a line longer than this is written out before its end


def _last_draw(line: str) -> str:
    """What a terminal shows of a line redrawn with carriage returns (progress bars)."""
    head = line.rstrip("\r")
    cut = head.rfind("\r")
    return line[cut + 1:] if cut >= 0 else line


class _Tee(io.TextIOBase):
    """Writes to the original stream and, as clean text, to a log file.

    The log gets no terminal codes and only the last form of a redrawn line. If the log
    cannot be written (a full disk, say), it is dropped and ``on_problem`` told once: the
    program's output must reach the terminal whatever happens to the log.
    """

    def __init__(self, original: TextIO, log: TextIO,
                 on_problem: Callable[[OSError], None] | None = None) -> None:
        self.original = original
        self.log: TextIO | None = log
        self.on_problem = on_problem
        self.lock = threading.RLock()  # re-entered if on_problem writes to this stream
        self._pending = ""  # the current, unfinished line

    def write(self, s: str) -> int:
        n = self.original.write(s)
        if self.log is not None and s:
            with self.lock:
                text = self._pending + _ANSI_RE.sub("", s)
                *lines, rest = text.split("\n")
                rest = _last_draw(rest)
                if len(rest) > _PENDING_LIMIT:
                    lines.append(rest)
                    rest = ""
                self._pending = rest
                if lines:
                    self._log_write("".join(_last_draw(ln).rstrip("\r") + "\n" for ln in lines))
        return n

    def _log_write(self, text: str) -> None:
        log = self.log
        if log is None:
            return
        try:
            log.write(text)
        except ValueError:
            self.log = None  # closed under a late writer thread
        except OSError as e:
            self._drop(e)

    def _drop(self, e: OSError) -> None:
        log, self.log = self.log, None
        with contextlib.suppress(OSError, ValueError):
            log.close()  # type: ignore[union-attr]
        if self.on_problem is not None:
            self.on_problem(e)

    def close_log(self) -> None:
        """Write the unfinished line and close the log."""
        with self.lock:
            if self._pending:
                self._log_write(_last_draw(self._pending).rstrip("\r"))
                self._pending = ""
            if self.log is not None:
                try:
                    self.log.close()
                except ValueError:
                    pass
                except OSError as e:
                    self._drop(e)
                self.log = None

    def flush(self) -> None:
        self.original.flush()
        if self.log is not None:
            with self.lock:
                try:
                    self.log.flush()  # type: ignore[union-attr]
                except (ValueError, AttributeError):
                    pass
                except OSError as e:
                    self._drop(e)

    def isatty(self) -> bool:
        return self.original.isatty()

    def fileno(self) -> int:
        return self.original.fileno()

    @property
    def encoding(self) -> str:  # type: ignore[override]
        return getattr(self.original, "encoding", "utf-8")

    def __getattr__(self, name: str) -> Any:
        # What a program may use of a real stream (``buffer``, ``reconfigure``...) still
        # works: it goes to the terminal, just not into the log.
        if name == "original":
            raise AttributeError(name)
        return getattr(self.original, name)


class OutputCapture:
    """Copies ``sys.stdout``/``sys.stderr`` into the experiment folder while shown as usual.

    A log that cannot be opened or written is given up, not the program: ``on_problem``
    is told (once per log) and the output still reaches the terminal.
    """

    def __init__(self, folder: Path, on_problem: Callable[[str], None] | None = None) -> None:
        self.folder = folder
        self.on_problem = on_problem or (lambda text: None)
        self._saved: tuple[TextIO, TextIO] | None = None
        self._tees: list[_Tee] = []

    @property
    def terminal(self) -> TextIO:
        """The stderr the program had before the capture (for messages not to be logged)."""
        return self._saved[1] if self._saved else sys.stderr

    def start(self) -> None:
        self._saved = (sys.stdout, sys.stderr)
        sys.stdout = self._tee(sys.stdout, STDOUT_LOG)  # type: ignore[assignment]
        sys.stderr = self._tee(sys.stderr, STDERR_LOG)  # type: ignore[assignment]

    def _tee(self, stream: TextIO, name: str) -> TextIO:
        def problem(e: OSError) -> None:
            self.on_problem(f"cannot write {name} ({e.strerror or e}); the output is still "
                            "shown but no longer saved")

        try:
            log = open(self.folder / name, "a", encoding="utf-8", errors="replace", buffering=1)
        except OSError as e:
            problem(e)
            return stream
        tee = _Tee(stream, log, problem)
        self._tees.append(tee)
        return tee  # type: ignore[return-value]

    def stop(self) -> None:
        if self._saved is None:
            return
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(OSError, ValueError):
                stream.flush()
        sys.stdout, sys.stderr = self._saved
        self._saved = None
        for tee in self._tees:
            tee.close_log()
        self._tees = []

    def append_stderr_log(self, text: str) -> None:
        """Add ``text`` (e.g. a traceback) to the saved stderr, after what was captured."""
        try:
            with open(self.folder / STDERR_LOG, "a", encoding="utf-8", errors="replace") as f:
                f.write(text)
        except OSError as e:
            self.on_problem(f"cannot write {STDERR_LOG} ({e.strerror or e})")


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
