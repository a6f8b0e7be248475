"""Shared helpers for the tests: a real project made by ``resutil init`` (on any backend),
scripts run as real subprocesses, the CLI invoked in-process through click's CliRunner, and
the data and assertions more than one test file needs (big files, 0.1.x archives, one-line
messages). One copy each: a test file that needs a variant adds an option here."""

from __future__ import annotations

import contextlib
import errno
import fcntl
import io
import os
import pty
import random
import re
import select
import socket
import struct
import subprocess
import sys
import termios
import textwrap
import threading
import time
import zipfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Iterator, Sequence

import pytest
import yaml
from click.testing import CliRunner, Result

from resutil.cli import cli
from resutil.metadata import EXP_FILE, ExpMeta, compute_manifest, read_meta, write_meta
from resutil.storage import StorageSettings
from resutil.workspace import Workspace

REPO = Path(__file__).resolve().parents[1]
NAME_RE = re.compile(r"^[a-z]{6}_\d{8}T\d{6}(_.*)?$")
SDK_MODULES = ("google.", "box_sdk_gen", "boxsdk", "pydrive2", "googleapiclient")


class Recorder:
    """A progress Callback that remembers what it was told."""

    def __init__(self):
        self.total = None
        self.advanced = 0
        self.messages: list[str] = []

    def set_total(self, total):
        self.total = total

    def advance(self, n):
        self.advanced += n

    def message(self, text):
        self.messages.append(text)


@dataclass
class Proj:
    """A project folder made by ``resutil init`` with a local storage folder."""

    root: Path
    remote: Path  # the storage root (storage_config.path)
    name: str = "Proj"

    @property
    def results(self) -> Path:
        return self.root / "results"

    @property
    def archive_dir(self) -> Path:
        """REMOTE/<project>: where the archives live (the 0.1.x layout)."""
        return self.remote / self.name

    @property
    def sidecar_dir(self) -> Path:
        return self.remote / f"{self.name}.resutil"

    def sidecar(self, name: str) -> Path:
        """The one sidecar of the experiment ``name`` (or identity) on the local storage:
        ``<identity>.<status>.json``; a path that does not exist when there is none."""
        found = sorted(self.sidecar_dir.glob(f"{name[:22]}*.json"))
        assert len(found) <= 1, found
        return found[0] if found else self.sidecar_dir / f"{name[:22]}.json"

    def exp_dirs(self) -> list[Path]:
        """Local experiment folders (not _debug, not .resutil)."""
        if not self.results.is_dir():
            return []
        return sorted(p for p in self.results.iterdir() if p.is_dir() and NAME_RE.match(p.name))

    def only_exp(self) -> Path:
        dirs = self.exp_dirs()
        assert len(dirs) == 1, [d.name for d in dirs]
        return dirs[0]

    def exp(self, comment: str) -> Path:
        """The one local experiment folder with that comment."""
        found = [d for d in self.exp_dirs() if d.name.endswith(f"_{comment}")]
        assert len(found) == 1, (comment, [d.name for d in self.exp_dirs()])
        return found[0]

    def remote_zips(self) -> list[str]:
        if not self.archive_dir.is_dir():
            return []
        return sorted(p.name for p in self.archive_dir.iterdir())

    def zip_of(self, name: str) -> Path:
        return self.archive_dir / f"{name}.zip"


@contextlib.contextmanager
def chdir(path: Path) -> Iterator[None]:
    old = os.getcwd()
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(old)


def run_cli(*args: str, input: str | None = None, cwd: Path | None = None) -> Result:
    """``resutil ARGS`` in-process, in ``cwd`` (default: the current folder); stdout and
    stderr are kept apart."""
    with chdir(cwd) if cwd is not None else contextlib.nullcontext():
        return CliRunner().invoke(cli, list(args), input=input, catch_exceptions=False)


def cli_ok(*args: str, cwd: Path | None = None) -> Result:
    """``resutil ARGS`` that must succeed."""
    r = run_cli(*args, cwd=cwd)
    assert r.exit_code == 0, (args, r.stdout, r.stderr)
    return r


def cli_fails(*args: str, needles: Sequence[str] = (), cwd: Path | None = None) -> str:
    """``resutil ARGS`` that must fail with exactly one ``Error:`` line naming ``needles``."""
    r = run_cli(*args, cwd=cwd)
    assert r.exit_code == 1, (args, r.stdout, r.stderr)
    return assert_one_error_line(r.stderr, *needles)


def cli_in(proj: Proj, *args: str) -> Result:
    """``resutil ARGS`` in ``proj``'s folder (for tests that juggle several projects)."""
    return run_cli(*args, cwd=proj.root)


def popen_cli(cwd: Path, *args: str, **kw) -> subprocess.Popen:
    """``python -m resutil ARGS`` as a separate process (to be killed, or run in parallel)."""
    kw.setdefault("stdin", subprocess.DEVNULL)
    return subprocess.Popen([sys.executable, "-m", "resutil", *args], cwd=cwd,
                            env=_script_env(kw.pop("env", None)), **kw)


# init flag -> storage_config key, per storage type
INIT_FLAGS = {
    "local": {"--path": "path"},
    "gcs": {"--bucket": "bucket_name", "--key-file": "key_file_path", "--endpoint": "endpoint"},
    "gdrive": {"--folder-id": "base_folder_id", "--key-file": "key_file_path",
               "--endpoint": "endpoint"},
    "box": {"--folder-id": "folder_id", "--key-file": "key_file_path", "--endpoint": "endpoint"},
}


def init_args(storage_type: str, values: dict, name: str = "Proj") -> list[str]:
    """The non-interactive ``resutil init`` arguments for a storage of that type."""
    args = ["init", "--project", name, "--results-dir", "results", "--storage", storage_type,
            "--yes"]
    for flag, key in INIT_FLAGS[storage_type].items():
        if values.get(key):
            args += [flag, str(values[key])]
    return args


def make_project(base: Path, settings: StorageSettings | None = None, *, name: str = "Proj",
                 git: bool = False) -> Proj:
    """``resutil init`` in ``base/proj``, with the storage ``settings`` (any backend) or
    else a local storage at ``base/remote``."""
    root = base / "proj"
    root.mkdir(parents=True)
    if settings is None:
        settings = StorageSettings(values={"path": str(base / "remote")}, storage_type="local")
    if git:
        init_git(root)
    cli_ok(*init_args(settings.storage_type, settings.values, name), cwd=root)
    # The storage root is a folder only for the local backend.
    remote = Path(settings.values["path"]) if settings.storage_type == "local" else root / "-"
    return Proj(root, remote, name)


def make_clone(proj: Proj, base: Path) -> Proj:
    """A second clone of ``proj`` (another folder, same project and storage), as a teammate
    or a second cluster node has."""
    other = make_project(base, name=proj.name)
    conf = other.root / "resutil-conf.yaml"
    conf.write_text(conf.read_text().replace(str(other.remote), str(proj.remote)))
    return Proj(other.root, proj.remote, proj.name)


def init_git(root: Path) -> None:
    env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.com",
           "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@example.com"}
    subprocess.run(["git", "init", "-q", "-b", "main"], cwd=root, check=True, env=env)
    subprocess.run(["git", "config", "user.name", "t"], cwd=root, check=True)
    subprocess.run(["git", "config", "user.email", "t@example.com"], cwd=root, check=True)


def git(root: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=root, check=True, capture_output=True,
                          text=True).stdout


def write_script(proj: Proj, body: str, name: str = "s.py") -> Path:
    """A script in the project folder; ``body`` is dedented."""
    path = proj.root / name
    path.write_text(textwrap.dedent(body))
    return path


def _script_env(env: dict[str, str | None] | None) -> dict[str, str]:
    """The environment for a subprocess: this one with ``env`` on top (None: unset)."""
    full_env = {k: v for k, v in {**os.environ, **(env or {})}.items() if v is not None}
    full_env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), full_env.get("PYTHONPATH")]))
    return full_env


def run_script(
    proj: Proj,
    script: str | Path = "s.py",
    args: Sequence[str] = (),
    env: dict[str, str] | None = None,
    timeout: float = 60,
) -> subprocess.CompletedProcess:
    """Run a script as a user would: real interpreter, project as cwd, no TTY on stdin."""
    return subprocess.run(
        [sys.executable, str(script), *args], cwd=proj.root, stdin=subprocess.DEVNULL,
        capture_output=True, text=True, timeout=timeout, env=_script_env(env),
    )


def popen_script(proj: Proj, script: str | Path = "s.py", args: Sequence[str] = (),
                 env: dict[str, str] | None = None, **kw) -> subprocess.Popen:
    kw.setdefault("stdin", subprocess.DEVNULL)
    return subprocess.Popen([sys.executable, str(script), *args], cwd=proj.root,
                            env=_script_env(env), **kw)


ANSI = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(\x07|\x1b\\)|\x1b[@-Z\\-_]")


class Terminal:
    """A command (``python ARGS`` in the project folder) on a pseudo-terminal of ``cols``
    x ``rows`` that is its controlling terminal, so \\x03 is SIGINT; COLUMNS and LINES say
    the same size, as a shell's do. ``stdout``: where the command's stdout goes instead of
    the terminal (``subprocess.PIPE``: ``python train.py | tee log``); ``piped_out`` holds
    it after ``finish``."""

    def __init__(self, proj: Proj, args: Sequence[str] = ("s.py",), env: dict | None = None,
                 cols: int = 200, rows: int = 50, stdout: int | None = None) -> None:
        master, slave = pty.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))
        self.master = master
        self.text = ""  # everything shown so far
        self._mark = 0  # where expect() looks from: the text since the last answer
        self.piped_out = ""
        env = {"TERM": "xterm", "COLUMNS": str(cols), "LINES": str(rows), **(env or {})}
        self.proc = popen_script(proj, args[0], args[1:], env=env, stdin=slave,
                                 stdout=slave if stdout is None else stdout, stderr=slave,
                                 preexec_fn=_take_terminal)
        os.close(slave)

    def _read(self, timeout: float) -> bool:
        ready, _, _ = select.select([self.master], [], [], timeout)
        if not ready:
            return True
        try:
            data = os.read(self.master, 65536)
        except OSError:  # EIO: every writer has gone
            return False
        if not data:
            return False
        if b"\x1b[6n" in data:  # prompt_toolkit asks where the cursor is
            os.write(self.master, b"\x1b[1;1R")
        self.text += data.decode("utf-8", "replace")
        return True

    def expect(self, needle: str, limit: float = 30) -> None:
        """Read until ``needle`` shows (in the text without colours and cursor moves)."""
        end = time.monotonic() + limit
        while needle not in ANSI.sub("", self.text[self._mark:]):
            if not self._read(0.05):
                raise AssertionError(f"the command ended before {needle!r}: {self.plain}")
            if time.monotonic() > end:
                raise AssertionError(f"gave up waiting for {needle!r}: {self.plain}")

    def answer(self, needle: str, line: str) -> None:
        """Wait for the question ``needle``, type ``line``; later questions are looked for
        in what is shown after it."""
        self.expect(needle)
        self._mark = len(self.text)
        self.send(line.encode() + b"\r")

    def send(self, data: bytes) -> None:
        os.write(self.master, data)

    def finish(self, limit: float = 60) -> int:
        end = time.monotonic() + limit
        while self._read(0.05):
            if time.monotonic() > end:
                raise AssertionError(f"the command did not end: {self.plain}")
        if self.proc.stdout is not None:
            self.piped_out = self.proc.stdout.read().decode("utf-8", "replace")
        return self.proc.wait(timeout=limit)

    @property
    def plain(self) -> str:
        return ANSI.sub("", self.text)

    def lines(self) -> list[str]:
        """What the terminal shows, line by line (a line redrawn with \\r in its last form)."""
        return [ln.rsplit("\r", 1)[-1] for ln in self.plain.replace("\r\n", "\n").split("\n")]

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        os.close(self.master)


def _take_terminal() -> None:
    os.setsid()
    fcntl.ioctl(0, termios.TIOCSCTTY, 0)


@contextlib.contextmanager
def terminals(proj: Proj) -> Iterator:
    """Make ``Terminal``s in ``proj`` (interactive: RESUTIL_NO_INTERACTIVE removed for
    them); all are closed at the end."""
    made: list[Terminal] = []

    def make(args: Sequence[str] = ("s.py",), env: dict | None = None, **kw) -> Terminal:
        made.append(Terminal(proj, args, {"RESUTIL_NO_INTERACTIVE": None, **(env or {})}, **kw))
        return made[-1]

    try:
        yield make
    finally:
        for t in made:
            t.close()


def wait_for(predicate, what: str, proc: subprocess.Popen | None = None, limit: float = 60):
    """Poll until ``predicate()`` is true (not a timing assertion: only a hang guard)."""
    end = time.monotonic() + limit
    while not predicate():
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"process ended before {what}: {proc.communicate()}")
        if time.monotonic() > end:
            raise AssertionError(f"gave up waiting for {what}")
        time.sleep(0.01)


def at_once(fn, args: Sequence) -> list:
    """``fn(arg)`` for every one of ``args``, each in a thread of its own, all let go at the
    same moment; returns the results in order and re-raises the first error."""
    start = threading.Barrier(len(args))

    def run(arg):
        start.wait()
        return fn(arg)

    with ThreadPoolExecutor(len(args)) as pool:
        return list(pool.map(run, args))


def read_exp(folder: Path) -> dict:
    """The parsed ``resutil-exp.yaml`` of a local folder."""
    return yaml.safe_load((folder / EXP_FILE).read_text(encoding="utf-8"))


def read_exp_in_zip(zip_path: Path) -> dict:
    with zipfile.ZipFile(zip_path) as zf:
        return yaml.safe_load(zf.read(EXP_FILE).decode("utf-8"))


def make_exp(
    proj: Proj,
    comment: str = "",
    files: dict[str, bytes | str] | None = None,
    deps: Sequence[str] = (),
    when: datetime | None = None,
    status: str = "finished",
    source: str = "manual",
    host: str = "testhost",
    root: Path | None = None,
) -> Path:
    """A finished experiment folder made with the library's own building blocks (fast setup
    for CLI tests; the decorator itself is exercised in test_decorator.py)."""
    ws = Workspace(root or proj.results)
    name = ws.create(comment, when).name
    folder = ws.path(name)
    for rel, content in (files or {"out.txt": "result\n"}).items():
        p = folder / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(content.encode() if isinstance(content, str) else content)
    started = ws.path(name).stat().st_mtime
    meta = ExpMeta(name=name, comment=comment, status=status, args="s.py",
                   result_dir=f"results/{name}", environment={"host": host},
                   started_at=datetime.fromtimestamp(started).isoformat(timespec="microseconds"))
    for dep in deps:
        meta.add_dependency(dep, source)
    meta.manifest = compute_manifest(folder)
    write_meta(folder, meta)
    return folder


def seal(folder: Path) -> None:
    """Record a folder's files as its manifest, as a run does when it ends (after a test
    wrote more files into a ``make_exp`` folder)."""
    meta = read_meta(folder)
    meta.manifest = compute_manifest(folder)
    write_meta(folder, meta)


def assert_one_line(message, *needles: str) -> str:
    """``message`` (a string, an exception, or the ``pytest.raises`` result holding one) is
    one line with no traceback and names ``needles`` (in any case); returns its text."""
    text = str(message.value if isinstance(message, pytest.ExceptionInfo) else message)
    assert "\n" not in text and "Traceback" not in text, text
    for needle in needles:
        assert needle.lower() in text.lower(), (needle, text)
    return text


def assert_one_error_line(stderr: str, *needles: str) -> str:
    """stderr is exactly one line, ``Error: ...``, with no traceback; returns it."""
    lines = [ln for ln in stderr.strip().splitlines() if ln.strip()]
    assert len(lines) == 1, stderr
    assert lines[0].startswith("Error:"), stderr
    assert "Traceback" not in stderr
    return assert_one_line(lines[0], *needles)


def assert_one_warning_line(stderr: str, *needles: str) -> str:
    """stderr has exactly one ``Warning: ...`` line naming ``needles``, no error and no
    traceback (other lines, e.g. "Pushed ...", may be there); returns it."""
    lines = [ln for ln in stderr.splitlines() if ln.startswith("Warning:")]
    assert len(lines) == 1, stderr
    assert "Traceback" not in stderr and "Error:" not in stderr, stderr
    for needle in needles:
        assert needle.lower() in lines[0].lower(), (needle, lines[0])
    return lines[0]


def fill_disk(folder: Path) -> None:
    """Write to ``folder`` until its file system is full (ENOSPC)."""
    fd = os.open(folder / "filler.bin", os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        while True:
            os.write(fd, bytes(64 << 10))
    except OSError as e:
        assert e.errno == errno.ENOSPC, e
    finally:
        os.close(fd)


def big_file(path: Path, mib: float, seed: int | None = None) -> Path:
    """``mib`` MiB (a fraction too) of incompressible data at ``path``, every MiB different
    (no two chunks alike); the same ``seed`` gives the same bytes, no seed fresh ones."""
    block = random.Random(seed).randbytes(1 << 20)
    with open(path, "wb") as f:
        for i in range(int(mib)):
            f.write(block[i:] + block[:i])
        f.write(block[: int((mib - int(mib)) * (1 << 20))])
    return path


def closed_port() -> int:
    """A port on 127.0.0.1 that nothing listens on (connections are refused)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def zip_01x(files: dict[str, str | bytes]) -> bytes:
    """An archive as resutil 0.1.x pushed it: a deflated zip of the folder, no sidecar."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for rel, content in files.items():
            zf.writestr(rel, content)
    return buf.getvalue()


def meta_01x(name: str, deps: Sequence[str] = (), args: str = "train.py",
             commit: str | None = None) -> str:
    """The ``resutil-exp.yaml`` 0.1.x wrote: its four keys only, dependencies as
    ``results/<name>`` paths."""
    return yaml.safe_dump({"args": args, "result_dir": f"results/{name}",
                           "dependency": [f"results/{d}" for d in deps],
                           "git": {"commit_hash": commit, "uncommited_files": []}})


def put_zip_01x(proj: Proj, name: str, files: dict[str, str | bytes]) -> Path:
    """``zip_01x(files)`` as ``name``'s archive on ``proj``'s local storage."""
    proj.archive_dir.mkdir(parents=True, exist_ok=True)
    path = proj.zip_of(name)
    path.write_bytes(zip_01x(files))
    return path


def tree(root: Path) -> set[str]:
    """Every path under ``root`` (relative, posix), for before/after comparisons."""
    if not root.exists():
        return set()
    return {p.relative_to(root).as_posix() for p in root.rglob("*")}


def _mount(*args: str) -> bool:
    if os.geteuid() != 0:
        return False
    try:
        r = subprocess.run(["mount", *args], capture_output=True, timeout=20)
    except (OSError, subprocess.SubprocessError):
        return False
    return r.returncode == 0


def umount(path: Path) -> None:
    subprocess.run(["umount", "-l", str(path)], capture_output=True, timeout=20)


@contextlib.contextmanager
def readonly_mount(path: Path) -> Iterator[None]:
    """Make the existing folder ``path`` read-only even for root (a read-only bind mount).

    Skips the test when mounting is not possible (not root, no CAP_SYS_ADMIN)."""
    if not _mount("--bind", str(path), str(path)):
        pytest.skip("cannot bind-mount (needs root with CAP_SYS_ADMIN); root ignores chmod")
    try:
        if not _mount("-o", "remount,bind,ro", str(path)):
            pytest.skip("cannot remount read-only")
        yield
    finally:
        umount(path)


@contextlib.contextmanager
def small_tmpfs(path: Path, size: str) -> Iterator[None]:
    """Mount a tiny tmpfs at ``path`` (to run out of space); skips when not possible."""
    path.mkdir(parents=True, exist_ok=True)
    if not _mount("-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)):
        pytest.skip("cannot mount a tmpfs (needs root with CAP_SYS_ADMIN)")
    try:
        yield
    finally:
        umount(path)
