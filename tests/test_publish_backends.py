"""The publication promises that depend on the storage, on every backend: identity claims
and moves, up-to-date re-pushes, and archive/sidecar pairing by version."""

from __future__ import annotations

import json
from datetime import datetime, timedelta

from resutil.remote import SIDECAR_SUFFIX
from resutil.storage import backend_class

from .helpers import assert_one_error_line, make_exp
from .test_backends_e2e import cli_in, init_project

T0 = datetime(2024, 7, 6, 6, 43, 39)


def _ok(proj, *args):
    r = cli_in(proj, *args)
    assert r.exit_code == 0, (args, r.stdout, r.stderr)
    return r


def test_runs_of_one_identity_from_two_clones_both_stay(storage_settings, tmp_path):
    a = init_project(tmp_path / "a", storage_settings)
    b = init_project(tmp_path / "b", storage_settings)
    mine = make_exp(a, "same", {"who.txt": "a"}, when=T0, host="node-a")
    theirs = make_exp(b, "same", {"who.txt": "b"}, when=T0, host="node-b")
    down = make_exp(b, "down", {"d.txt": "d"}, deps=[theirs.name], when=T0 + timedelta(minutes=3),
                    host="node-b")
    _ok(a, "push", mine.name)
    r = _ok(b, "push", down.name)
    assert "moved to" in r.stderr
    moved = next(d for d in b.exp_dirs() if d.name.endswith("_same"))
    assert moved.name[:22] != mine.name[:22]

    c = init_project(tmp_path / "c", storage_settings)
    names = {row["name"] for row in json.loads(cli_in(c, "list", "--json").stdout)}
    assert names == {mine.name, moved.name, down.name}
    _ok(c, "pull", down.name)
    assert (c.results / moved.name / "who.txt").read_text() == "b"
    _ok(c, "pull", mine.name)
    assert (c.results / mine.name / "who.txt").read_text() == "a"
    assert "Up to date" in _ok(a, "push", mine.name).stderr


def test_re_push_up_to_date_and_a_killed_push_never_pairs(storage_settings, tmp_path):
    a = init_project(tmp_path / "a", storage_settings)
    storage = backend_class(storage_settings.storage_type)(storage_settings)
    exp = make_exp(a, "k", {"a.txt": "v1" * 100}, when=T0)
    _ok(a, "push", exp.name)
    before = storage.stat("Proj", f"{exp.name}.zip")
    assert before.version
    assert "Up to date" in _ok(a, "push", exp.name).stderr
    assert storage.stat("Proj", f"{exp.name}.zip").version == before.version

    b = init_project(tmp_path / "b", storage_settings)
    _ok(b, "verify", "--remote", exp.name)  # b caches the sidecar
    side_name = exp.name[:22] + SIDECAR_SUFFIX
    old_sidecar = storage.read_bytes("Proj.resutil", side_name)
    for content in ("v2", "v3"):  # same sizes, in quick succession
        (exp / "a.txt").write_text(content * 100)
        _ok(a, "push", "--force", exp.name)
    _ok(b, "verify", "--remote", exp.name)
    _ok(b, "pull", exp.name)
    assert (b.results / exp.name / "a.txt").read_text() == "v3" * 100

    # A push killed after its archive and before its sidecar: the old sidecar is not
    # trusted for the new archive.
    (exp / "a.txt").write_text("v4" * 100)
    _ok(a, "push", "--force", exp.name)
    storage.write_bytes("Proj.resutil", side_name, old_sidecar)
    c = init_project(tmp_path / "c", storage_settings)
    _ok(c, "pull", exp.name)
    assert (c.results / exp.name / "a.txt").read_text() == "v4" * 100
    r = cli_in(c, "verify", "--remote", exp.name)
    assert r.exit_code == 1
    assert_one_error_line(r.stderr, "push it again")
