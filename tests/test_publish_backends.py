"""The publication promises that depend on the storage, on every backend: identity claims
and moves, up-to-date re-pushes, and archive/sidecar pairing by version."""

from __future__ import annotations

import json
from datetime import datetime, timedelta

import pytest

from resutil.remote import sidecar_name
from resutil.storage import backend_class

from .helpers import cli_fails, cli_in, cli_ok, make_exp, make_project

T0 = datetime(2024, 7, 6, 6, 43, 39)


@pytest.mark.slow
def test_runs_of_one_identity_from_two_clones_both_stay(storage_settings, tmp_path):
    a = make_project(tmp_path / "a", storage_settings)
    b = make_project(tmp_path / "b", storage_settings)
    mine = make_exp(a, "same", {"who.txt": "a"}, when=T0, host="node-a")
    theirs = make_exp(b, "same", {"who.txt": "b"}, when=T0, host="node-b")
    down = make_exp(b, "down", {"d.txt": "d"}, deps=[theirs.name], when=T0 + timedelta(minutes=3),
                    host="node-b")
    cli_ok("push", mine.name, cwd=a.root)
    r = cli_ok("push", down.name, cwd=b.root)
    assert "moved to" in r.stderr
    moved = b.exp("same")
    assert moved.name[:22] != mine.name[:22]

    c = make_project(tmp_path / "c", storage_settings)
    names = {row["name"] for row in json.loads(cli_in(c, "list", "--json").stdout)}
    assert names == {mine.name, moved.name, down.name}
    cli_ok("pull", down.name, cwd=c.root)
    assert (c.results / moved.name / "who.txt").read_text() == "b"
    cli_ok("pull", mine.name, cwd=c.root)
    assert (c.results / mine.name / "who.txt").read_text() == "a"
    assert "Up to date" in cli_ok("push", mine.name, cwd=a.root).stderr


@pytest.mark.slow
def test_re_push_up_to_date_and_a_killed_push_never_pairs(storage_settings, tmp_path):
    a = make_project(tmp_path / "a", storage_settings)
    storage = backend_class(storage_settings.storage_type)(storage_settings)
    exp = make_exp(a, "k", {"a.txt": "v1" * 100}, when=T0)
    cli_ok("push", exp.name, cwd=a.root)
    before = storage.stat("Proj", f"{exp.name}.zip")
    assert before.version
    assert "Up to date" in cli_ok("push", exp.name, cwd=a.root).stderr
    assert storage.stat("Proj", f"{exp.name}.zip").version == before.version

    b = make_project(tmp_path / "b", storage_settings)
    cli_ok("verify", "--remote", exp.name, cwd=b.root)  # b caches the sidecar
    side_name = sidecar_name(exp.name[:22], "finished")
    old_sidecar = storage.read_bytes("Proj.resutil", side_name)
    for content in ("v2", "v3"):  # same sizes, in quick succession
        (exp / "a.txt").write_text(content * 100)
        cli_ok("push", "--force", exp.name, cwd=a.root)
    cli_ok("verify", "--remote", exp.name, cwd=b.root)
    cli_ok("pull", exp.name, cwd=b.root)
    assert (b.results / exp.name / "a.txt").read_text() == "v3" * 100

    # A push killed after its archive and before its sidecar: the old sidecar is not
    # trusted for the new archive.
    (exp / "a.txt").write_text("v4" * 100)
    cli_ok("push", "--force", exp.name, cwd=a.root)
    storage.write_bytes("Proj.resutil", side_name, old_sidecar)
    c = make_project(tmp_path / "c", storage_settings)
    cli_ok("pull", exp.name, cwd=c.root)
    assert (c.results / exp.name / "a.txt").read_text() == "v4" * 100
    cli_fails("verify", "--remote", exp.name, needles=["push it again"], cwd=c.root)
