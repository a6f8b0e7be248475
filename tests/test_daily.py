"""The daily commands as a person at a terminal meets them: init's questions, completion,
list, names by comment, rm's questions, progress at 80 columns, error lines, verify, show,
the "not pushed yet" reminder, add, and prompts while stdout goes to a pipe.

Prompts run on a pseudo-terminal (tests/helpers.py ``Terminal``); the rest through the CLI."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from datetime import datetime, timedelta
from pathlib import Path

import pytest
import yaml

from .helpers import (
    assert_one_warning_line,
    big_file,
    cli_fails as fails,
    cli_in,
    cli_ok as ok,
    make_clone,
    make_exp,
    meta_01x,
    put_zip_01x,
    read_exp,
    run_cli,
    run_script,
    terminals,
    write_script,
)

T0 = datetime(2024, 7, 6, 6, 43, 39)  # prefix aapiyl


@pytest.fixture
def terminal(proj):
    with terminals(proj) as make:
        yield make


@pytest.fixture
def fresh(tmp_path, terminal):
    """An empty folder with a terminal factory for ``python -m resutil ARGS`` in it."""
    from .helpers import Proj

    folder = tmp_path / "fresh"
    folder.mkdir()
    with terminals(Proj(folder, tmp_path / "remote")) as make:
        yield folder, lambda *args, **kw: make(["-m", "resutil", *args], **kw)


# -- 5. init --------------------------------------------------------------------------------
def test_init_checks_each_answer_as_given_and_asks_again(fresh, tmp_path):
    here, resutil = fresh
    nas = tmp_path / "nas"
    t = resutil("init")
    t.answer("Project name", "")                      # Enter: the folder's name
    t.answer("Folder to store results", "")
    t.answer("Storage type", "dropbox")
    t.expect("unknown storage type 'dropbox'")
    t.answer("Storage type", "server")
    t.expect("not supported")
    t.answer("Storage type", "local")
    t.answer("Storage folder", str(nas / "resutil"))  # not mounted (not there)
    t.expect("does not exist")
    t.answer("Create it?", "n")
    t.answer("Storage folder", "")                    # an empty answer is no folder
    t.expect("needs a folder")
    nas.mkdir()
    t.answer("Storage folder", str(nas))
    t.answer("Add a .gitignore", "y")
    assert t.finish() == 0, t.plain
    assert "Initialized" in t.plain and "Traceback" not in t.plain
    conf = yaml.safe_load((here / "resutil-conf.yaml").read_text())
    assert conf == {"project_name": "fresh", "results_dir": "results", "storage_type": "local",
                    "storage_config": {"path": str(nas)}}
    assert not (nas / "resutil").exists()


def test_init_creates_a_missing_storage_folder_only_when_told(fresh, tmp_path):
    here, resutil = fresh
    t = resutil("init")
    for question in ("Project name", "Folder to store results"):
        t.answer(question, "")
    t.answer("Storage type", "local")
    t.answer("Storage folder", "team-store")
    t.answer("Create it?", "y")
    t.answer("Add a .gitignore", "n")
    assert t.finish() == 0, t.plain
    assert "Created the storage folder" in t.plain
    assert (here / "team-store").is_dir()
    assert not (here / "results" / ".gitignore").exists()
    # Without a terminal (--yes), the folder is created and that is said.
    r = ok("init", "--force", "--yes", "--path", str(tmp_path / "new" / "store"), cwd=here)
    assert f"Created the storage folder {tmp_path / 'new' / 'store'}" in r.stderr


def test_init_gcs_key_file_is_checked_before_the_bucket_and_enter_means_none(fresh):
    here, resutil = fresh
    t = resutil("init")
    for question in ("Project name", "Folder to store results"):
        t.answer(question, "")
    t.answer("Storage type", "gcs")
    t.answer("Service-account key file", "missing.json")
    t.expect("missing.json does not exist")
    t.answer("Service-account key file", "")  # Application Default Credentials
    t.expect("Bucket name")
    t.send(b"\x03")
    assert t.finish() != 0
    assert not (here / "resutil-conf.yaml").exists()


def test_init_asks_the_storage_part_again_when_the_check_fails(fresh, tmp_path):
    here, resutil = fresh
    blocked = tmp_path / "a-file"
    blocked.write_text("x")
    nas = tmp_path / "nas"
    nas.mkdir()
    t = resutil("init")
    for question in ("Project name", "Folder to store results"):
        t.answer(question, "")
    t.answer("Storage type", "local")
    t.answer("Storage folder", str(blocked / "sub"))  # cannot be created
    t.answer("Create it?", "y")
    t.expect("cannot create storage folder")
    t.answer("Change the storage settings?", "y")
    t.answer("Storage type", "")                      # the last answer is the default
    t.answer("Storage folder", str(nas))
    t.answer("Add a .gitignore", "y")
    assert t.finish() == 0, t.plain
    assert yaml.safe_load((here / "resutil-conf.yaml").read_text())["storage_config"] == {
        "path": str(nas)}


# -- 6. completion ----------------------------------------------------------------------------
def _complete(proj, words: list[str]) -> list[str]:
    """What bash offers for ``words`` (the last one being completed), through the script
    ``resutil completion bash`` prints."""
    source = run_cli("completion", "bash").stdout
    bindir = proj.root / "bin"
    bindir.mkdir(exist_ok=True)
    (bindir / "resutil").write_text(f"#!/bin/sh\nexec {sys.executable} -m resutil \"$@\"\n")
    (bindir / "resutil").chmod(0o755)
    script = source + textwrap.dedent(f"""
        COMP_WORDS=({' '.join(_bash_quote(w) for w in words)})
        COMP_CWORD={len(words) - 1}
        _resutil_completion resutil
        printf '%s\\n' "${{COMPREPLY[@]}}"
    """)
    env = {**os.environ, "PATH": f"{bindir}{os.pathsep}{os.environ['PATH']}",
           "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    out = subprocess.run(["bash", "-c", script], cwd=proj.root, env=env, capture_output=True,
                         text=True, check=True).stdout
    return [ln for ln in out.splitlines() if ln]


def _bash_quote(word: str) -> str:
    return "'" + word.replace("'", "'\\''") + "'"


def test_completion_offers_remote_names_from_the_last_listing_escaped(proj, tmp_path):
    here = make_exp(proj, "local one", when=T0)
    there = make_exp(proj, "on the remote", when=T0 + timedelta(minutes=1))
    ok("push", there.name)
    shutil.rmtree(there)
    assert _complete(proj, ["resutil", "pull", "aa"]) == []  # nothing listed yet
    ok("list")  # lists the remote: its names are kept for completion
    escaped = there.name.replace(" ", "\\ ")
    assert _complete(proj, ["resutil", "pull", "aa"]) == [escaped]
    assert _complete(proj, ["resutil", "push", "aa"]) == [here.name.replace(" ", "\\ ")]
    assert sorted(_complete(proj, ["resutil", "show", "aa"])) == sorted(
        [here.name.replace(" ", "\\ "), escaped])
    # Completion never contacts the storage: it works with the storage gone.
    shutil.rmtree(proj.remote)
    assert _complete(proj, ["resutil", "pull", "aa"]) == [escaped]


# -- 7. list ----------------------------------------------------------------------------------
def test_list_shows_every_remote_status_from_the_listing_alone(proj, tmp_path):
    exps = {s: make_exp(proj, s, when=T0 + timedelta(minutes=i), status=s)
            for i, s in enumerate(["finished", "failed", "interrupted"])}
    ok("push", *[e.name for e in exps.values()])
    clone = make_clone(proj, tmp_path / "clone")  # nothing read or cached there yet
    # A sidecar that is read would now be reported as broken: list reads none.
    for side in proj.sidecar_dir.glob("*.json"):
        side.write_text("not json")
    r = cli_in(clone, "list")
    assert "Warning" not in r.stderr, r.stderr
    shown = {ln.split()[-1]: ln.split()[1] for ln in r.stdout.splitlines()[1:]}
    assert shown == {e.name: s for s, e in exps.items()}


def test_list_prints_whole_names_into_a_pipe(proj):
    long = make_exp(proj, "a-comment-far-too-long-for-eighty-columns-" + "x" * 60, when=T0)
    out = ok("list").stdout  # not a terminal: whole lines
    assert long.name in out.splitlines()[1] and "…" not in out


def test_list_filters_by_status_comment_and_start(proj):
    old = make_exp(proj, "baseline-v1", when=datetime.now() - timedelta(days=10))
    new = make_exp(proj, "Baseline-v2", when=datetime.now() - timedelta(hours=2),
                   status="failed")
    other = make_exp(proj, "other", when=datetime.now() - timedelta(hours=1))

    def names(*args):
        return [r["name"] for r in json.loads(ok("list", "--json", *args).stdout)]

    assert names("--grep", "baseline") == [old.name, new.name]  # any case
    assert names("--grep", "v[12]$", "--status", "failed") == [new.name]
    assert names("--since", "3d") == [new.name, other.name]
    assert names("--since", (datetime.now() - timedelta(days=11)).date().isoformat()) == [
        old.name, new.name, other.name]
    assert names("--status", "finished", "--status", "failed", "--since", "90m") == [other.name]
    r = run_cli("list", "--since", "last tuesday")
    assert r.exit_code == 2 and "30m, 12h, 3d" in r.stderr
    r = run_cli("list", "--grep", "(")
    assert r.exit_code == 2 and "regular expression" in r.stderr


def test_list_json_has_comment_date_and_commit(proj, tmp_path):
    local = make_exp(proj, "here", when=T0)
    remote = make_exp(proj, "there", when=T0 + timedelta(hours=1))
    for folder, commit in ((local, "a" * 40), (remote, "b" * 40)):
        meta = read_exp(folder)
        meta["git"]["commit_hash"] = commit
        (folder / "resutil-exp.yaml").write_text(yaml.safe_dump(meta))
    ok("push", "--force", remote.name)
    shutil.rmtree(remote)
    rows = {r["name"]: r for r in json.loads(ok("list", "--json").stdout)}
    assert rows[local.name]["comment"] == "here"
    assert rows[local.name]["date"] == "2024-07-06T06:43:39"
    assert rows[local.name]["commit"] == "a" * 40
    assert (rows[remote.name]["comment"], rows[remote.name]["commit"]) == ("there", "b" * 40)
    assert (rows[remote.name]["local"], rows[remote.name]["remote"]) == (False, True)


def test_list_of_an_unreachable_cloud_storage_shows_local_rows(tmp_path, gcs_settings,
                                                              monkeypatch):
    from .helpers import closed_port, make_project

    proj = make_project(tmp_path, gcs_settings)
    conf = proj.root / "resutil-conf.yaml"
    conf.write_text(conf.read_text().replace(gcs_settings.values["endpoint"],
                                             f"http://127.0.0.1:{closed_port()}"))
    monkeypatch.chdir(proj.root)
    exp = make_exp(proj, "offline", when=T0)
    r = ok("list", "--json")
    assert_one_warning_line(r.stderr, "local experiments only")
    [row] = json.loads(r.stdout)
    assert (row["name"], row["local"], row["remote"]) == (exp.name, True, None)


# -- 7. names by comment ------------------------------------------------------------------------
def test_any_command_takes_a_unique_comment(proj, tmp_path):
    base = make_exp(proj, "baseline", when=T0)
    make_exp(proj, "tuned", when=T0 + timedelta(seconds=1))  # same six letters
    make_exp(proj, "tuned", when=T0 + timedelta(seconds=2))
    assert json.loads(ok("show", "--json", "baseline").stdout)["name"] == base.name
    fails("show", "aapiyl", needles=["matches 3 experiments", "type more"])
    fails("show", "tuned", needles=["matches 2 experiments"])
    ok("push", "baseline")
    shutil.rmtree(base)
    ok("pull", "baseline")  # a remote-only one, by its comment
    assert base.is_dir()
    ok("comment", "baseline", "reference")
    assert json.loads(ok("show", "--json", "reference").stdout)["comment"] == "reference"


# -- 8. rm ------------------------------------------------------------------------------------
def test_rm_asks_at_a_terminal_before_removing_remotely(proj, terminal):
    exp = make_exp(proj, "shared", when=T0)
    ok("push", exp.name)
    t = terminal(["-m", "resutil", "rm", "shared"])
    t.answer("Remove it?", "n")
    assert t.finish() == 0
    assert "local and remote" in t.plain and "Nothing was removed" in t.plain
    assert exp.is_dir() and proj.zip_of(exp.name).exists()
    t = terminal(["-m", "resutil", "rm", "-r", "shared"])
    t.answer("Remove it?", "y")
    assert t.finish() == 0
    assert exp.is_dir() and not proj.zip_of(exp.name).exists()


def test_rm_asks_before_removing_the_only_copy(proj, terminal):
    exp = make_exp(proj, "never-pushed", when=T0)
    t = terminal(["-m", "resutil", "rm", "-l", exp.name])
    t.expect("the only copy")
    t.answer("Remove it?", "")  # Enter: no
    assert t.finish() == 0 and exp.is_dir()
    # Without a terminal: one line saying what to do, nothing removed.
    err = fails("rm", "-l", exp.name, needles=["only copy", "--yes", "nothing was removed"])
    assert exp.name in err and exp.is_dir()
    ok("rm", "-l", "--yes", exp.name)
    assert not exp.exists()


def test_rm_local_is_fine_with_dependents_when_the_remote_keeps_it(proj):
    up = make_exp(proj, "up", when=T0)
    down = make_exp(proj, "down", when=T0 + timedelta(hours=1), deps=[up.name])
    fails("rm", "-l", "-y", up.name, needles=[down.name, "upstream of"])  # only copy
    ok("push", down.name)  # pushes up too
    r = ok("rm", "-l", up.name)  # no question: the same run is on the remote
    assert not up.exists() and proj.zip_of(up.name).exists()
    assert "Removed" in r.stderr
    ok("lineage", down.name)  # still whole, through the remote
    # Removing it from the remote too is refused: then the lineage would break.
    fails("rm", "-r", "-y", up.name, needles=[down.name])


# -- 9. progress and error lines at 80 columns -----------------------------------------------
def _visible_lines(t) -> list[str]:
    return [ln for ln in t.lines() if ln.strip()]


def test_pull_from_a_folder_storage_shows_progress_within_80_columns(proj, terminal):
    exp = make_exp(proj, "a-long-comment-that-would-push-the-rate-and-eta-off-an-80-column-line",
                   {"data.bin": b""}, when=T0)
    big_file(exp / "data.bin", 24)
    from .helpers import seal

    seal(exp)
    t = terminal(["-m", "resutil", "push", exp.name], cols=80, rows=24)
    assert t.finish() == 0, t.plain
    pushed = [ln for ln in _visible_lines(t) if "MB" in ln]
    shutil.rmtree(exp)
    t = terminal(["-m", "resutil", "pull", exp.name], cols=80, rows=24)
    assert t.finish() == 0, t.plain
    pulled = [ln for ln in _visible_lines(t) if "MB" in ln]
    for lines in (pushed, pulled):
        assert lines, t.plain
        assert any("25.2/25.2 MB" in ln for ln in lines), lines
        assert all(len(ln) <= 80 for ln in lines), lines
        assert all(ln.startswith(exp.name[:22]) and "…" in ln for ln in lines), lines
    assert (exp / "data.bin").stat().st_size == 24 << 20


def test_error_lines_wrap_between_words_at_a_terminal(proj, terminal):
    query = "an-experiment-name-nobody-made-" + "z" * 20
    t = terminal(["-m", "resutil", "show", query], cols=60, rows=24)
    assert t.finish() == 1
    lines = _visible_lines(t)
    assert lines[0].startswith("Error: ") and all(len(ln) <= 60 for ln in lines), lines
    words = " ".join(ln.strip() for ln in lines).split()
    assert f"'{query}'" in words, lines  # every word whole
    assert " ".join(words) == (f"Error: no experiment matches '{query}' locally or on the "
                               "remote; see 'resutil list'")


# -- 10. verify, show, the reminder, add ----------------------------------------------------
def test_verify_without_names_checks_local_and_remote_and_says_so(proj, tmp_path):
    empty = ok("verify")
    assert "Nothing to check: no local folders in results and no remote archives" in empty.stderr
    a = make_exp(proj, "a", when=T0)
    b = make_exp(proj, "b", when=T0 + timedelta(hours=1))
    ok("push", a.name, b.name)
    clone = make_clone(proj, tmp_path / "clone")  # a fresh clone: nothing local
    r = cli_in(clone, "verify")
    assert f"ok {a.name} (remote)" in r.stderr and f"ok {b.name} (remote)" in r.stderr
    assert "Checked 0 local folders in results and 2 remote archives on" in r.stderr
    assert r.stderr.rstrip().endswith("all intact")
    zpath = proj.zip_of(b.name)
    zpath.write_bytes(zpath.read_bytes()[:-10] + b"x" * 10)
    r = run_cli("verify")
    assert r.exit_code == 1
    assert "Checked 2 local folders in results and 2 remote archives" in r.stderr
    assert "1 with problems" in r.stderr and f"Error: {b.name} (remote)" in r.stderr


def test_show_prints_lists_line_by_line_whole_comments_and_files(proj):
    comment = "a comment long enough to be cut by a table at eighty columns, but kept whole"
    exp = make_exp(proj, comment, {"a.txt": "x" * 1500, "sub/b.txt": "y"}, when=T0)
    meta = read_exp(exp)
    meta["git"]["uncommited_files"] = ["train.py", "lib/util.py"]
    (exp / "resutil-exp.yaml").write_text(yaml.safe_dump(meta))
    out = ok("show", "--files", comment).stdout
    assert "[" not in out and "'" not in out, out
    lines = out.splitlines()
    assert f"  comment      {comment}" in lines
    i = lines.index("  uncommitted  train.py")
    assert lines[i + 1] == "               lib/util.py"
    assert lines[lines.index("files") + 1:] == ["  1.5 KB  a.txt", "     1 B  sub/b.txt"]
    ok("push", exp.name)
    shutil.rmtree(exp)
    out = ok("show", "--files", comment).stdout  # remote only: as its sidecar lists them
    assert out.splitlines()[-2:] == ["  1.5 KB  a.txt", "     1 B  sub/b.txt"]
    assert "  files        2" in out.splitlines()
    old = "aapiyl_20240706T070000_from-0.1.x"  # pushed by 0.1.x: no sidecar, no list
    put_zip_01x(proj, old, {"resutil-exp.yaml": meta_01x(old), "x.txt": "x"})
    out = ok("show", "--files", old).stdout
    assert out.splitlines()[-1] == (f"  (only on the remote, whose record does not list its "
                                    f"files: they are listed once pulled (resutil pull {old}))")


def test_the_not_pushed_reminder_leaves_out_runs_made_with_the_remote_off(proj):
    write_script(proj, """
        import resutil

        @resutil.main()
        def main(params):
            (params.ex_dir / "r.txt").write_text("1")

        main()
    """)
    for _ in range(2):
        assert run_script(proj, env={"RESUTIL_NO_REMOTE": "1"}).returncode == 0
    assert all(read_exp(f)["no_remote"] is True for f in proj.exp_dirs())
    r = run_script(proj)
    assert r.returncode == 0 and "Pushed" in r.stderr
    assert "not pushed yet" not in r.stderr, r.stderr
    make_exp(proj, "forgotten")  # made with the remote on, never pushed
    r = run_script(proj)
    assert "1 other experiment(s) are not pushed yet" in r.stderr, r.stderr


def test_add_says_how_to_fill_and_push_it(proj):
    r = ok("add", "raw data")
    folder = Path(r.stdout.strip())
    assert folder.is_dir() and folder.name.endswith("_raw data")
    assert f"cp data.csv 'results/{folder.name}/'" in r.stderr
    assert f"resutil push '{folder.name}'" in r.stderr
    (folder / "data.csv").write_text("1,2\n")
    ok("push", folder.name)
    assert "data.csv" in ok("show", "--files", "raw data").stdout


# -- 11. a prompt while stdout goes to a pipe ------------------------------------------------
def test_the_comment_prompt_shows_when_stdout_is_piped(proj, terminal):
    write_script(proj, """
        import resutil

        @resutil.main()
        def main(params):
            print("training output")
            (params.ex_dir / "r.txt").write_text("1")

        main()
    """)
    t = terminal(["s.py"], stdout=subprocess.PIPE)  # python s.py | tee log
    t.answer("Comment for this experiment", "piped")
    assert t.finish() == 0, t.plain
    assert proj.only_exp().name.endswith("_piped")
    assert t.piped_out == "training output\n"  # the prompt went to the terminal only
