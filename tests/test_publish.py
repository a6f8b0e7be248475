"""Publication as a team breaks it: two clones, the same second, re-pushes, kills, races.

Every result, once made, is never lost, never mixed with another run's, never silently
replaced (issue "Trust I").
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import zipfile
from datetime import datetime, timedelta

import pytest

from resutil.liveness import Owner, this_host
from resutil.metadata import EXP_FILE, hash_file, read_meta, write_meta
from resutil.naming import make_name, new_run_id

from .helpers import (
    assert_one_error_line,
    big_file,
    chdir,
    cli_ok as ok,
    make_clone,
    make_exp,
    meta_01x,
    popen_cli,
    popen_script,
    put_zip_01x,
    read_exp,
    read_exp_in_zip,
    run_cli,
    run_script,
    seal,
    write_script,
)

T0 = datetime(2024, 7, 6, 6, 43, 39)

WRITES = """
    import os, resutil

    @resutil.main()
    def main(params):
        (params.ex_dir / "who.txt").write_text(os.environ["WHO"])

    if __name__ == "__main__":
        main()
"""


def _said(r) -> str:
    return r.stdout + r.stderr


def _sidecar(proj, name: str) -> dict:
    return json.loads(proj.sidecar(name).read_text())


# -- identity ---------------------------------------------------------------------------------
def test_a_run_clashing_with_another_runs_identity_moves_and_both_are_kept(proj, tmp_path):
    """Two clones' runs of the same second: the second push moves its run (and the local
    experiment built on it) to a free identity; neither run is lost; lineage holds."""
    mine = make_exp(proj, "same", {"who.txt": "node1"}, when=T0, host="node1")
    ok("push", mine.name)

    node2 = make_clone(proj, tmp_path / "node2")
    with chdir(node2.root):
        theirs = make_exp(node2, "same", {"who.txt": "node2"}, when=T0, host="node2")
        down = make_exp(node2, "down", {"d.txt": "d"}, deps=[theirs.name],
                        when=T0 + timedelta(minutes=5), host="node2")
        r = ok("push", down.name)
        assert "moved to" in _said(r)
        moved = node2.exp("same")
        assert moved.name[:22] != mine.name[:22] and not theirs.exists()
        assert read_exp(moved)["name"] == moved.name
        assert read_exp(down)["dependency"] == [moved.name]  # the downstream followed

    assert proj.remote_zips() == sorted(f"{n}.zip" for n in (mine.name, moved.name, down.name))
    assert read_exp_in_zip(proj.zip_of(down.name))["dependency"] == [moved.name]
    with zipfile.ZipFile(proj.zip_of(mine.name)) as zf:
        assert zf.read("who.txt") == b"node1"  # the first run is untouched

    # A third clone pulls each run with its own files, and the lineage resolves.
    node3 = make_clone(proj, tmp_path / "node3")
    with chdir(node3.root):
        ok("pull", down.name)  # brings its upstream: the moved run
        assert (node3.results / moved.name / "who.txt").read_text() == "node2"
        ok("pull", mine.name)
        assert (node3.results / mine.name / "who.txt").read_text() == "node1"
        assert moved.name in ok("lineage", down.name).stdout

    # The first clone still has its own run, pushed and up to date.
    r = ok("push", "-A")
    assert "Nothing to push" in _said(r)
    assert "Up to date" in _said(ok("push", mine.name))


def test_comment_renames_only_its_own_run(proj, tmp_path):
    mine = make_exp(proj, "a", when=T0, host="node1")
    ok("push", mine.name)
    node2 = make_clone(proj, tmp_path / "node2")
    with chdir(node2.root):
        theirs = make_exp(node2, "b", when=T0, host="node2")  # unpushed, same identity
        ok("comment", theirs.name, "relabelled")
        assert [d.name for d in node2.exp_dirs()] == [theirs.name[:22] + "_relabelled"]
    assert proj.remote_zips() == [f"{mine.name}.zip"]


def test_a_new_run_never_takes_an_identity_another_run_claimed(proj):
    """Online, a run claims its identity when it starts; claims of other runs (another
    clone or cluster node starting in the same seconds) send it to a free one."""
    start = datetime.now().replace(microsecond=0)
    proj.sidecar_dir.mkdir(parents=True, exist_ok=True)
    taken = set()
    for s in range(-2, 12):
        ident = make_name(start + timedelta(seconds=s)).identity
        taken.add(ident)
        (proj.sidecar_dir / f"{ident}.claim").write_text(json.dumps({"run_id": new_run_id()}))
    write_script(proj, WRITES)
    r = run_script(proj, env={"WHO": "me", "RESUTIL_COMMENT": "c"})
    assert r.returncode == 0, r.stderr
    exp = proj.only_exp()
    assert exp.name[:22] not in taken
    claim = json.loads((proj.sidecar_dir / f"{exp.name[:22]}.claim").read_text())
    assert claim["run_id"] == read_exp(exp)["run_id"] == _sidecar(proj, exp.name)["run_id"]
    assert proj.remote_zips() == [f"{exp.name}.zip"]


@pytest.mark.slow
def test_two_clones_starting_runs_at_once_keep_every_run(proj, tmp_path):
    """Real processes, two clones, started together: every run is on the remote under its
    own identity, with its own files."""
    node2 = make_clone(proj, tmp_path / "node2")
    procs = []
    for clone in (proj, node2):
        write_script(clone, WRITES)
    for i in range(2):
        for clone, who in ((proj, "one"), (node2, "two")):
            procs.append(popen_script(clone, env={"WHO": f"{who}-{i}", "RESUTIL_COMMENT": "x"},
                                      stdout=subprocess.DEVNULL, stderr=subprocess.PIPE))
    for p in procs:
        _, err = p.communicate(timeout=120)
        assert p.returncode == 0, err
    zips = proj.remote_zips()
    assert len(zips) == 4 and len({z[:22] for z in zips}) == 4
    runs = set()
    whos = set()
    for z in zips:
        with zipfile.ZipFile(proj.archive_dir / z) as zf:
            whos.add(zf.read("who.txt").decode())
            runs.add(read_exp_in_zip(proj.archive_dir / z)["run_id"])
    assert whos == {"one-0", "one-1", "two-0", "two-1"} and len(runs) == 4


# -- re-push ----------------------------------------------------------------------------------
def test_an_unchanged_experiment_is_up_to_date_and_transfers_nothing(proj):
    exp = make_exp(proj, "u", {"a.txt": "x" * 1000}, when=T0)
    ok("push", exp.name)
    before = os.stat(proj.zip_of(exp.name))
    side_before = proj.sidecar(exp.name).stat()
    r = ok("push", exp.name)
    assert "Up to date" in _said(r) and "Pushed" not in _said(r)
    after = os.stat(proj.zip_of(exp.name))
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)
    assert proj.sidecar(exp.name).stat().st_mtime_ns == side_before.st_mtime_ns


def test_a_changed_finished_experiment_is_refused_unless_forced(proj, tmp_path):
    exp = make_exp(proj, "c", {"a.txt": "first", "b.txt": "same"}, when=T0)
    ok("push", exp.name)
    good = proj.zip_of(exp.name).read_bytes()
    (exp / "a.txt").write_text("edited after the run")
    r = run_cli("push", exp.name)
    assert r.exit_code == 1
    assert_one_error_line(r.stderr, "changed since it was finished", "a.txt", "--force")
    assert proj.zip_of(exp.name).read_bytes() == good  # the remote copy is untouched
    r = run_cli("push", "-A")
    assert r.exit_code == 1 and "a.txt" in r.stderr
    assert proj.zip_of(exp.name).read_bytes() == good
    r = run_cli("verify", "--local", exp.name)
    assert r.exit_code == 1 and "changed: a.txt" in r.stderr

    ok("push", "--force", exp.name)
    with zipfile.ZipFile(proj.zip_of(exp.name)) as zf:
        assert zf.read("a.txt") == b"edited after the run"
    ok("verify", exp.name)  # local and remote agree again, with a new manifest
    node2 = make_clone(proj, tmp_path / "node2")
    with chdir(node2.root):
        ok("pull", exp.name)
        assert (node2.results / exp.name / "a.txt").read_text() == "edited after the run"


def test_two_re_pushes_in_one_second_never_serve_a_stale_hash(proj, tmp_path):
    """Another clone caches sidecars; a re-push of the same size in the same second must not
    make it refuse the new, good archive."""
    exp = make_exp(proj, "r", {"a.txt": "AAAA"}, when=T0)
    ok("push", exp.name)
    node2 = make_clone(proj, tmp_path / "node2")
    with chdir(node2.root):
        ok("verify", "--remote", exp.name)  # caches the sidecar
    for content in ("BBBB", "CCCC"):  # same sizes, well within one second
        (exp / "a.txt").write_text(content)
        ok("push", "--force", exp.name)
    with chdir(node2.root):
        ok("verify", "--remote", exp.name)
        ok("pull", exp.name)
        assert (node2.results / exp.name / "a.txt").read_text() == "CCCC"


def test_a_push_killed_between_archive_and_sidecar_never_pairs_them(proj, tmp_path):
    """The window a kill -9 can hit in a re-push: the new archive is in place, the sidecar
    is still the old push's. Readers must not trust the old facts for the new archive."""
    exp = make_exp(proj, "k", {"a.txt": "v1" * 100}, when=T0)
    ok("push", exp.name)
    old_sidecar = proj.sidecar(exp.name).read_bytes()
    (exp / "a.txt").write_text("v2" * 100)  # same size
    ok("push", "--force", exp.name)
    proj.sidecar(exp.name).write_bytes(old_sidecar)  # as if killed

    node2 = make_clone(proj, tmp_path / "node2")
    with chdir(node2.root):
        rows = json.loads(ok("list", "--json").stdout)
        assert [(r["name"], r["remote"]) for r in rows] == [(exp.name, True)]
        ok("pull", exp.name)  # checked by its CRCs, not by the old hash
        assert (node2.results / exp.name / "a.txt").read_text() == "v2" * 100
        r = run_cli("verify", "--remote", exp.name)
        assert r.exit_code == 1
        assert_one_error_line(r.stderr, "push it again")
    ok("push", exp.name)  # the next push repairs the record
    with chdir(node2.root):
        ok("verify", "--remote", exp.name)


@pytest.mark.slow
def test_kill_9_during_a_re_push_leaves_a_pullable_copy(proj, tmp_path):
    """A real kill -9 at many moments of a forced re-push: whatever the moment, the remote
    holds a copy that pulls whole (the old one or the new one), and list agrees."""
    exp = make_exp(proj, "k9", {"small.txt": "s"}, when=T0)
    big_file(exp / "big.bin", 48)
    seal(exp)
    ok("push", exp.name)
    node2 = make_clone(proj, tmp_path / "node2")
    for delay in (0.05, 0.15, 0.3, 0.5, 0.8):
        (exp / "small.txt").write_text(f"after {delay}")
        p = popen_cli(proj.root, "push", "--force", exp.name, stdout=subprocess.DEVNULL,
                      stderr=subprocess.DEVNULL)
        time.sleep(delay)
        p.send_signal(signal.SIGKILL)
        p.wait()
        with chdir(node2.root):
            shutil.rmtree(node2.results / exp.name, ignore_errors=True)
            rows = json.loads(ok("list", "--json").stdout)
            assert [(r["name"], r["remote"]) for r in rows] == [(exp.name, True)]
            ok("pull", exp.name)
            got = (node2.results / exp.name / "small.txt").read_text()
            assert got == "s" or got.startswith("after")
        seal(exp)  # the local copy's new state is the one the next round publishes
        ok("push", "--force", exp.name)


@pytest.mark.slow
def test_concurrent_pushes_of_one_run_never_leave_a_mixed_pair(proj, tmp_path):
    """Two clones holding the same run push different contents at once: afterwards a
    reader either finds archive and sidecar of one push, or knows they differ; never a
    pull that trusts one push's hash for the other's archive."""
    exp = make_exp(proj, "race", {"who.txt": "start"}, when=T0)
    ok("push", exp.name)
    node2 = make_clone(proj, tmp_path / "node2")
    with chdir(node2.root):
        ok("pull", exp.name)
    for round_ in range(4):
        procs = []
        for clone, who in ((proj, "one"), (node2, "two")):
            folder = clone.results / exp.name
            (folder / "who.txt").write_text(f"{who}-{round_}" * 5000)
            seal(folder)
            procs.append(popen_cli(clone.root, "push", "--force", exp.name,
                                   stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True))
        codes = [(p.wait(timeout=60), p.stderr.read()) for p in procs]
        side = _sidecar(proj, exp.name)
        zpath = proj.zip_of(exp.name)
        paired = side["archive"]["hash"] == hash_file(zpath)
        if not paired:  # a push that lost the race must have said so
            assert any(code != 0 and "at the same time" in err for code, err in codes), codes
        node3 = make_clone(proj, tmp_path / f"node3-{round_}")
        with chdir(node3.root):
            ok("pull", exp.name)
            got = (node3.results / exp.name / "who.txt").read_text()
            assert got in (f"one-{round_}" * 5000, f"two-{round_}" * 5000)


# -- leftovers --------------------------------------------------------------------------------
def test_a_killed_push_part_file_is_removed_by_the_next_push_at_once(proj):
    """No waiting for an age limit: the part file names its writer, who is dead."""
    exp = make_exp(proj, "p", {"a.txt": "a"}, when=T0)
    proj.archive_dir.mkdir(parents=True)
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True).stdout.strip()
    part = proj.archive_dir / f".{exp.name}.zip.part-{this_host()}.{dead}.12345-abcdef12"
    part.write_bytes(b"x" * 1000)
    live = proj.archive_dir / f".other.zip.part-{this_host()}.{os.getpid()}.0-abcdef12"
    live.write_bytes(b"being written")
    ok("push", exp.name)
    assert not part.exists()
    assert live.exists()  # a live writer's part file stays


# -- untrusted sidecars ---------------------------------------------------------------------
@pytest.mark.parametrize("bad", [
    "[1, 2]",
    '{"archive": [], "meta": 3}',
    '{"archive": {"name": 5, "size": 1}, "meta": {}}',
    '{"archive": {"name": "NAME.zip", "size": "big"}, "meta": {}}',
    '{"archive": {"name": "NAME.zip", "size": 1, "described": [[1, "x"]]}, "meta": {}}',
    '{"archive": {"name": "NAME.zip", "size": 1}, "meta": {"git": "a string"}}',
    "not json at all",
    b"\xff\xfe\x00binary",
])
def test_a_sidecar_of_the_wrong_shape_is_ignored_and_the_archive_read(proj, tmp_path, bad):
    up = make_exp(proj, "up", {"u.txt": "upstream"}, when=T0)
    down = make_exp(proj, "down", {"d.txt": "downstream"}, deps=[up.name], when=T0 + timedelta(minutes=1))
    ok("push", down.name)
    side = proj.sidecar(up.name)
    if isinstance(bad, str):
        side.write_text(bad.replace("NAME", up.name))
    else:
        side.write_bytes(bad)
    node2 = make_clone(proj, tmp_path / "node2")
    with chdir(node2.root):
        listed = ok("list", "--json")
        rows = json.loads(listed.stdout)
        assert sorted(r["name"] for r in rows) == sorted([up.name, down.name])
        r = ok("pull", down.name)  # brings the upstream, checked by its CRCs
        # (reported once per process: here by list --json, which reads remote metadata)
        assert (listed.stderr + r.stderr).count("sidecar") == 1 and "Traceback" not in r.stderr
        assert (node2.results / up.name / "u.txt").read_text() == "upstream"
        shutil.rmtree(node2.results / up.name)
        graph = json.loads(ok("graph", "--format", "json").stdout)
        assert up.name in json.dumps(graph)
        assert json.loads(ok("show", "--json", up.name).stdout)["where"] == "remote only"
        r = run_cli("rm", "-r", up.name)  # still protected by its downstream
        assert r.exit_code == 1 and "upstream of" in r.stderr


def test_verbose_shows_what_resutil_did(proj):
    exp = make_exp(proj, "v", when=T0)
    r = ok("-v", "push", exp.name)
    assert "claimed" in r.stderr and "stored" in r.stderr
    r = ok("push", exp.name)
    assert "claimed" not in r.stderr and "resutil." not in r.stderr
    os.environ["RESUTIL_LOG"] = "debug"
    try:
        r = ok("push", exp.name)
    finally:
        del os.environ["RESUTIL_LOG"]
    assert "list" in r.stderr and "up to date" in r.stderr


def test_a_new_run_never_replaces_a_01x_archive_of_its_identity(proj):
    """0.1.x archives carry no run id, no start time, no host: a run made by resutil (which
    has a run id from its first moment) is never taken for one of them."""
    old = "aapiyl_20240706T064339_old"
    put_zip_01x(proj, old, {"data.txt": "from 0.1.x\n", EXP_FILE: meta_01x(old, args="old.py")})
    mine = make_exp(proj, "new", {"data.txt": "mine\n"}, when=T0)
    meta = read_meta(mine)
    meta.run_id, meta.process = new_run_id(), Owner.current()
    write_meta(mine, meta)
    r = ok("push", mine.name)
    assert "moved to" in _said(r)
    with zipfile.ZipFile(proj.zip_of(old)) as zf:
        assert zf.read("data.txt") == b"from 0.1.x\n"
    moved = proj.only_exp()
    assert moved.name[:22] != old[:22] and f"{moved.name}.zip" in proj.remote_zips()


def test_pull_refuses_another_run_under_a_local_identity_until_it_moves(proj, tmp_path):
    mine = make_exp(proj, "a", {"who.txt": "one"}, when=T0, host="node1")
    ok("push", mine.name)
    node2 = make_clone(proj, tmp_path / "node2")
    with chdir(node2.root):
        theirs = make_exp(node2, "b", {"who.txt": "two"}, when=T0, host="node2")
        meta = read_meta(theirs)
        meta.run_id = new_run_id()
        write_meta(theirs, meta)
        r = ok("pull", mine.name)
        assert "different run holds this identity here" in _said(r)
        assert (theirs / "who.txt").read_text() == "two"  # untouched
        assert "moved to" in _said(ok("push", theirs.name))
        ok("pull", mine.name)
        assert (node2.results / mine.name / "who.txt").read_text() == "one"
        assert len(node2.exp_dirs()) == 2
