"""The terminal UI, driven through Textual's own harness (``App.run_test``, ``Pilot``): keys
are pressed and what the screen shows is read back (the table's rows, the detail pane, the
dialogs, the notifications), on a real project with a local-folder storage. The actions are
the CLI's workflows, so these tests check the wiring and the safety rules, not the
workflows again."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from datetime import datetime, timedelta
from typing import Any, Awaitable, Callable

from textual.widgets import Static

from resutil import cli as cli_module
from resutil.project import Project
from resutil.tui.app import DETAIL_DELAY, ResutilApp
from resutil.tui.screens import ConfirmScreen, TextScreen

from .helpers import REPO, Proj, cli_ok, make_clone, make_exp, make_project, run_cli

T0 = datetime(2024, 7, 6, 9, 0, 0)


def drive(proj: Proj, scenario: Callable[[ResutilApp, Any], Awaitable[None]],
          size: tuple[int, int] = (180, 40)) -> ResutilApp:
    """Open the UI on ``proj`` headless, wait until everything is loaded, run ``scenario``."""
    app = ResutilApp(Project.load(proj.root))

    async def main() -> None:
        async with app.run_test(size=size, notifications=True) as pilot:
            await settle(pilot)
            await scenario(app, pilot)

    asyncio.run(main())
    return app


async def settle(pilot: Any) -> None:
    """Until no timer-started worker is pending and no worker runs (an action's end starts
    a reload, a reload's end may start a detail)."""
    app = pilot.app
    for _ in range(3):
        await pilot.pause(DETAIL_DELAY + 0.05)
        await app.workers.wait_for_complete()
        await pilot.pause()


async def press(pilot: Any, *keys: str) -> None:
    await pilot.press(*keys)
    await settle(pilot)


def table(app: ResutilApp) -> list[list[str]]:
    t = app.table
    return [[str(c) for c in t.get_row_at(i)] for i in range(t.row_count)]


def column(app: ResutilApp, label: str) -> list[str]:
    labels = [str(c.label) for c in app.table.ordered_columns]
    i = labels.index(label)
    return [row[i] for row in table(app)]


def row_of(app: ResutilApp, name: str) -> dict[str, str]:
    labels = [str(c.label) for c in app.table.ordered_columns]
    found = [r for r in table(app) if name.startswith(r[1])]
    assert len(found) == 1, (name, table(app))
    return dict(zip(labels, found[0]))


async def cursor_to(pilot: Any, name: str) -> None:
    app = pilot.app
    idents = column(app, "Experiment")
    app.table.move_cursor(row=next(i for i, n in enumerate(idents) if name.startswith(n)))
    await settle(pilot)


def detail(app: ResutilApp) -> str:
    return str(app.query_one("#detail-text", Static).content)


def notes(app: ResutilApp) -> list[tuple[str, str]]:
    """(severity, message) of every notification shown."""
    return [(n.severity, n.message) for n in app._notifications]


def errors(app: ResutilApp) -> list[str]:
    return [m for s, m in notes(app) if s == "error"]


def test_table_shows_local_and_remote_experiments_with_metric_columns(tmp_path):
    a = make_project(tmp_path / "a")
    base = make_exp(a, "base", {"metrics.json": '{"acc": 0.9, "loss": 0.1}'}, when=T0)
    mine = make_exp(a, "mine", {"metrics.json": '{"acc": 0.8}'}, when=T0 + timedelta(minutes=1))
    cli_ok("push", base.name, cwd=a.root)
    b = make_clone(a, tmp_path / "b")
    theirs = make_exp(b, "theirs", {"metrics.json": '{"acc": 0.7}'},
                      when=T0 + timedelta(minutes=2))
    cli_ok("push", theirs.name, cwd=b.root)

    async def scenario(app, pilot):
        assert column(app, "Comment") == ["theirs", "mine", "base"]  # newest first
        assert column(app, "Where") == ["remote", "local", "both"]
        # the remote-only one's metrics are read from its archive, not pulled
        assert column(app, "acc") == ["0.7", "0.8", "0.9"]
        assert column(app, "loss") == ["", "", "0.1"]
        assert row_of(app, mine.name)["Status"] == "finished"
        assert "3 experiments, local and remote" in app.sub_title
        assert not (a.results / theirs.name).exists()

    drive(a, scenario)


def test_filter_by_text_status_and_date(tmp_path):
    p = make_project(tmp_path)
    make_exp(p, "baseline", when=T0)
    make_exp(p, "lr sweep", when=T0 + timedelta(minutes=1), status="failed")
    make_exp(p, "baseline-2", when=datetime.now())

    async def scenario(app, pilot):
        assert len(table(app)) == 3
        await press(pilot, "slash", *"base")
        assert column(app, "Comment") == ["baseline-2", "baseline"]
        assert "2 of 3" in app.table.border_title
        await press(pilot, "escape")
        assert app.focused is app.table
        await press(pilot, "slash", *["backspace"] * 4)
        assert len(table(app)) == 3
        # the status list: s focuses it, Enter opens it, then the status by its letters
        await press(pilot, "escape", "s", "enter", *"fai", "enter")
        assert column(app, "Comment") == ["lr sweep"]
        app.query_one("#status").clear()
        await settle(pilot)
        app.query_one("#since").focus()
        await press(pilot, *"1d", "enter")
        assert column(app, "Comment") == ["baseline-2"]
        assert app.focused is app.table

    drive(p, scenario)


def test_detail_pane_shows_arguments_files_upstream_and_downstream(tmp_path):
    p = make_project(tmp_path)
    data = make_exp(p, "data", {"data.csv": "x\n1\n" * 100}, when=T0)
    train = make_exp(p, "train", {"metrics.json": '{"acc": 0.9}', "model.bin": b"\0" * 2048},
                     deps=[data.name], when=T0 + timedelta(minutes=1))

    async def scenario(app, pilot):
        await cursor_to(pilot, train.name)
        text = detail(app)
        assert text.startswith(train.name)
        assert "args         s.py" in text
        assert f"upstream\n  {data.name}  (manual)" in text
        assert "2.0 KB  model.bin" in text and "metrics.json" in text
        assert "acc" in text.split("metrics\n")[-1]
        await press(pilot, "down")
        text = detail(app)
        assert text.startswith(data.name)
        assert f"downstream\n  {train.name}" in text
        assert "400 B  data.csv" in text

    drive(p, scenario)


def test_uncommitted_files_are_in_the_detail_pane(tmp_path):
    p = make_project(tmp_path)
    folder = make_exp(p, "run", when=T0)
    meta_file = folder / "resutil-exp.yaml"
    meta_file.write_text(meta_file.read_text().replace(
        "uncommited_files: []", "uncommited_files: [train.py, models/net.py]"))

    async def scenario(app, pilot):
        assert "uncommitted  train.py\n               models/net.py" in detail(app)

    drive(p, scenario)


def test_edit_comment_renames_the_folder(tmp_path):
    p = make_project(tmp_path)
    folder = make_exp(p, "old", when=T0)

    async def scenario(app, pilot):
        await press(pilot, "c")
        assert app.screen.query_one("#answer").value == "old"
        await press(pilot, "ctrl+u", *"better", "enter")
        assert column(app, "Comment") == ["better"]
        assert ("information", f"Renamed to {folder.name[:22]}_better") in notes(app)

    drive(p, scenario)
    assert [d.name for d in p.exp_dirs()] == [folder.name[:22] + "_better"]


def test_push_shows_progress_and_then_both(tmp_path):
    p = make_project(tmp_path)
    big = os.urandom(3 << 20)
    folder = make_exp(p, "big", {"weights.bin": big}, when=T0)

    async def scenario(app, pilot):
        assert column(app, "Where") == ["local"]
        await press(pilot, "p")
        assert column(app, "Where") == ["both"]
        assert ("information", f"Pushed {folder.name}") in notes(app)
        bar = app.query_one("#progress")
        # the push's progress callbacks reached the bar: the archive's bytes, all of them
        assert bar.total is not None and bar.total > len(big) // 2
        assert bar.progress == bar.total
        assert not app.query_one("#busy").display  # hidden once done

    drive(p, scenario)
    assert p.remote_zips() == [folder.name + ".zip"]


def test_pull_of_a_remote_only_row(tmp_path):
    a = make_project(tmp_path / "a")
    b = make_clone(a, tmp_path / "b")
    theirs = make_exp(b, "theirs", {"r.json": '{"x": 1}'}, when=T0)
    cli_ok("push", theirs.name, cwd=b.root)

    async def scenario(app, pilot):
        assert column(app, "Where") == ["remote"]
        await press(pilot, "g")
        assert column(app, "Where") == ["both"]
        assert ("information", f"Pulled {theirs.name}") in notes(app)

    drive(a, scenario)
    assert (a.results / theirs.name / "r.json").read_text() == '{"x": 1}'


def test_remove_asks_and_refuses_what_the_cli_refuses(tmp_path):
    p = make_project(tmp_path)
    up = make_exp(p, "up", when=T0)
    down = make_exp(p, "down", deps=[up.name], when=T0 + timedelta(minutes=1))

    async def scenario(app, pilot):
        await cursor_to(pilot, up.name)
        await press(pilot, "x")
        assert "Remove " + up.name in str(app.screen.query("Label").first().content)
        await press(pilot, "l")  # local only: others depend on it: refused, like rm
        assert any("upstream of" in e and down.name in e for e in errors(app))
        assert all("\n" not in e for e in errors(app))
        assert up.exists()
        # never pushed: its only copy, so it asks; "n" keeps it
        await cursor_to(pilot, down.name)
        await press(pilot, "x", "l")
        assert isinstance(app.screen, ConfirmScreen)
        assert f"{down.name}: local (the only copy)" in str(
            app.screen.query_one("#confirm-text").content)
        await press(pilot, "n")
        assert down.exists() and ("information", "Nothing was removed.") in notes(app)
        await press(pilot, "x", "l", "y")
        assert not down.exists()
        assert column(app, "Comment") == ["up"]

    drive(p, scenario)


def test_remove_of_a_pushed_run_locally_asks_nothing(tmp_path):
    p = make_project(tmp_path)
    folder = make_exp(p, "kept", when=T0)
    cli_ok("push", folder.name, cwd=p.root)

    async def scenario(app, pilot):
        await press(pilot, "x", "l")
        assert not isinstance(app.screen, ConfirmScreen)
        assert column(app, "Where") == ["remote"]

    drive(p, scenario)
    assert not folder.exists() and p.remote_zips() == [folder.name + ".zip"]


def test_diff_of_two_marked_rows(tmp_path):
    p = make_project(tmp_path)
    a = make_exp(p, "a", {"metrics.json": '{"acc": 0.5}'}, when=T0)
    b = make_exp(p, "b", {"metrics.json": '{"acc": 0.75}'}, when=T0 + timedelta(minutes=1))

    async def scenario(app, pilot):
        await press(pilot, "d")  # nothing marked
        assert any("Mark two" in m for _, m in notes(app))
        await press(pilot, "space", "space")
        assert column(app, " ") == ["●", "●"]
        await press(pilot, "d")
        assert isinstance(app.screen, TextScreen)
        text = str(app.screen.query_one("#text").content)
        assert "acc" in text and "0.75" in text and "0.5" in text
        await press(pilot, "escape")
        assert not isinstance(app.screen, TextScreen)

    drive(p, scenario)
    assert a.exists() and b.exists()


def test_errors_are_one_line_notifications(tmp_path):
    p = make_project(tmp_path)
    make_exp(p, "one", when=T0)

    async def scenario(app, pilot):
        await press(pilot, "c", "ctrl+u", *"a/b", "enter")  # not a valid comment
        assert len(errors(app)) == 1 and "\n" not in errors(app)[0]
        assert "Traceback" not in errors(app)[0]
        assert column(app, "Comment") == ["one"]
        assert app.is_running

    drive(p, scenario)


def test_new_experiment_with_the_marked_one_upstream_and_open_folder(tmp_path):
    p = make_project(tmp_path)
    data = make_exp(p, "data", when=T0)
    opened: list[str] = []

    async def scenario(app, pilot):
        app.launcher = opened.append
        await press(pilot, "space", "n", *"by hand", "enter")
        assert column(app, "Comment")[0] == "by hand"
        assert any("Created" in m for _, m in notes(app))
        app.table.move_cursor(row=0)
        await press(pilot, "o")

    drive(p, scenario)
    new = p.exp("by hand")
    assert opened == [str(new)]
    assert data.name in (new / "resutil-exp.yaml").read_text()


def test_reproduce_shows_the_plan_and_asks(tmp_path):
    p = make_project(tmp_path)
    make_exp(p, "run", when=T0)

    async def scenario(app, pilot):
        await press(pilot, "r")
        assert isinstance(app.screen, ConfirmScreen)
        text = str(app.screen.query_one("#confirm-text").content)
        assert "reproduces" in text and "s.py" in text
        await press(pilot, "n")
        assert len(table(app)) == 1  # nothing was run

    drive(p, scenario)


def test_help_lists_the_keys(tmp_path):
    p = make_project(tmp_path)

    async def scenario(app, pilot):
        await press(pilot, "question_mark")
        text = str(app.screen.query_one("#text").content)
        assert "reproduce" in text and "push" in text
        await press(pilot, "q")
        assert app.is_running and not isinstance(app.screen, TextScreen)

    drive(p, scenario)


# -- the command ----------------------------------------------------------------------------
def test_no_command_prints_help_when_not_at_a_terminal(tmp_path):
    r = run_cli(cwd=tmp_path)
    assert r.exit_code == 0 and r.stdout.startswith("Usage:") and " ui " in r.stdout


def test_ui_needs_a_terminal_and_a_project(tmp_path, monkeypatch):
    r = run_cli("ui", cwd=tmp_path)
    assert r.exit_code == 1 and r.stderr.startswith("Error:") and "terminal" in r.stderr
    opened: list[Any] = []
    monkeypatch.setattr(cli_module, "_at_terminal", lambda: True)
    monkeypatch.setattr("resutil.tui.run", opened.append)
    outside = run_cli("ui", cwd=tmp_path)
    assert outside.exit_code == 1 and "resutil-conf.yaml" in outside.stderr
    assert len(outside.stderr.strip().splitlines()) == 1
    p = make_project(tmp_path / "p")
    cli_ok(cwd=p.root)  # no command at a terminal: the UI
    cli_ok("ui", cwd=p.root)
    assert [o.config.project_name for o in opened] == ["Proj", "Proj"]


def test_textual_is_imported_only_when_the_ui_starts():
    code = ("import sys, resutil, resutil.cli; from click.testing import CliRunner; "
            "CliRunner().invoke(resutil.cli.cli, ['--help']); "
            "print(sorted(m for m in sys.modules if m.split('.')[0] == 'textual'))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=REPO, check=True).stdout
    assert out.strip() == "[]"
