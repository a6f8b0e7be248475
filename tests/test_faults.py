"""Faults a user will meet: each is one ``Error:`` line, exit code 1, no traceback, and
leaves no half-written folder locally or object on the remote."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import zipfile
from datetime import datetime
from pathlib import Path

import pytest

from resutil.metadata import EXP_FILE, read_meta, write_meta
from resutil.naming import new_run_id

from .helpers import (
    cli_fails as fails,
    cli_ok as ok,
    REPO,
    SDK_MODULES,
    assert_one_error_line,
    assert_one_warning_line,
    big_file,
    fill_disk,
    make_exp,
    meta_01x,
    popen_cli,
    put_zip_01x,
    seal,
    read_exp,
    readonly_mount,
    run_cli,
    run_script,
    small_tmpfs,
    tree,
    wait_for,
    write_script,
)

T0 = datetime(2024, 7, 6, 6, 43, 39)


def local_names(proj) -> set[str]:
    return {d.name for d in proj.exp_dirs()}


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
    for args in (["push", exp.name], ["pull", "-A"], ["show", "zzz"]):
        fails(*args, needles=["does not exist or is not mounted"])
    r = ok("list")  # what is here, and why the remote column is unknown
    assert_one_warning_line(r.stderr, "does not exist or is not mounted", "local experiments only")
    assert r.stdout.splitlines()[1].split() == ["?", "✓", "finished", exp.name]
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
BIG_MIB = 16
DIES_AT = 4 << 20  # well inside the big file, whichever way it is packed or transferred


def _big_exp(proj) -> Path:
    exp = make_exp(proj, "big", {"small.txt": "s\n"}, when=T0)
    big_file(exp / "big.bin", BIG_MIB)
    seal(exp)
    return exp


def _age(paths, seconds: float = 7200) -> None:
    """Make leftovers look as if a process died ``seconds`` ago."""
    t = time.time() - seconds
    for top in paths:
        for p in [top, *(top.rglob("*") if top.is_dir() else [])]:
            os.utime(p, (t, t), follow_symlinks=False)


# The process dies like a SIGKILL (no handler, no finally) the moment it writes a file past
# DIES_AT bytes: the kernel sends SIGXFSZ for a write beyond RLIMIT_FSIZE, and its default
# action ends the process (Python ignores it unless told otherwise). A fixed point midway
# through the transfer, where a kill timed from outside could come too late.
_DIES_MIDWAY = f"""
import resource, runpy, signal, sys
resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
resource.setrlimit(resource.RLIMIT_FSIZE, ({DIES_AT}, {DIES_AT}))
signal.signal(signal.SIGXFSZ, signal.SIG_DFL)
sys.argv = ["resutil", *sys.argv[1:]]
runpy.run_module("resutil", run_name="__main__")
"""


def _dies_midway(proj, *args: str, started) -> None:
    """``resutil ARGS`` killed midway through its transfer; ``started()`` says the transfer
    had begun."""
    p = subprocess.run([sys.executable, "-c", _DIES_MIDWAY, *args], cwd=proj.root,
                       stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=120,
                       env={**os.environ, "PYTHONPATH": str(REPO)})
    assert p.returncode == -signal.SIGXFSZ, (
        f"resutil {' '.join(args)} was to die writing past {DIES_AT} bytes but ended with "
        f"{p.returncode}: {p.stderr[-2000:]}")
    assert started(), f"resutil {' '.join(args)} died before its transfer began"


def test_push_killed_midway_leaves_nothing_listed_and_the_next_push_completes(proj):
    exp = _big_exp(proj)
    zpath = proj.zip_of(exp.name)

    def started():
        return proj.archive_dir.is_dir() and any(
            p.name.startswith(".") and p.stat().st_size > 0 for p in proj.archive_dir.iterdir()
        )

    _dies_midway(proj, "push", exp.name, started=started)

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
    exp = _big_exp(proj)
    big = (exp / "big.bin").read_bytes()
    ok("push", exp.name)
    shutil.rmtree(exp)
    tmp = proj.results / ".resutil" / "tmp"

    def started():
        return tmp.is_dir() and any(f.is_file() and f.stat().st_size > 0 for f in tmp.rglob("*"))

    _dies_midway(proj, "pull", exp.name, started=started)

    assert not exp.exists()
    assert local_names(proj) == set()
    rows = json.loads(ok("list", "--json").stdout)
    assert [(r["name"], r["local"]) for r in rows] == [(exp.name, False)]

    # The killed pull's scratch folder is hidden; once stale, the next pull removes it.
    leftovers = list(tmp.iterdir())
    assert leftovers
    _age(leftovers)
    ok("pull", exp.name)
    assert (exp / "big.bin").read_bytes() == big
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
    z = put_zip_01x(proj, name, {EXP_FILE: meta_01x(name, args="x"),
                                 "data.txt": "some text that deflates well " * 2000})
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
        "import sys, resutil, resutil.cli, resutil.decorator, resutil.storage, resutil.sync\n"
        f"bad = [m for m in sys.modules if m.startswith({SDK_MODULES!r}) or m == 'google']\n"
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


# -- broken local metadata affects only its own experiment ------------------------------------
_BOMB = "a: &a [x, x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"{c}: &{c} [{', '.join(['*' + p] * 10)}]\n" for p, c in zip("abcdef", "bcdefg"))
BROKEN_METADATA = {
    "git-is-a-string": ("args: s.py\ngit: 0123abc\n", "'git'"),
    "binary": (bytes(range(256)) * 4, "UTF-8"),
    "list-at-top-level": ("- args\n- s.py\n", "mapping"),
    "not-yaml": ("args: [unclosed\nstatus: finished\n", "not valid YAML"),
    "args-a-list": ("args: [s.py, --lr, '0.1']\n", "'args'"),
    "dependency-a-mapping": ("dependency: {aapiyl_20240706T064339: 1}\n", "'dependency'"),
    "status-a-number": ("status: 3\n", "'status'"),
    "environment-a-string": ("environment: linux\n", "'environment'"),
    "uncommitted-files-a-number": ("git: {commit_hash: abc, uncommited_files: 5}\n",
                                   "'git.uncommited_files'"),
    "dependency-sources-not-mappings": ("dependency_sources: [1, 2]\n", "'dependency_sources'"),
    "schema-version-text": ("schema_version: two\n", "'schema_version'"),
    "alias-bomb": (_BOMB, "expands"),
    "refers-to-itself": ("extra: &x [*x]\n", "refers to itself"),
    "too-deep": ("extra: " + "[" * 200 + "]" * 200 + "\n", "deeper"),
    "too-large": ("args: '" + "x" * (17 << 20) + "'\n", "larger than"),
    "a-folder": (None, "folder"),
    "a-fifo": ("fifo", "special file"),
}


def _break(exp: Path, content) -> Path:
    meta = exp / EXP_FILE
    meta.unlink()
    if content is None:
        meta.mkdir()
        (meta / "inside.txt").write_text("x\n")
    elif content == "fifo":
        os.mkfifo(meta)  # opening it for reading would block every command
        threading.Thread(target=_unblock_fifo, args=(meta,), daemon=True).start()
    elif isinstance(content, bytes):
        meta.write_bytes(content)
    else:
        meta.write_text(content)
    return meta


STUCK_ON_FIFO: list[Path] = []


def _unblock_fifo(path: Path) -> None:
    """Hang guard, not a timing assertion: a reader stuck opening the FIFO gets EOF and is
    recorded in STUCK_ON_FIFO (the test then fails) instead of hanging the suite."""
    while path.exists():
        time.sleep(5)
        try:
            os.close(os.open(path, os.O_WRONLY | os.O_NONBLOCK))
        except OSError:
            continue  # nobody is blocked on it
        STUCK_ON_FIFO.append(path)


@pytest.mark.parametrize("shape", [pytest.param(k, marks=pytest.mark.slow) if k == "too-large"
                                   else k for k in BROKEN_METADATA])
def test_broken_local_metadata_affects_only_its_experiment(proj, shape):
    content, needle = BROKEN_METADATA[shape]
    up = make_exp(proj, "up", when=T0)
    down = make_exp(proj, "down", when=T0.replace(hour=8), deps=[up.name])
    bad = make_exp(proj, "bad", when=T0.replace(hour=9))
    meta = _break(bad, content)
    names = {up.name, down.name, bad.name}

    # list: every experiment listed, the broken one once, as a warning naming its file
    r = ok("list", "--json")
    assert_one_warning_line(r.stderr, str(meta), needle)
    rows = {row["name"]: row["status"] for row in json.loads(r.stdout)}
    assert rows == {up.name: "finished", down.name: "finished", bad.name: "broken"}
    r = ok("list")
    assert_one_warning_line(r.stderr, str(meta), needle)
    assert all(n in r.stdout for n in names)

    # graph and lineage: the others' lineage is intact
    r = ok("graph", "--format", "json")
    assert_one_warning_line(r.stderr, str(meta), needle)
    data = json.loads(r.stdout)
    assert {n["name"] for n in data["nodes"]} == names
    assert [(e["source"], e["target"]) for e in data["links"]] == [(up.name[:22], down.name[:22])]
    r = ok("lineage", down.name)
    assert_one_warning_line(r.stderr, str(meta))
    assert up.name in r.stdout

    # naming the broken experiment: one error line naming its file
    for args in (["show", bad.name], ["push", bad.name], ["lineage", bad.name],
                 ["verify", bad.name]):
        fails(*args, needles=[str(meta), needle])
    assert proj.remote_zips() == []

    # show of another experiment still works (and says which one it could not read)
    r = ok("show", "--json", up.name)
    assert_one_warning_line(r.stderr, str(meta))
    assert json.loads(r.stdout)["downstream"] == [down.name]

    # push -A: pushes the others, warns once about the broken one
    r = ok("push", "-A")
    assert_one_warning_line(r.stderr, str(meta), needle, "not pushed")
    assert proj.remote_zips() == sorted([f"{up.name}.zip", f"{down.name}.zip"])

    # rm: still refuses to break the others' lineage, removes what it may, and the broken
    # folder itself can be removed (no warning about it then)
    r = run_cli("rm", "--yes", up.name)
    assert r.exit_code == 1 and down.name in r.stderr and "Traceback" not in r.stderr
    r = ok("rm", "-l", down.name)  # the remote keeps it
    assert_one_warning_line(r.stderr, str(meta))
    assert not down.exists() and up.is_dir()
    r = ok("rm", "-l", "--yes", bad.name)  # its only copy
    assert "Warning" not in r.stderr and not bad.exists()
    assert json.loads(ok("list", "--json", "--local").stdout)[0]["name"] == up.name
    assert meta not in STUCK_ON_FIFO


@pytest.mark.parametrize("shape", ["binary", "list-at-top-level", "too-large", "a-folder",
                                   "a-fifo"])
def test_broken_local_metadata_does_not_stop_the_pipeline(proj, shape):
    content, _ = BROKEN_METADATA[shape]
    (proj.root / "resutil-pipeline.yaml").write_text(
        "steps:\n  a:\n    run: python -c 'import sys; open(sys.argv[1] + \"/o.txt\", \"w\")' {out}\n")
    meta = _break(make_exp(proj, "a", when=T0), content)
    r = ok("pipeline", "status")
    assert r.stdout.split()[:2] == ["missing", "a"], r.stdout
    r = ok("pipeline", "run")
    assert "1 ran" in r.stdout
    assert meta not in STUCK_ON_FIFO


def test_broken_upstream_is_left_out_of_a_push_with_a_warning(proj):
    up = make_exp(proj, "up", when=T0)
    down = make_exp(proj, "down", when=T0.replace(hour=8), deps=[up.name])
    meta = _break(up, "git: [1]\n")
    r = ok("push", down.name)
    assert_one_warning_line(r.stderr, str(meta), "'git'", "not pushed")
    assert proj.remote_zips() == [f"{down.name}.zip"]


def test_broken_metadata_in_a_remote_archive_affects_only_its_experiment(proj):
    """An archive without sidecar (pushed by 0.1.x) whose metadata is broken."""
    good = make_exp(proj, "good", when=T0)
    ok("push", good.name)
    shutil.rmtree(good)
    bad = "aapjfj_20240706T094339_bad"
    put_zip_01x(proj, bad, {EXP_FILE: "args: s.py\ngit: not-a-mapping\n", "out.txt": "result\n"})
    r = ok("graph", "--format", "json")
    assert_one_warning_line(r.stderr, bad, "remote", "'git'")
    assert {n["name"] for n in json.loads(r.stdout)["nodes"]} == {good.name, bad}
    rows = json.loads(ok("list", "--json").stdout)
    assert {row["name"] for row in rows} == {good.name, bad}
    r = ok("pull", "-A")
    assert_one_warning_line(r.stderr, bad, "remote", "'git'")
    assert good.is_dir()


@pytest.mark.slow
def test_a_large_manifest_is_not_too_large(proj):
    """The size cap is on the part before the manifest; the manifest has a line per file."""
    exp = make_exp(proj, "many", when=T0)
    meta = exp / EXP_FILE
    text = meta.read_text()
    head, _, _ = text.partition("\nmanifest:\n")
    lines = [f'    "features/shard-{i // 1000:04d}/part-{i:07d}.npy": [1, \'{i:032x}\']'
             for i in range(250_000)]
    meta.write_text(head + "\nmanifest:\n  algorithm: xxh3-128\n  files:\n" + "\n".join(lines) + "\n")
    assert meta.stat().st_size > 17 << 20
    r = ok("list", "--json")
    assert json.loads(r.stdout)[0]["status"] == "finished" and not r.stderr
    r = ok("show", "--json", exp.name)
    assert json.loads(r.stdout)["files"] == 250_000


# -- full disks during a push -----------------------------------------------------------------
@pytest.mark.parametrize("run_id", [True, False], ids=["run-with-id", "folder-without-id"])
def test_local_disk_full_during_push_is_not_blamed_on_the_storage(proj, run_id):
    """With the local backend the archive goes to the storage while the metadata is written
    beside the results (the run id first, for a folder without one; the manifest while
    archiving): a full results disk must be reported as that disk, in one line."""
    shutil.rmtree(proj.results)
    with small_tmpfs(proj.results, "1m"):
        exp = make_exp(proj, "x", {"a.bin": os.urandom(200_000)}, when=T0)
        if run_id:
            meta = read_meta(exp)
            meta.run_id = new_run_id()
            meta.manifest = None  # so the push has a manifest to write (else it writes none)
            write_meta(exp, meta)
        before = read_exp(exp)
        fill_disk(proj.results)
        r = run_cli("push", exp.name)
        line = assert_one_error_line(r.stderr, exp.name, "no space left", str(proj.results))
        assert "on the storage" not in line.replace("not on the storage", "")
        if run_id:  # the manifest was written while archiving, to the storage
            assert "local disk" in line
        assert r.exit_code == 1
        assert proj.remote_zips() == [] and tree(proj.archive_dir) == set()
        assert sorted(p.name for p in exp.iterdir()) == ["a.bin", EXP_FILE]  # no temp file
        assert read_exp(exp) == before
        (proj.results / "filler.bin").unlink()
        ok("push", exp.name)
    assert proj.remote_zips() == [f"{exp.name}.zip"]


def test_storage_full_during_push_is_blamed_on_the_storage(proj):
    exp = make_exp(proj, "x", {"a.bin": os.urandom(3 << 20)}, when=T0)
    with small_tmpfs(proj.remote, "1m"):
        r = run_cli("push", exp.name)
        left = tree(proj.remote)
    assert r.exit_code == 1
    line = assert_one_error_line(r.stderr, exp.name, "no space left on the storage")
    assert "local disk" not in line
    assert not [p for p in left if p.endswith(".zip")]


# -- leftovers of killed pushes and pulls -------------------------------------------------------
def _packers_of(pid: int) -> list[int]:
    """The packer helper processes started by ``pid``."""
    found = []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            stat = (d / "stat").read_bytes()
            cmd = (d / "cmdline").read_bytes()
        except OSError:
            continue
        if int(stat[stat.rfind(b")") + 2:].split()[1]) == pid and b"resutil.archive.packer" in cmd:
            found.append(int(d.name))
    return found


def _running(pid: int) -> bool:
    """Whether ``pid`` is a live process (a zombie waiting for its reaper counts as gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_bytes()
    except OSError:
        return False
    return stat[stat.rfind(b")") + 2:][:1] not in (b"Z", b"X")


def _dead_owner_tag() -> str:
    """The owner tag of a process that has ended."""
    r = subprocess.run([sys.executable, "-c", "from resutil.liveness import Owner; "
                        "print(Owner.current().tag)"], capture_output=True, text=True, check=True,
                       env={**os.environ, "PYTHONPATH": str(REPO)})
    return r.stdout.strip()


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs /proc")
@pytest.mark.parametrize("killed", ["push", "push and its helper"])
def test_a_killed_push_leaves_no_packer_running_and_no_scratch(proj, killed):
    """SIGKILL mid-build: the helper process dies with the push (removing its segment); if
    it was killed too, the next push removes the segment its dead owner left."""
    files = {f"run_{i // 500}/f{i:05d}.bin": os.urandom(1500 + i % 1000) for i in range(6000)}
    exp = make_exp(proj, "many", files, when=T0)
    tmp = proj.results / ".resutil" / "tmp"
    p = popen_cli(proj.root, "push", exp.name, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    helpers: list[int] = []
    try:
        def building() -> bool:
            helpers[:] = _packers_of(p.pid)
            return bool(helpers) and any(tmp.glob(".resutil-segment*"))

        wait_for(building, "the push to start its helper", p)
        p.send_signal(signal.SIGSTOP)
        if killed == "push and its helper":
            for h in helpers:
                os.kill(h, signal.SIGKILL)
        p.kill()
        p.wait(timeout=30)
    finally:
        if p.poll() is None:
            p.kill()
        p.communicate()
    assert not proj.zip_of(exp.name).exists()
    wait_for(lambda: not any(_running(h) for h in helpers), "the helper to end", limit=60)
    if killed == "push":  # it removed its own segment on the way out
        wait_for(lambda: not list(tmp.glob(".resutil-segment*")), "the segment to go", limit=60)
    else:
        assert list(tmp.glob(".resutil-segment*"))
    ok("push", exp.name)  # fresh, not aged: the owner is dead, that is enough
    assert list(tmp.iterdir()) == []
    assert "ok" in ok("verify", "--remote", exp.name).stderr


def test_the_next_command_removes_scratch_whose_owner_is_dead(proj):
    """Scratch names carry their owner's tag: a dead owner's (on this host) goes at once;
    a live one's stays; another host's, or an untagged one, only when old."""
    from resutil.liveness import Owner

    exp = make_exp(proj, "s", when=T0)
    ok("push", exp.name)
    shutil.rmtree(exp)
    tmp = proj.results / ".resutil" / "tmp"
    tmp.mkdir(parents=True)
    dead, mine, other = _dead_owner_tag(), Owner.current().tag, "elsewhere.4242.77"
    gone = [f"pull-{exp.name[:22]}@{dead}@0a1b2c", f".resutil@{dead}@x1y2-{exp.name}.zip",
            f".resutil-segment@{dead}@k3j4", f"rm-{exp.name[:22]}@{dead}@5d6e",
            f"pull-old@{other}@aged", ".resutil-segment-aged01"]
    kept = [f"pull-live@{mine}@0f0f", f".resutil@{mine}@live-x.zip", f"pull-new@{other}@fresh",
            ".resutil-segment-fresh1", f".resutil@{other}@fresh-y.zip"]
    for name in gone + kept:
        if name.startswith((".resutil@", ".resutil-")):
            (tmp / name).write_bytes(b"x" * 1000)
        else:
            (tmp / name).mkdir()
            (tmp / name / "part.bin").write_bytes(b"x" * 1000)
    _age([tmp / n for n in gone if "aged" in n], seconds=2 * 86400)
    ok("pull", exp.name)
    assert sorted(p.name for p in tmp.iterdir()) == sorted(kept)
