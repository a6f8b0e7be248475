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
from collections.abc import Iterable, Iterator, Sequence
from typing import TextIO

from rich.console import Console
from rich.markup import escape
from rich.text import Text

from .progress import Callback, CallbackFactory

console = Console(stderr=True, highlight=False)


def interactive() -> bool:
    """True when a person can answer prompts: input from a terminal, a terminal to ask on
    (the controlling one: stdout may go to a pipe, as in ``python train.py | tee log``),
    and no RESUTIL_NO_INTERACTIVE."""
    if os.environ.get("RESUTIL_NO_INTERACTIVE"):
        return False
    try:
        return sys.stdin.isatty() and _prompt_stream() is not None
    except (AttributeError, ValueError):
        return False


_tty: TextIO | None = None


def _prompt_stream() -> TextIO | None:
    """Where questions are shown: the controlling terminal (never a redirected stdout or
    stderr); else stderr or stdout when it is a terminal; else None."""
    global _tty
    if _tty is None and os.name == "posix":
        try:
            _tty = open("/dev/tty", "w", encoding="utf-8")  # noqa: SIM115 - kept open
        except OSError:
            _tty = None
    if _tty is not None:
        return _tty
    for stream in (sys.stderr, sys.stdout):
        try:
            if stream is not None and stream.isatty():
                return stream
        except (AttributeError, ValueError):
            continue
    return None


def _prompt_console() -> Console:
    return Console(file=_prompt_stream(), highlight=False)


def esc(text: object) -> str:
    """``text`` shown literally inside markup (a comment like ``lr[0.1]``, ``resutil[gcs]``)."""
    return escape(str(text))


def relative(path: os.PathLike[str] | str) -> str:
    """``path`` as a person would type it here: relative to the current folder when inside
    it, else absolute."""
    p = os.path.abspath(path)
    try:
        rel = os.path.relpath(p)
    except ValueError:  # another drive (Windows)
        return p
    return p if rel.startswith(os.pardir) else rel


def send_messages_to(stream: TextIO | None) -> None:
    """Show messages and progress bars on ``stream`` (None: on whatever sys.stderr is).

    While a run's output is logged, resutil's own words go to the terminal only."""
    console.file = stream  # type: ignore[assignment]


def _show(renderable: object) -> None:
    # A message that cannot be shown (the terminal hung up) is no reason to fail. On a
    # terminal, long lines wrap between words (the terminal itself would cut words in
    # two); in logs and pipes a message stays one line, however long.
    with contextlib.suppress(OSError, ValueError):
        console.print(renderable, soft_wrap=not console.is_terminal)


_quiet = False  # a script's @resutil.main(verbose=False): only warnings and errors


@contextlib.contextmanager
def quiet(on: bool = True) -> Iterator[None]:
    """Within the block, with ``on``, show no messages but warnings and errors, no bars."""
    global _quiet
    before, _quiet = _quiet, _quiet or on
    try:
        yield
    finally:
        _quiet = before


def info(text: str) -> None:
    """A message that may use rich markup; pass names and paths through ``esc``."""
    if not _quiet:
        _show(text)


def warn(text: str) -> None:
    """A plain-text warning (shown literally, brackets included)."""
    _show(Text.assemble(("Warning:", "yellow"), " ", text))


def error(text: str) -> None:
    """A plain-text error on one line (shown literally, brackets included)."""
    _show(Text.assemble(("Error:", "red"), " ", text))


def table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    """Columns on stdout. On a terminal a rich table whose last column folds rather than
    cuts a long name; in a pipe or file whole lines, however long (nothing cut at 80)."""
    out = Console(highlight=False)
    widths = [max(len(str(r[i])) for r in (headers, *rows)) for i in range(len(headers) - 1)]
    if not out.is_terminal:
        for row in (headers, *rows):
            cells = [str(c).ljust(w) for c, w in zip(row, widths)] + [str(row[-1])]
            out.file.write("  ".join(cells).rstrip() + "\n")
        return
    if len(rows) > BIG_TABLE:
        _big_table(out, headers, rows, widths)
        return
    from rich.table import Table

    t = Table(box=None, header_style="bold")
    for i, head in enumerate(headers):
        last = i == len(headers) - 1
        t.add_column(head, overflow="fold" if last else "ellipsis", no_wrap=not last)
    for row in rows:
        t.add_row(*(esc(c) for c in row))
    out.print(t)


BIG_TABLE = 500  # rows; rich lays out a table of 10,000 rows in ~2 s, these lines in ~0.02 s


def _big_table(out: Console, headers: Sequence[str], rows: Sequence[Sequence[str]],
               widths: list[int]) -> None:
    """What the rich table shows, laid out by hand: columns two spaces apart, the header in
    bold, a last column too long for the terminal folded onto the next lines under itself
    (the others are short: marks and statuses)."""
    indent = sum(widths) + 2 * len(widths)
    room = max(out.width - indent, 20)
    lines = []
    for row in rows:
        head = "".join(str(c).ljust(w) + "  " for c, w in zip(row, widths))
        last = str(row[-1])
        lines.append((head + last[:room]).rstrip())
        for k in range(room, len(last), room):
            lines.append(" " * indent + last[k:k + room])
    title = "".join(str(h).ljust(w) + "  " for h, w in zip(headers, widths)) + str(headers[-1])
    out.print(Text(title.rstrip(), style="bold"))
    out.file.write("\n".join(lines) + "\n")
    out.file.flush()


def confirm(question: str, default: bool = False) -> bool:
    """Ask yes/no; without a person to ask, the default."""
    if not interactive():
        return default
    from rich.prompt import Confirm

    return Confirm.ask(question, default=default, console=_prompt_console(), stream=_Keyboard())


def ask(question: str, default: str = "") -> str:
    """Ask for a line of text; without a person to ask, the default."""
    if not interactive():
        return default
    from rich.prompt import Prompt

    if default:
        return Prompt.ask(question, default=default, console=_prompt_console(),
                          stream=_Keyboard()) or ""
    return Prompt.ask(question, console=_prompt_console(), stream=_Keyboard()) or ""


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
    from prompt_toolkit import PromptSession
    from prompt_toolkit.completion import WordCompleter
    from prompt_toolkit.output import create_output

    completer = WordCompleter(sorted(set(past)), sentence=True)
    session: PromptSession[str] = PromptSession(
        completer=completer, output=create_output(stdout=_prompt_stream()))
    while True:
        comment = session.prompt(
            "Comment for this experiment (Tab completes, Enter for none): ").strip()
        problem = problem_of(comment)
        if not problem:
            return comment
        _prompt_console().print(Text.assemble(("Error:", "red"), " ", problem))


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
        self.bar.progress.console.print(Text(text, style="yellow"))


# Widest renderings of the columns after the name: "12.34/56.78 GB", "123.4 MB/s", "0:00:12".
_BAR, _BYTES, _RATE, _ETA = 12, 15, 10, 7


class RichProgress(CallbackFactory):
    """Progress bars (name, bar, bytes, rate, ETA) for transfers, shown only on a terminal,
    one line each that fits the terminal's width: a long name is cut short with "…"."""

    def __init__(self) -> None:
        # Only a terminal shows bars: a push to a pipe or a log does not load them (~6 ms).
        from rich.progress import (
            BarColumn,
            DownloadColumn,
            Progress,
            TextColumn,
            TimeRemainingColumn,
            TransferSpeedColumn,
        )
        from rich.table import Column

        rest = _BAR + _BYTES + _RATE + _ETA + 4  # and a space between columns
        name = max(8, console.width - rest - 1)
        self.progress = Progress(
            TextColumn("{task.description}", style="bold", markup=False,
                       table_column=Column(no_wrap=True, overflow="ellipsis", max_width=name)),
            BarColumn(bar_width=_BAR),
            DownloadColumn(table_column=Column(no_wrap=True, min_width=_BYTES, justify="right")),
            TransferSpeedColumn(table_column=Column(no_wrap=True, min_width=_RATE,
                                                    justify="right")),
            TimeRemainingColumn(table_column=Column(no_wrap=True, min_width=_ETA)),
            console=console,
            transient=False,
            disable=_quiet or not console.is_terminal,
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


@contextlib.contextmanager
def transfers() -> Iterator[CallbackFactory]:
    """Progress for the transfers of a block: bars on a terminal, else only the retry
    messages (CI logs and pipes stay quiet)."""
    if console.is_terminal and not _quiet:
        with RichProgress() as bars:
            yield bars
    else:
        yield QuietMessages()


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
