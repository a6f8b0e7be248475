"""``ResutilApp``: the table of experiments, its filter, the detail pane and the actions.

The first screen comes from the local experiments alone (the metadata index: a few stats
per folder); the remote's listing and then the metrics arrive from a worker thread, so a
slow network never delays it nor freezes it. Every action runs the workflow function its
CLI command runs, in a worker thread, its progress drawn in the bar at the bottom.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

import click
from rich.cells import cell_len
from textual import work
from textual.app import App, ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, VerticalScroll
from textual.geometry import Size
from textual.timer import Timer
from textual.widgets import DataTable, Footer, Header, Input, Label, ProgressBar, Select, Static
from textual.widgets.data_table import Row, RowKey
from textual.worker import get_current_worker

from ..catalog import Catalog, Entry, catalog, read_metrics
from ..errors import ResutilError
from ..lineage import local_records
from ..progress import Callback, CallbackFactory
from ..project import Project
from . import rows
from .screens import AskScreen, ConfirmScreen, RemoveScreen, TextScreen

log = logging.getLogger(__name__)
JOBS = 4  # parallel transfers of a push or pull, as the CLI's default -j
DETAIL_DELAY = 0.1  # s: the detail pane follows the cursor once it rests
REMOTE_WAIT = 0.2  # s: a remote listed by then is shown with the local experiments at once
BIG_TABLE = 2000  # rows above which typing in the filter waits for a pause
HELP = """\
Keys
  ↑ ↓ PgUp PgDn Home End   move in the table (the detail pane follows)
  /            filter: words in the name, comment or step (Esc: back to the table)
  s            status filter (Enter picks); the box beside it: started since (3d, today, 2024-07-06)
  space        mark / unmark the experiment (push, pull, rm take the marked ones; diff two)
  n            new experiment, as `resutil add` (the marked ones are its upstream)
  c            change the comment, as `resutil comment`
  p            push, as `resutil push` (with the upstream experiments the remote lacks)
  g            pull, as `resutil pull` (with the upstream experiments missing here)
  x, Delete    remove, as `resutil rm` (asks where; asks again before removing a last copy
               or anything on the team's storage; refuses what others depend on)
  r            reproduce, as `resutil reproduce` (shows the plan first)
  d            diff the two marked experiments (or the marked one and this one), as `resutil diff`
  o            open the experiment's folder
  F5, Ctrl+R   reload (list the remote again)
  ?            this help
  q            quit

Every action is a command: the UI does what the command does, nothing more."""


class TextualProgress(CallbackFactory):
    """The progress of the running action, summed over its transfers; the app's timer
    draws it (callbacks come from worker threads, many times a second)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.label, self.total, self.done = "", 0, 0

    def reset(self, label: str) -> None:
        with self._lock:
            self.label, self.total, self.done = label, 0, 0

    def __call__(self, description: str) -> Callback:
        with self._lock:
            self.label = description
        return _Transfer(self)

    def add(self, total: int = 0, done: int = 0) -> None:
        with self._lock:
            self.total += total
            self.done += done

    def count(self, done: int, total: int) -> None:
        """As ``read_metrics``'s ``progress(done, total)``."""
        with self._lock:
            self.done, self.total = done, total

    def snapshot(self) -> tuple[str, int, int]:
        with self._lock:
            return self.label, self.total, self.done


class _Transfer(Callback):
    def __init__(self, sink: TextualProgress) -> None:
        self.sink = sink
        self.total = 0

    def set_total(self, total: int | None) -> None:
        if total:
            self.sink.add(total=total - self.total)
            self.total = total

    def advance(self, n: int) -> None:
        self.sink.add(done=n)

    def message(self, text: str) -> None:
        self.sink.label = text


class ExperimentTable(DataTable):
    """The table; its keys are the app's actions (so they never fire under a dialog)."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("slash", "app.focus_filter", "Filter"),
        Binding("s", "app.focus_status", "Status", show=False),
        Binding("space", "app.mark", "Mark"),
        Binding("n", "app.new", "New"),
        Binding("c", "app.comment", "Comment"),
        Binding("p", "app.push", "Push"),
        Binding("g", "app.pull", "Pull"),
        Binding("x,delete", "app.remove", "Remove"),
        Binding("r", "app.reproduce", "Reproduce"),
        Binding("d", "app.diff", "Diff"),
        Binding("o", "app.open", "Open"),
        Binding("f5,ctrl+r", "app.reload", "Reload", show=False),
        Binding("question_mark", "app.help", "Help"),
        Binding("q", "app.quit", "Quit"),
    ]

    # DataTable measures every cell through rich (markup parsed, console sized) when rows
    # arrive, and does per-row bookkeeping in add_row: 8 s for 10,000 rows of 9 columns.
    # Our cells are one-line plain strings (rows.cells), so both are done here in bulk, with
    # DataTable's own structures (hence textual <9 in pyproject.toml): 0.1 s.
    def set_rows(self, keyed: list[tuple[str, list[str]]]) -> None:
        """Replace the rows by ``(key, cells)`` pairs (the columns stay)."""
        self.clear()
        columns = [c.key for c in self.ordered_columns]
        locations, data, table_rows, new = self._row_locations, self._data, self.rows, self._new_rows
        for index, (key, cells) in enumerate(keyed):
            row_key = RowKey(key)
            locations[row_key] = index
            data[row_key] = dict(zip(columns, cells))
            table_rows[row_key] = Row(row_key, 1)
            new.add(row_key)
        self._require_update_dimensions = True
        self._update_count += 1
        if keyed and self.columns:
            self.cursor_coordinate = self.cursor_coordinate
            self._highlight_cursor()
        self.check_idle()

    def _update_dimensions(self, new_rows: Any) -> None:
        data = self._data
        new = [data[k] for k in new_rows if k in data]
        for column in self.ordered_columns:
            key = column.key
            values = [cells.get(key) for cells in new]
            widest = max((len(v) if v.isascii() else cell_len(v) for v in values
                          if isinstance(v, str)), default=0)
            column.content_width = max(column.content_width, widest)
        header = self.header_height if self.show_header else 0
        self.virtual_size = Size(
            sum(c.get_render_width(self) for c in self.columns.values())
            + self._row_label_column_width, len(self.rows) + header)


class ResutilApp(App[None]):
    """Every experiment of a project, local and remote, and what can be done with them."""

    CSS_PATH = "app.tcss"
    TITLE = "resutil"
    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape", "focus_table", "Table", show=False)]
    launcher: Callable[[str], Any] = staticmethod(click.launch)  # tests record the call

    def __init__(self, project: Project) -> None:
        super().__init__()
        self.project = project
        self.entries: list[Entry] = []  # newest first
        self.rows_shown: list[Entry] = []
        self.metric_columns: list[str] = []
        self.filter = rows.Filter()
        self.marked: set[str] = set()  # identities
        self.remote_state = "…"
        self.progress = TextualProgress()
        self.busy: str | None = None
        self.loaded = threading.Event()  # the full catalog (remote, metrics) is shown
        self._detail_timer: Timer | None = None
        self._filter_timer: Timer | None = None
        self._shown: tuple[str, ...] = ()

    # -- layout ---------------------------------------------------------------------------
    def compose(self) -> ComposeResult:
        yield Header()
        with Horizontal(id="filters"):
            yield Input(placeholder="/ filter: words in name, comment, step", id="filter")
            yield Select([(s, s) for s in rows.STATUSES], prompt="any status", id="status")
            yield Input(placeholder="since: 3d, today, 2024-07-06", id="since")
        with Horizontal(id="main"):
            yield ExperimentTable(id="table", cursor_type="row", zebra_stripes=True)
            with VerticalScroll(id="detail"):
                yield Static("", id="detail-text", markup=False)
        with Horizontal(id="busy"):
            yield Label("", id="busy-label", markup=False)
            yield ProgressBar(id="progress", show_eta=False)
        yield Footer()

    @property
    def table(self) -> DataTable:
        return self.query_one("#table", DataTable)

    def on_mount(self) -> None:
        self.title = f"resutil — {self.project.config.project_name}"
        self.sub_title = "reading experiments…"
        self.query_one("#busy").display = False
        self.table.focus()
        self.set_interval(0.1, self._draw_progress)
        self.load(first=True)

    # -- loading --------------------------------------------------------------------------
    @work(thread=True, exclusive=True, group="load")
    def load(self, first: bool = False) -> None:
        """Every experiment, then their metrics. The remote is listed from the start, in a
        thread of its own; when that takes longer than ``REMOTE_WAIT`` (a slow network), the
        local experiments are shown first."""
        worker = get_current_worker()
        self.loaded.clear()
        try:
            project = Project(self.project.config)  # a fresh listing of the remote
            self.project = project
            listed = threading.Event()
            if not project.no_remote:
                threading.Thread(target=self._list_remote, args=(project, listed),
                                 daemon=True).start()
            local = local_records(project.workspace)  # while the remote is listed
            if not project.no_remote:
                if first and not listed.wait(REMOTE_WAIT):
                    cat = catalog(project, remote=False, metrics=False, local=local)
                    self.call_from_thread(self.show_catalog, cat, partial=True)
                listed.wait()
            if worker.is_cancelled:
                return
            cat = catalog(project, remote=True, metrics=False, local=local)
            self.call_from_thread(self.show_catalog, cat, partial=True)
            warnings = cat.warnings + read_metrics(project, cat.entries,
                                                   progress=self._metrics_progress)
            if worker.is_cancelled:
                return
            self.call_from_thread(self.show_catalog, cat, warnings=warnings)
        except ResutilError as e:
            self.call_from_thread(self.say_error, str(e))
        finally:
            self.loaded.set()

    @staticmethod
    def _list_remote(project: Project, listed: threading.Event) -> None:
        try:
            project.remote.experiments()
        except Exception as e:  # noqa: BLE001 - catalog lists it again and says what is wrong
            log.debug("listing the remote ahead failed: %s", e)
        finally:
            listed.set()

    def _metrics_progress(self, done: int, total: int) -> None:
        if not self.busy:
            self.progress.label = "metrics"
            self.progress.count(done, total)

    def show_catalog(self, cat: Catalog, partial: bool = False,
                     warnings: list[str] | None = None) -> None:
        self.entries = list(reversed(cat.entries))
        self.remote_state = cat.remote
        self.metric_columns = cat.metric_columns()[:rows.MAX_METRIC_COLUMNS]
        where = {"listed": "local and remote", "off": "local only (remote off)",
                 "unreachable": "local only: the remote could not be reached"}[cat.remote]
        if partial and cat.remote == "off" and not self.project.no_remote:
            where = "local; listing the remote…"
        self.sub_title = f"{len(self.entries)} experiments, {where}"
        self.rebuild()
        for warning in (warnings or [])[:3]:
            self.notify(warning, severity="warning", markup=False)
        if warnings and len(warnings) > 3:
            self.notify(f"and {len(warnings) - 3} more warnings (resutil list shows them)",
                        severity="warning")

    def rebuild(self) -> None:
        """Draw the table: the entries the filter keeps, the cursor kept on its experiment."""
        table = self.table
        current = self.current()
        self.rows_shown = [e for e in self.entries if self.filter.keeps(e)]
        columns = (*[k for k, _ in rows.COLUMNS], *self.metric_columns)
        if columns != self._shown:
            table.clear(columns=True)
            for key, label in rows.COLUMNS:
                table.add_column(label, key=key)
            for m in self.metric_columns:
                table.add_column(m, key=f"m:{m}")
            self._shown = columns
        metrics, marked = self.metric_columns, self.marked
        table.set_rows([(e.identity, rows.cells(e, metrics, e.identity in marked))
                        for e in self.rows_shown])
        if current is not None and current.identity in table.rows:
            table.move_cursor(row=table.get_row_index(current.identity), animate=False)
        shown = self.filter.describe()
        table.border_title = (f"{len(self.rows_shown)} of {len(self.entries)} ({shown})" if shown
                              else f"{len(self.entries)} experiments")
        if not self.rows_shown:
            self._set_detail("", "Nothing to show." + (" Change the filter." if shown else ""))

    # -- the cursor, marks, the detail pane ---------------------------------------------------
    def current(self) -> Entry | None:
        row = self.table.cursor_row
        return self.rows_shown[row] if 0 <= row < len(self.rows_shown) else None

    def targets(self) -> list[Entry]:
        """The marked experiments (in the table's order), else the one at the cursor."""
        chosen = [e for e in self.entries if e.identity in self.marked]
        if chosen:
            return chosen
        current = self.current()
        return [current] if current else []

    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        entry = self.current()
        if entry is None:
            return
        self.query_one("#detail-text", Static).update(entry.name)
        if self._detail_timer is not None:
            self._detail_timer.stop()
        self._detail_timer = self.set_timer(DETAIL_DELAY, lambda: self.show_detail(entry))

    @work(thread=True, exclusive=True, group="detail")
    def show_detail(self, entry: Entry) -> None:
        """``resutil show --files`` in the pane, with the metrics."""
        from ..experiments import describe_experiment, show_lines

        try:
            info = describe_experiment(self.project, entry.name, files=True)
            lines = show_lines(info)
        except ResutilError as e:
            lines = [entry.name, f"  {e}"]
        if entry.metrics:
            width = max(map(len, entry.metrics)) + 2
            lines += ["metrics", *[f"  {k.ljust(width)}{rows.number(v)}"
                                   for k, v in entry.metrics.items()]]
        if not get_current_worker().is_cancelled:
            self.call_from_thread(self._set_detail, entry.identity, "\n".join(lines))

    def _set_detail(self, identity: str, text: str) -> None:
        current = self.current()
        if identity and (current is None or current.identity != identity):
            return  # the cursor moved on
        self.query_one("#detail-text", Static).update(text)

    def action_mark(self) -> None:
        entry = self.current()
        if entry is None:
            return
        self.marked ^= {entry.identity}
        self.table.update_cell(entry.identity, "mark",
                               rows.MARK if entry.identity in self.marked else "")
        if self.table.cursor_row < len(self.rows_shown) - 1:
            self.table.move_cursor(row=self.table.cursor_row + 1, animate=False)

    # -- the filter -------------------------------------------------------------------------
    def action_focus_filter(self) -> None:
        self.query_one("#filter", Input).focus()

    def action_focus_status(self) -> None:
        self.query_one("#status", Select).focus()

    def on_input_changed(self, event: Input.Changed) -> None:
        if event.input.id not in ("filter", "since"):
            return
        if self._filter_timer is not None:
            self._filter_timer.stop()
        if len(self.entries) > BIG_TABLE:  # a keystroke each redraw of 10,000 rows: wait
            self._filter_timer = self.set_timer(0.25, self.apply_filter)
        else:
            self.apply_filter()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        if event.input.id in ("filter", "since"):
            self.apply_filter()
            self.table.focus()

    def on_select_changed(self, event: Select.Changed) -> None:
        self.apply_filter()

    def action_focus_table(self) -> None:
        self.table.focus()

    def apply_filter(self) -> None:
        from ..experiments import parse_since

        text = self.query_one("#filter", Input).value
        status = self.query_one("#status", Select).value
        since_text = self.query_one("#since", Input).value.strip()
        since = None
        since_box = self.query_one("#since", Input)
        if since_text:
            try:
                since = parse_since(since_text)
                since_box.remove_class("bad")
            except ValueError:
                since_box.add_class("bad")  # still typing: keep the last good filter
                since = self.filter.since
        else:
            since_box.remove_class("bad")
        new = rows.Filter(text, status if isinstance(status, str) else "", since)
        if new != self.filter:
            self.filter = new
            self.rebuild()

    # -- running actions --------------------------------------------------------------------
    def start(self, label: str, job: Callable[[], Any], done: Callable[[Any], None]) -> None:
        """Run ``job`` in a worker thread (one action at a time), then ``done(result)`` here;
        a ResutilError becomes one line of notification."""
        if self.busy:
            self.notify(f"Still busy with {self.busy}; wait until it ends.", severity="warning",
                        markup=False)
            return
        self.busy = label
        self.progress.reset(label)
        self.query_one("#busy").display = True
        self._run(job, done)

    @work(thread=True, group="action")
    def _run(self, job: Callable[[], Any], done: Callable[[Any], None]) -> None:
        try:
            result = job()
        except ResutilError as e:
            self.call_from_thread(self._finish)
            self.call_from_thread(self.say_error, str(e))
            return
        except Exception:
            self.call_from_thread(self._finish)
            raise
        self.call_from_thread(self._finish)
        self.call_from_thread(done, result)

    def _finish(self) -> None:
        self._draw_progress()
        self.busy = None
        self.query_one("#busy").display = False

    def _draw_progress(self) -> None:
        label, total, done = self.progress.snapshot()
        box = self.query_one("#busy")
        if not self.busy and not (label == "metrics" and 0 < done < total):
            if box.display and not self.busy:
                box.display = False
            return
        box.display = True
        self.query_one("#busy-label", Label).update(f"{self.busy or label}: {label}"
                                                    if self.busy and label != self.busy
                                                    else label)
        self.query_one("#progress", ProgressBar).update(total=total or None, progress=done)

    def say_error(self, text: str) -> None:
        self.notify(text, severity="error", markup=False, timeout=8)

    def say(self, text: str) -> None:
        self.notify(text, markup=False)

    def _need(self, entries: list[Entry], what: str) -> bool:
        if not entries:
            self.notify(f"No experiment to {what}.", severity="warning")
            return False
        return True

    # -- actions ----------------------------------------------------------------------------
    def action_new(self) -> None:
        from ..experiments import add_experiment

        deps = [e.name for e in self.entries if e.identity in self.marked]
        note = ("Upstream: " + ", ".join(deps)) if deps else "No upstream (mark some with space)."

        def answered(comment: str | None) -> None:
            if comment is None:
                return
            self.start("new", lambda: add_experiment(self.project, comment.strip(), deps),
                       created)

        def created(folder: Path) -> None:
            self.marked.clear()
            self.say(f"Created {folder}: copy files into it, then push it (p).")
            self.load()

        self.push_screen(AskScreen("Comment for the new experiment (resutil add)", "", note),
                         answered)

    def action_comment(self) -> None:
        from ..experiments import change_comment

        entry = self.current()
        if not self._need([entry] if entry else [], "relabel"):
            return
        assert entry is not None

        def answered(comment: str | None) -> None:
            if comment is None or comment.strip() == entry.comment:
                return
            self.start("comment", lambda: change_comment(self.project, entry.name,
                                                         comment.strip()), renamed)

        def renamed(new: str) -> None:
            self.say(f"Renamed to {new}")
            self.load()

        self.push_screen(AskScreen(f"New comment for {entry.name} (resutil comment)",
                                   entry.comment), answered)

    def action_push(self) -> None:
        names = [e.name for e in self.targets() if e.local]
        if not self._need(names, "push (only local ones can be)"):
            return
        self._sync("push", names)

    def action_pull(self) -> None:
        names = [e.name for e in self.targets() if e.remote]
        if not self._need(names, "pull (only remote ones can be)"):
            return
        self._sync("pull", names)

    def _sync(self, direction: str, names: list[str]) -> None:
        from .. import sync

        def job() -> Any:
            if direction == "push":
                plan = sync.plan_push(self.project, names, False, True)
                return plan, sync.push(self.project, plan, JOBS, self.progress)
            plan = sync.plan_pull(self.project, names, False, True)
            return plan, sync.pull(self.project, plan, JOBS, self.progress)

        def done(got: Any) -> None:
            plan, result = got
            verb = "Pushed" if direction == "push" else "Pulled"
            for warning in plan.warnings:
                self.notify(warning, severity="warning", markup=False)
            for name, why in plan.missing:
                self.notify(f"{name}: {why}", severity="warning", markup=False)
            for old, new in result.moved:
                self.notify(f"{old}: another run holds its identity on the remote; moved to "
                            f"{new}", severity="warning", markup=False)
            lines = [f"{verb} {n}" for n in result.transferred]
            lines += [f"Up to date: {n}" for n in result.up_to_date]
            lines += [f"Skipped {n}: {why}" for n, why in result.skipped]
            if lines:
                self.say("\n".join(lines[:6] + ([f"... and {len(lines) - 6} more"]
                                                if len(lines) > 6 else [])))
            elif not result.failed:
                self.say(f"Nothing to {direction}: everything is up to date.")
            for name, why in result.failed:
                self.say_error(f"{name}: {why}")
            self.marked.clear()
            self.load()

        self.start(direction, job, done)

    def action_remove(self) -> None:
        from ..experiments import plan_removal, remove

        entries = self.targets()
        if not self._need(entries, "remove"):
            return
        names = [e.name for e in entries]
        local = any(e.local for e in entries)
        remote = any(e.remote for e in entries)

        def chosen(where: str | None) -> None:
            if where is None:
                return
            local_only, remote_only = where == "local", where == "remote"
            self.start("rm", lambda: plan_removal(self.project, names, local_only,
                                                  remote_only), planned)

        def planned(plan: Any) -> None:
            for warning in plan.warnings:
                self.notify(warning, severity="warning", markup=False)
            asked = plan.needs_yes
            if not asked:
                self.start("rm", lambda: remove(self.project, plan), removed)
                return
            lines = [f"{i.name}: {' and '.join(i.where)} "
                     f"({'the only copy' if i.kept is None else f'stays {i.kept}'})"
                     for i in asked]
            what = ("from the team's storage" if any(i.remote is not None for i in asked)
                    else "the only copy")
            self.push_screen(ConfirmScreen(f"This removes {what}", lines,
                                           f"Remove {'these' if len(asked) > 1 else 'it'}?"),
                             lambda yes: self.start("rm", lambda: remove(self.project, plan),
                                                    removed) if yes
                             else self.say("Nothing was removed."))

        def removed(result: Any) -> None:
            self.say("\n".join(f"Removed {name} ({' and '.join(did)})"
                               for name, did in result.removed))
            self.marked.difference_update(e.identity for e in entries)
            self.load()

        self.push_screen(RemoveScreen(names, local, remote), chosen)

    def action_reproduce(self) -> None:
        from ..compare import REPRODUCE_WORDS, file_lines
        from ..reproduce import plan_reproduce, plan_rows, reproduce

        entry = self.current()
        if not self._need([entry] if entry else [], "reproduce"):
            return
        assert entry is not None

        def planned(got: Any) -> None:
            plan, lines = got
            if plan.problem:
                self.say_error(plan.problem)
                return
            self.push_screen(ConfirmScreen(f"Reproduce {entry.name}", lines,
                                           "Rerun it now?"),
                             lambda yes: yes and self.start(
                                 "reproduce", lambda: reproduce(self.project, plan,
                                                                progress=self.progress), ran))

        def ran(result: Any) -> None:
            head = f"{result.experiment}: {result.status} ({result.seconds:.1f} s)"
            lines = [head, *result.warnings]
            if result.push_error:
                lines.append(f"push failed: {result.push_error}; push it later (p)")
            if result.files is None:
                lines.append(f"the rerun {result.status} (exit code {result.returncode}); "
                             f"see {result.log}")
            else:
                lines += file_lines(result.files, REPRODUCE_WORDS)
                lines.append("Reproduced bit for bit" if result.reproduced
                             else f"Does not reproduce {result.plan.original}")
            (self.say if result.reproduced else self.say_error)(head)
            self.push_screen(TextScreen(f"Reproduce {entry.name}", "\n".join(lines)))
            self.load()

        def job() -> Any:
            plan = plan_reproduce(self.project, entry.name)
            rows_ = plan_rows(self.project, plan)
            return plan, [*plan.warnings, *[f"{k:<11}{v}" for k, v in rows_]]

        self.start("reproduce", job, planned)

    def action_diff(self) -> None:
        from ..compare import diff_experiments, diff_lines

        pair = [e for e in self.entries if e.identity in self.marked]
        current = self.current()
        if len(pair) == 1 and current is not None and current.identity != pair[0].identity:
            pair.append(current)
        if len(pair) != 2:
            self.notify("Mark two experiments (space) to diff them, or one to diff with the "
                        "one at the cursor.", severity="warning")
            return
        a, b = pair[0].name, pair[1].name
        self.start("diff", lambda: diff_lines(diff_experiments(self.project, a, b)),
                   lambda lines: self.push_screen(TextScreen(f"diff {a} {b}",
                                                             "\n".join(lines))))

    def action_open(self) -> None:
        entry = self.current()
        if entry is None:
            return
        if not entry.local:
            self.say_error(f"{entry.name} is only on the remote: pull it first (g)")
            return
        folder = self.project.workspace.path(entry.name)
        self.launcher(str(folder))
        self.say(f"Opened {folder}")

    def action_reload(self) -> None:
        self.load()

    def action_help(self) -> None:
        self.push_screen(TextScreen("resutil — keys", HELP))
