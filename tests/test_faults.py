"""Faults a user will meet: each is one ``Error:`` line, exit code 1, no traceback, and
leaves no half-written folder locally or object on the remote."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import zipfile
from datetime import datetime
from pathlib import Path

import pytest

from .helpers import (
    cli_fails as fails,
    cli_ok as ok,
    REPO,
    assert_one_error_line,
    make_exp,
    seal,
    read_exp,
    readonly_mount,
    run_cli,
    run_script,
    small_tmpfs,
    tree,
    write_script,
)

T0 = datetime(2024, 7, 6, 6, 43, 39)


def local_names(proj) -> set[str]:
    return {d.name for d in proj.exp_dirs()}


def wait_for(predicate, what: str, proc: subprocess.Popen | None = None, limit: float = 60):
    end = time.monotonic() + limit
    while not predicate():
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"process ended before {what}: {proc.communicate()}")
        if time.monotonic() > end:
            raise AssertionError(f"gave up waiting for {what}")
        time.sleep(0.001)


# -- names ----------------------------------------------------------------------------------
def test_unknown_and_ambiguous_experiments(proj):
    make_exp(proj, "a", when=T0)
    make_exp(proj, "b", when=T0.replace(second=59))
    for cmd in (["show"], ["pull"], ["push"], ["rm"], ["verify"], ["comment"]):
        args = [*cmd, "zzzz"] + (["new"] if cmd == ["comment"] else [])
        fails(*args, needles=["zzzz"])
        args = [*cmd, "aapiyl"] + (["new"] if cmd == ["comment"] else [])
        fails(*args, needles=["aapiyl", "matches 2"])
    assert len(proj.exp_dirs()) == 2 and proj.remote_zips() == []


# -- the remote is unreachable or read-only ------------------------------------------------------
def test_remote_folder_missing(proj):
    exp = make_exp(proj, "x", when=T0)
    shutil.rmtree(proj.remote)
    for args in (["list"], ["push", exp.name], ["pull", "-A"], ["show", "zzz"]):
        fails(*args, needles=["does not exist or is not mounted"])
    assert not proj.remote.exists()  # nothing was created in place of the missing mount
    # Working locally still works.
    assert json.loads(ok("list", "--local", "--json").stdout)[0]["name"] == exp.name


def test_run_with_the_remote_missing_finishes_locally(proj):
    shutil.rmtree(proj.remote)
    write_script(proj, """
        import resutil

        @resutil.main()
        def main(params):
            (params.ex_dir / "r.txt").write_text("42")

        main()
    """)
    r = run_script(proj)
    assert r.returncode == 0, r.stderr
    assert "push failed" in r.stderr and "resutil push" in r.stderr
    assert read_exp(proj.only_exp())["status"] == "finished"
    assert not proj.remote.exists()


def test_remote_folder_read_only(proj):
    exp = make_exp(proj, "x", when=T0)
    proj.archive_dir.mkdir(exist_ok=True)
    proj.sidecar_dir.mkdir(exist_ok=True)
    with readonly_mount(proj.remote):
        r = run_cli("push", exp.name)
        assert tree(proj.remote) == {proj.name, f"{proj.name}.resutil"}
    assert r.exit_code == 1
    assert_one_error_line(r.stderr, exp.name, "read-only")
    assert read_exp(exp)["status"] == "finished"


# -- interrupted transfers --------------------------------------------------------------------
def _big_exp(proj, mb: int) -> Path:
    block = os.urandom(1 << 20)
    exp = make_exp(proj, "big", {"small.txt": "s\n"}, when=T0)
    with open(exp / "big.bin", "wb") as f:
        for i in range(mb):
            f.write(block[i:] + block[:i])
    seal(exp)
    return exp


def _age(paths, seconds: float = 7200) -> None:
    """Make leftovers look as if a process died ``seconds`` ago."""
    t = time.time() - seconds
    for top in paths:
        for p in [top, *(top.rglob("*") if top.is_dir() else [])]:
            os.utime(p, (t, t), follow_symlinks=False)


def _resutil(*args: str, **kw) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.Popen([sys.executable, "-m", "resutil.cli", *args], env=env,
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, **kw)


def _kill_midway(proc: subprocess.Popen, started, finished) -> bool:
    """SIGKILL ``proc`` once ``started()`` and before ``finished()``; False if it won the race."""
    try:
        wait_for(lambda: started() or finished() or proc.poll() is not None, "the transfer", None)
        proc.send_signal(signal.SIGSTOP)
        midway = started() and not finished()
        proc.kill()
        proc.wait(timeout=30)
        return midway
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate()


def test_push_killed_midway_leaves_nothing_listed_and_the_next_push_completes(proj):
    for mb in (64, 256):
        exp = _big_exp(proj, mb)
        zpath = proj.zip_of(exp.name)

        def started():
            return proj.archive_dir.is_dir() and any(
                p.name.startswith(".") and p.stat().st_size > 0 for p in proj.archive_dir.iterdir()
            )

        p = _resutil("push", exp.name, cwd=proj.root)
        if _kill_midway(p, started, zpath.exists):
            break
        shutil.rmtree(exp)  # the push won the race: try again with more data
        if zpath.exists():
            zpath.unlink()
        for p in proj.sidecar_dir.glob(exp.name[:22] + ".*"):  # its sidecar and claim
            p.unlink()
    else:
        pytest.skip("could not catch a push midway")

    assert not zpath.exists()
    rows = json.loads(ok("list", "--json").stdout)
    assert [(r["name"], r["remote"]) for r in rows] == [(exp.name, False)]
    assert not any(".part" in r["name"] for r in rows)
    assert "part" not in ok("list").stdout
    assert list(proj.sidecar_dir.glob("*.json")) == []

    # The killed push's part file is hidden; once stale, the next push removes it.
    parts = [p for p in proj.archive_dir.iterdir() if p.name.startswith(".")]
    assert parts and all(".part" in p.name for p in parts)
    _age(parts)
    ok("push", exp.name)
    assert zpath.exists()
    assert "ok" in ok("verify", "--remote", exp.name).stderr
    assert proj.remote_zips() == [zpath.name]


def test_pull_killed_midway_leaves_nothing_and_the_next_pull_completes(proj):
    for mb in (64, 256):
        exp = _big_exp(proj, mb)
        ok("push", exp.name)
        shutil.rmtree(exp)
        tmp = proj.results / ".resutil" / "tmp"

        def started():
            return tmp.is_dir() and any(
                f.is_file() and f.stat().st_size > 0 for f in tmp.rglob("*")
            )

        p = _resutil("pull", exp.name, cwd=proj.root)
        if _kill_midway(p, started, exp.exists):
            break
        shutil.rmtree(exp, ignore_errors=True)
        for z in proj.archive_dir.iterdir():
            z.unlink()
    else:
        pytest.skip("could not catch a pull midway")

    assert not exp.exists()
    assert local_names(proj) == set()
    rows = json.loads(ok("list", "--json").stdout)
    assert [(r["name"], r["local"]) for r in rows] == [(exp.name, False)]

    # The killed pull's scratch folder is hidden; once stale, the next pull removes it.
    leftovers = list(tmp.iterdir())
    assert leftovers
    _age(leftovers)
    ok("pull", exp.name)
    assert (exp / "big.bin").stat().st_size >= 64 << 20
    assert "ok" in ok("verify", "--local", exp.name).stderr
    assert list(tmp.iterdir()) == []


# -- bad archives -----------------------------------------------------------------------------
def test_corrupt_archive_is_refused_and_nothing_is_extracted(proj):
    exp = make_exp(proj, "c", {"data.txt": "payload line\n" * 2000, "b.bin": os.urandom(4000)},
                   when=T0)
    ok("push", exp.name)
    shutil.rmtree(exp)
    z = proj.zip_of(exp.name)
    data = bytearray(z.read_bytes())
    for i in range(100, 140):
        data[i] ^= 0x5A
    z.write_bytes(bytes(data))
    r = run_cli("pull", exp.name)
    assert r.exit_code == 1
    line = assert_one_error_line(r.stderr, exp.name)
    assert "hash" in line or "corrupt" in line
    assert local_names(proj) == set()
    assert not list((proj.results / ".resutil" / "tmp").glob("*"))


def test_corrupt_0_1_x_archive_without_sidecar_is_refused(proj):
    name = "aapiyl_20240706T064339_old"
    proj.archive_dir.mkdir(parents=True)
    z = proj.zip_of(name)
    with zipfile.ZipFile(z, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("resutil-exp.yaml", "args: x\ndependency: []\n")
        zf.writestr("data.txt", "some text that deflates well " * 2000)
    data = bytearray(z.read_bytes())
    start = data.index(b"data.txt") + 20  # inside the deflated stream of data.txt
    for i in range(start, start + 30):
        data[i] ^= 0x5A
    z.write_bytes(bytes(data))
    r = run_cli("pull", name)
    assert r.exit_code == 1
    assert_one_error_line(r.stderr, name, "corrupt")
    assert local_names(proj) == set()


@pytest.mark.parametrize("evil", ["../escaped.txt", "sub/../../escaped.txt", "/tmp/escaped-abs.txt",
                                  "link"])
def test_unsafe_archive_is_refused_and_nothing_is_written_outside(proj, evil, tmp_path):
    name = "aapiyl_20240706T064339_evil"
    proj.archive_dir.mkdir(parents=True)
    with zipfile.ZipFile(proj.zip_of(name), "w") as zf:
        zf.writestr("ok.txt", "fine\n")
        if evil == "link":
            info = zipfile.ZipInfo("link")
            info.external_attr = (0o120777 << 16)
            zf.writestr(info, "/etc")
        else:
            zf.writestr(zipfile.ZipInfo(evil), "escaped\n")
    before = tree(tmp_path)
    r = run_cli("pull", name)
    assert r.exit_code == 1
    assert_one_error_line(r.stderr, name)
    assert local_names(proj) == set()
    assert not (proj.root / "escaped.txt").exists() and not (proj.results / "escaped.txt").exists()
    assert not Path("/tmp/escaped-abs.txt").exists()
    new = {p for p in tree(tmp_path) - before if not p.startswith("proj/results/.resutil")}
    assert new == set()
    assert not list((proj.results / ".resutil" / "tmp").glob("*"))


def test_disk_full_during_pull(proj):
    exp = make_exp(proj, "big", {"a.bin": os.urandom(3 << 20)}, when=T0)
    ok("push", exp.name)
    shutil.rmtree(proj.results)
    with small_tmpfs(proj.results, "1m"):
        r = run_cli("pull", exp.name)
        left = tree(proj.results)
    assert r.exit_code == 1
    assert_one_error_line(r.stderr, "no space left", exp.name)
    assert not any(p.startswith(exp.name[:22]) for p in left)
    assert not [p for p in left if p.startswith(".resutil/tmp/")]


# -- import weight ------------------------------------------------------------------------------
def test_import_resutil_loads_no_cloud_sdk():
    code = (
        "import sys, resutil, resutil.cli, resutil.decorator, resutil.sync\n"
        "bad = [m for m in sys.modules if m.startswith(('google.', 'box_sdk_gen', 'boxsdk', "
        "'pydrive2', 'googleapiclient')) or m == 'google']\n"
        "print(','.join(bad))\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                       env={**os.environ, "PYTHONPATH": str(REPO)})
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == ""


def test_archive_member_this_file_system_cannot_hold(proj):
    name = "aapiyl_20240706T064339_long"
    proj.archive_dir.mkdir(parents=True)
    with zipfile.ZipFile(proj.zip_of(name), "w") as zf:
        zf.writestr("ok.txt", "fine\n")
        zf.writestr("n" * 300 + ".txt", "too long a name\n")
    r = run_cli("pull", name)
    assert r.exit_code == 1
    assert_one_error_line(r.stderr, name, "too long", "nothing was kept")
    assert local_names(proj) == set()
    assert not list((proj.results / ".resutil" / "tmp").glob("*"))
