"""The CLI through its real entry point (click's CliRunner, in-process, stdout and stderr
apart): list, add, rm, comment, show, verify, name resolution, help text."""

from __future__ import annotations

import json
import shutil
import zipfile
from datetime import datetime

import click
import yaml

from resutil.cli import cli

from .helpers import (
    cli_fails as fails,
    cli_ok as ok,
    assert_one_error_line,
    make_exp,
    read_exp,
    read_exp_in_zip,
    run_cli,
)

T0 = datetime(2024, 7, 6, 6, 43, 39)  # prefix aapiyl


# -- list ---------------------------------------------------------------------------------
def test_list_shows_where_each_experiment_is(proj):
    both = make_exp(proj, "both", when=T0)
    remote_only = make_exp(proj, "remote-only", when=T0.replace(minute=50))
    local_only = make_exp(proj, "local-only", when=T0.replace(hour=8), status="failed")
    ok("push", both.name, remote_only.name)
    shutil.rmtree(remote_only)

    rows = {r["name"]: r for r in json.loads(ok("list", "--json").stdout)}
    assert set(rows) == {both.name, remote_only.name, local_only.name}
    assert (rows[both.name]["local"], rows[both.name]["remote"]) == (True, True)
    assert (rows[remote_only.name]["local"], rows[remote_only.name]["remote"]) == (False, True)
    assert (rows[local_only.name]["local"], rows[local_only.name]["remote"]) == (True, False)
    assert rows[both.name]["status"] == "finished"
    # list makes one listing request: a remote-only row's status comes from the sidecar cache,
    # so it may be blank until something (show, pull) has read that experiment's metadata.
    assert rows[remote_only.name]["status"] in ("", "finished")
    assert rows[local_only.name]["status"] == "failed"
    assert rows[both.name]["identity"] == both.name[:22]

    table = ok("list").stdout
    header, *lines = [ln for ln in table.splitlines() if ln.strip()]
    assert header.split() == ["Remote", "Local", "Status", "Experiment"]
    by_name = {ln.split()[-1]: ln.split() for ln in lines}
    assert by_name[both.name] == ["✓", "✓", "finished", both.name]
    assert by_name[local_only.name] == ["✓", "failed", local_only.name]
    assert by_name[remote_only.name] in (["✓", remote_only.name],
                                         ["✓", "finished", remote_only.name])
    ok("show", remote_only.name)  # reads the remote metadata once
    rows = {r["name"]: r for r in json.loads(ok("list", "--json").stdout)}
    assert rows[remote_only.name]["status"] == "finished"
    # The remote column comes first: for a remote-only row the tick sits under "Remote".
    remote_line = next(ln for ln in table.splitlines() if remote_only.name in ln)
    local_line = next(ln for ln in table.splitlines() if local_only.name in ln)
    assert remote_line.index("✓") < local_line.index("✓")

    local_rows = json.loads(ok("list", "--json", "--local").stdout)
    assert {r["name"] for r in local_rows} == {both.name, local_only.name}


def test_list_of_an_empty_project(proj):
    assert json.loads(ok("list", "--json").stdout) == []


# -- add ----------------------------------------------------------------------------------
def test_add_with_dependencies(proj):
    up1 = make_exp(proj, "raw", when=T0)
    up2 = make_exp(proj, "labels", when=T0.replace(hour=9))
    r = ok("add", "manual-input", "-d", "aapiyl", "-d", up2.name)
    folder = proj.results / r.stdout.strip().split("/")[-1]
    assert folder.is_dir() and folder.name.endswith("_manual-input")
    meta = read_exp(folder)
    assert meta["dependency"] == [up1.name, up2.name]
    assert [s["source"] for s in meta["dependency_sources"]] == ["manual", "manual"]
    assert meta["status"] == "finished"


def test_add_refuses_an_unknown_dependency_and_creates_nothing(proj):
    fails("add", "x", "-d", "zzzzzz", needles=["zzzzzz"])
    assert proj.exp_dirs() == []


def test_add_refuses_an_invalid_comment(proj):
    fails("add", "a/b", needles=["invalid comment"])
    assert proj.exp_dirs() == []


# -- rm -----------------------------------------------------------------------------------
def test_rm_refuses_to_break_lineage_unless_forced(proj):
    up = make_exp(proj, "up", when=T0)
    down = make_exp(proj, "down", when=T0.replace(hour=9), deps=[up.name])
    ok("push", down.name)
    fails("rm", "aapiyl", needles=[up.name, down.name, "--force"])
    assert up.is_dir() and proj.zip_of(up.name).exists()

    # Removing both together is fine: nothing is left depending on them.
    ok("rm", up.name, down.name, "-l")
    assert proj.exp_dirs() == []
    assert proj.zip_of(up.name).exists() and proj.zip_of(down.name).exists()


def test_rm_force_local_and_remote(proj):
    up = make_exp(proj, "up", when=T0)
    down = make_exp(proj, "down", when=T0.replace(hour=9), deps=[up.name])
    other = make_exp(proj, "other", when=T0.replace(hour=10))
    ok("push", "-A")

    r = ok("rm", "-r", "--yes", other.name)
    assert other.is_dir() and not proj.zip_of(other.name).exists()
    assert not proj.sidecar(other.name).exists()
    assert "remote" in r.stderr

    ok("rm", "-l", "-y", other.name)  # its only copy now
    assert not other.exists()
    fails("rm", other.name, needles=[other.name])  # gone from both sides now

    r = ok("rm", "--force", up.name)
    assert not up.exists() and not proj.zip_of(up.name).exists()
    assert down.is_dir()


# -- comment ------------------------------------------------------------------------------
def test_comment_relabels_locally_and_remotely_and_lineage_holds(proj):
    up = make_exp(proj, "old-label", {"data.csv": "1,2\n"}, when=T0)
    down = make_exp(proj, "down", when=T0.replace(hour=9), deps=[up.name])
    ok("push", "-A")
    ok("comment", "aapiyl", "new-label")

    renamed = up.with_name(up.name[:22] + "_new-label")
    assert not up.exists() and renamed.is_dir()
    assert read_exp(renamed)["comment"] == "new-label"
    assert proj.remote_zips() == sorted([f"{renamed.name}.zip", f"{down.name}.zip"])
    assert read_exp_in_zip(proj.zip_of(renamed.name))["name"] in (up.name, renamed.name)
    rows = {r["identity"]: r["name"] for r in json.loads(ok("list", "--json").stdout)}
    assert rows[up.name[:22]] == renamed.name

    # The downstream still names the old label, and still finds its upstream.
    assert read_exp(down)["dependency"] == [up.name]
    info = json.loads(ok("show", "--json", renamed.name).stdout)
    assert info["downstream"] == [down.name]
    info = json.loads(ok("show", "--json", down.name).stdout)
    assert info["upstream"] == [{"name": renamed.name, "source": "manual"}]
    assert renamed.name in ok("show", down.name).stdout

    # Pulling the downstream on a fresh machine pulls the relabelled upstream.
    shutil.rmtree(renamed)
    shutil.rmtree(down)
    ok("pull", down.name)
    assert renamed.is_dir() and down.is_dir()
    assert (renamed / "data.csv").read_text() == "1,2\n"


def test_comment_refuses_an_invalid_label(proj):
    up = make_exp(proj, "x", when=T0)
    fails("comment", "aapiyl", "bad/label", needles=["invalid comment"])
    assert up.is_dir()


# -- show ---------------------------------------------------------------------------------
def test_show_text_and_json(proj):
    up = make_exp(proj, "up", when=T0)
    down = make_exp(proj, "down", {"a.txt": "x" * 1000}, when=T0.replace(hour=9),
                    deps=[up.name], source="argv")
    info = json.loads(ok("show", "--json", down.name).stdout)
    assert info["name"] == down.name
    assert info["status"] == "finished"
    assert info["comment"] == "down"
    assert info["upstream"] == [{"name": up.name, "source": "argv"}]
    assert info["downstream"] == []
    assert info["files"] == 1
    assert info["where"] == "local"

    text = ok("show", "aapiyl").stdout
    assert up.name in text and "finished" in text
    assert "downstream" in text and down.name in text

    ok("push", down.name)
    shutil.rmtree(down)
    info = json.loads(ok("show", "--json", down.name).stdout)
    assert info["where"] == "remote only"
    assert info["upstream"] == [{"name": up.name, "source": "argv"}]


# -- verify -------------------------------------------------------------------------------
def test_verify_detects_a_modified_local_file(proj):
    exp = make_exp(proj, "v", {"a.txt": "original\n", "b.txt": "kept\n"}, when=T0)
    r = ok("verify", exp.name)
    assert "ok" in r.stderr
    (exp / "a.txt").write_text("changed!!\n")
    (exp / "extra.txt").write_text("new\n")
    r = run_cli("verify", exp.name)
    assert r.exit_code == 1
    line = assert_one_error_line(r.stderr, "a.txt", "extra.txt")
    assert "b.txt" not in line


def test_verify_detects_a_tampered_remote_archive(proj):
    exp = make_exp(proj, "v", {"a.txt": "x" * 5000}, when=T0)
    ok("push", exp.name)
    assert "remote" in ok("verify", "--remote", exp.name).stderr
    z = proj.zip_of(exp.name)
    data = bytearray(z.read_bytes())
    data[len(data) // 3] ^= 0xFF
    z.write_bytes(bytes(data))
    r = run_cli("verify", "--remote", exp.name)
    assert r.exit_code == 1
    assert_one_error_line(r.stderr, "remote", "hash")
    # The local copy is still fine.
    ok("verify", "--local", exp.name)


# -- names --------------------------------------------------------------------------------
def test_prefix_resolution(proj):
    a = make_exp(proj, "a", when=T0)  # aapiyl_..._a
    make_exp(proj, "b", when=T0.replace(second=50))  # aapiyl as well
    c = make_exp(proj, "c", when=T0.replace(minute=44))  # aapiym
    assert json.loads(ok("show", "--json", "aapiym").stdout)["name"] == c.name
    assert json.loads(ok("show", "--json", a.name[:22]).stdout)["name"] == a.name
    assert json.loads(ok("show", "--json", f"results/{a.name}/").stdout)["name"] == a.name
    fails("show", "aapiyl", needles=["aapiyl", "matches 2"])
    fails("show", "zzzzzz", needles=["zzzzzz"])


def test_prefix_resolution_includes_remote_only_experiments(proj):
    exp = make_exp(proj, "far", when=T0)
    ok("push", exp.name)
    shutil.rmtree(exp)
    assert json.loads(ok("show", "--json", "aap").stdout)["name"] == exp.name
    ok("pull", "aap")
    assert exp.is_dir()


# -- help ---------------------------------------------------------------------------------
def _commands(group: click.Group, prefix=()):
    for name, cmd in group.commands.items():
        yield (*prefix, name), cmd
        if isinstance(cmd, click.Group):
            yield from _commands(cmd, (*prefix, name))


def test_every_command_has_help_with_an_example():
    names = []
    for path, cmd in _commands(cli):
        names.append(" ".join(path))
        assert cmd.help, path
        r = run_cli(*path, "--help")
        assert r.exit_code == 0, path
        assert "Example:" in r.stdout, path
        assert r.stdout.strip().splitlines()[0].startswith("Usage:")
    assert {"init", "list", "push", "pull", "add", "rm", "comment", "show", "verify",
            "completion"} <= set(names)
    assert "Example:" in run_cli("--help").stdout


def test_completion_script(proj):
    r = ok("completion", "bash")
    assert "_RESUTIL_COMPLETE" in r.stdout


def test_archives_are_plain_zips_a_human_can_open(proj):
    exp = make_exp(proj, "h", {"r.txt": "hello\n"}, when=T0)
    ok("push", exp.name)
    with zipfile.ZipFile(proj.zip_of(exp.name)) as zf:
        assert zf.read("r.txt") == b"hello\n"


def test_brackets_in_comments_and_arguments_are_shown_literally(proj):
    """Names, arguments and error messages are text, not terminal markup."""
    exp = make_exp(proj, "opt[adam] lr[0.1]", when=T0)
    assert exp.name.endswith("_opt[adam] lr[0.1]")
    meta = read_exp(exp)
    meta["args"] = "train.py --opt [adam] --tag [/x]"
    (exp / "resutil-exp.yaml").write_text(yaml.safe_dump(meta))
    assert exp.name in ok("list").stdout
    assert exp.name in ok("push", exp.name).stderr
    out = ok("show", exp.name).stdout
    assert exp.name in out and "--opt [adam] --tag [/x]" in out
    assert exp.name in ok("verify", exp.name).stderr
    r = run_cli("show", "nothing[bold]here")
    assert r.exit_code == 1
    assert_one_error_line(r.stderr, "nothing[bold]here")


def test_comment_of_a_remote_only_experiment_then_pull(proj):
    exp = make_exp(proj, "first", when=T0)
    ok("push", exp.name)
    shutil.rmtree(exp)
    ok("comment", "aapiyl", "second")
    new = exp.name[:22] + "_second"
    assert proj.remote_zips() == [f"{new}.zip"]
    info = json.loads(ok("show", "--json", "aapiyl").stdout)
    assert (info["name"], info["comment"], info["where"]) == (new, "second", "remote only")
    ok("pull", "aapiyl")
    assert local_dirs(proj) == [new]
    info = json.loads(ok("show", "--json", "aapiyl").stdout)
    assert (info["name"], info["comment"]) == (new, "second")
    ok("comment", "aapiyl", "")  # the comment can be removed altogether
    assert local_dirs(proj) == [exp.name[:22]]
    assert json.loads(ok("show", "--json", "aapiyl").stdout)["comment"] == ""
    assert proj.remote_zips() == [f"{exp.name[:22]}.zip"]


def local_dirs(proj) -> list[str]:
    return [d.name for d in proj.exp_dirs()]
