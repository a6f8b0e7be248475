"""Terminal front end shared by the CLI and the decorator: messages, prompts, progress.

Everything goes to stderr so a script's own stdout stays clean. Progress bars appear only
on a terminal; in CI logs and pipes there is at most one line per finished transfer.
"""

from __future__ import annotations

import contextlib
import logging
import os
import select
import signal
import sys
import threading
from typing import Iterable, TextIO

from rich.console import Console
from rich.markup import escape
from rich.text import Text
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)

from .progress import Callback, CallbackFactory

console = Console(stderr=True, highlight=False)


def interactive() -> bool:
    """True when a person can answer prompts (a TTY and no RESUTIL_NO_INTERACTIVE)."""
    if os.environ.get("RESUTIL_NO_INTERACTIVE"):
        return False
    try:
        return sys.stdin.isatty() and sys.stdout.isatty()
    except (AttributeError, ValueError):
        return False


def esc(text: object) -> str:
    """``text`` shown literally inside markup (a comment like ``lr[0.1]``, ``resutil[gcs]``)."""
    return escape(str(text))


def send_messages_to(stream: TextIO | None) -> None:
    """Show messages and progress bars on ``stream`` (None: on whatever sys.stderr is).

    While a run's output is logged, resutil's own words go to the terminal only."""
    console.file = stream  # type: ignore[assignment]


def _show(renderable: object) -> None:
    # A message that cannot be shown (the terminal hung up) is no reason to fail.
    with contextlib.suppress(OSError, ValueError):
        console.print(renderable, soft_wrap=True)


def info(text: str) -> None:
    """A message that may use rich markup; pass names and paths through ``esc``."""
    _show(text)


def warn(text: str) -> None:
    """A plain-text warning (shown literally, brackets included)."""
    _show(Text.assemble(("Warning:", "yellow"), " ", text))


def error(text: str) -> None:
    """A plain-text error on one line (shown literally, brackets included)."""
    _show(Text.assemble(("Error:", "red"), " ", text))


def confirm(question: str, default: bool = False) -> bool:
    """Ask yes/no; without a person to ask, the default."""
    if not interactive():
        return default
    from rich.prompt import Confirm

    return Confirm.ask(question, default=default, console=console, stream=_Keyboard())


def ask(question: str, default: str = "") -> str:
    """Ask for a line of text; without a person to ask, the default."""
    if not interactive():
        return default
    from rich.prompt import Prompt

    return Prompt.ask(question, default=default or None, console=console,
                      stream=_Keyboard()) or ""


class _Keyboard:
    """Where rich reads an answer from: a line typed on the terminal, as ``input()`` gives
    it (no newline, EOFError on Ctrl-D), except that a Ctrl-C always ends the wait.

    ``input()`` can miss one: a SIGINT that lands after Python last looked for signals
    and before its read() of the terminal starts only sets Python's flag, and the read
    then waits for a line nobody types - a script hung at its "[y/n]" prompt. Here a
    signal also writes a byte to a pipe (``signal.set_wakeup_fd``) watched alongside the
    terminal, so however early it comes, the wait ends and the signal's handler runs.
    """

    _wake: tuple[int, int] | None = None  # a pipe for the whole process: none to close

    def readline(self) -> str:
        if threading.current_thread() is not threading.main_thread() or os.name == "nt":
            return input()  # only the main thread gets signals; no select() on a console
        if _Keyboard._wake is None:
            r, w = os.pipe()
            os.set_blocking(r, False)
            os.set_blocking(w, False)
            _Keyboard._wake = r, w
        wake_r, wake_w = _Keyboard._wake
        with contextlib.suppress(OSError):
            os.read(wake_r, 512)  # what signals wrote during an earlier prompt
        previous = -1  # what to put back (a Ctrl-C may come before the line below ends)
        try:
            previous = signal.set_wakeup_fd(wake_w, warn_on_full_buffer=False)
            return self._line(sys.stdin.fileno(), wake_r, previous)
        finally:
            signal.set_wakeup_fd(previous)

    @staticmethod
    def _line(fd: int, wake: int, forward: int) -> str:
        # A signal that came before this call is handled on entering it; one that comes
        # later wakes select() up (or interrupts it), and its handler runs as it returns:
        # a Ctrl-C raises KeyboardInterrupt from here.
        data = b""
        while not data.endswith(b"\n"):
            ready, _, _ = select.select([fd, wake], [], [])
            if wake in ready:  # a signal whose handler returned: pass it on, wait on
                with contextlib.suppress(OSError):
                    woke = os.read(wake, 512)
                    if forward != -1:
                        os.write(forward, woke)  # e.g. an asyncio loop's own wakeup fd
            if fd in ready:
                chunk = os.read(fd, 4096)  # the terminal hands over a whole line
                if not chunk:  # Ctrl-D
                    if data:
                        break
                    raise EOFError
                data += chunk
        encoding = getattr(sys.stdin, "encoding", None) or "utf-8"
        return data.decode(encoding, "replace").removesuffix("\n")


def ask_comment(past: Iterable[str], problem_of) -> str:
    """Prompt for an experiment comment with tab completion over past comments."""
    from prompt_toolkit import prompt
    from prompt_toolkit.completion import WordCompleter

    completer = WordCompleter(sorted(set(past)), sentence=True)
    while True:
        comment = prompt(
            "Comment for this experiment (Tab completes, Enter for none): ", completer=completer
        ).strip()
        problem = problem_of(comment)
        if not problem:
            return comment
        error(problem)


class _Task(Callback):
    def __init__(self, bar: RichProgress, description: str) -> None:
        self.bar = bar
        self.description = description
        self.task = None
        self.lock = threading.Lock()

    def set_total(self, total: int | None) -> None:
        with self.lock:
            if self.task is None:
                self.task = self.bar.progress.add_task(self.description, total=total)
            else:
                self.bar.progress.update(self.task, total=total)

    def advance(self, n: int) -> None:
        if self.task is None:
            self.set_total(None)
        self.bar.progress.advance(self.task, n)  # type: ignore[arg-type]

    def message(self, text: str) -> None:
        self.bar.progress.console.print(f"[yellow]{text}[/yellow]")


class RichProgress(CallbackFactory):
    """Progress bars (bytes, rate, ETA) for transfers, shown only on a terminal."""

    def __init__(self) -> None:
        self.progress = Progress(
            TextColumn("{task.description}", style="bold"),
            BarColumn(),
            DownloadColumn(),
            TransferSpeedColumn(),
            TimeRemainingColumn(),
            console=console,
            transient=False,
            disable=not console.is_terminal,
        )

    def __call__(self, description: str) -> Callback:
        return _Task(self, description)

    def __enter__(self) -> RichProgress:
        try:
            self.progress.__enter__()
        except BaseException:  # e.g. Ctrl-C while it draws: leave no live display behind
            with contextlib.suppress(Exception):
                self.progress.stop()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.progress.__exit__(*exc)


class QuietMessages(CallbackFactory):
    """No bars, but retry messages still reach the user (non-terminal output)."""

    class _Cb(Callback):
        def message(self, text: str) -> None:
            warn(text)

    def __call__(self, description: str) -> Callback:
        return self._Cb()


# -- logging --------------------------------------------------------------------------------------
LOG_LEVELS = {"debug": 10, "info": 20, "warning": 30, "error": 40}


class _ConsoleHandler(logging.Handler):
    """Library log records on stderr: warnings as ``Warning: ...``, the rest with a prefix."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            text = record.getMessage()
            if record.levelno >= logging.WARNING:
                warn(text)
            else:
                console.print(Text.assemble((f"{record.name}: ", "dim"), text), soft_wrap=True)
        except Exception:  # noqa: BLE001 - logging must never break a command
            self.handleError(record)


def setup_logging(verbosity: int = 0) -> None:
    """Show what the library logs: warnings always; ``-v`` info (listings, transfers,
    decisions), ``-vv`` or ``RESUTIL_LOG=debug`` everything. Idempotent."""
    env = os.environ.get("RESUTIL_LOG", "").strip().lower()
    level = LOG_LEVELS.get(env, logging.WARNING)
    if verbosity:
        level = min(level, logging.INFO if verbosity == 1 else logging.DEBUG)
    root = logging.getLogger("resutil")
    root.setLevel(level)
    if not any(isinstance(h, _ConsoleHandler) for h in root.handlers):
        root.addHandler(_ConsoleHandler())
    root.propagate = False
