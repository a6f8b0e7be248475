"""Archives: standard zips anyone can open, sensible compression, and 0.1.x archives
(plain zips with no sidecar) that still list, pull and show their lineage."""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import zipfile
from datetime import datetime
from pathlib import Path

import pytest
import xxhash
import yaml

from resutil.archive import ArchiveInfo, NotStreamable, StreamExtractor, build_archive, packer
from resutil.archive import build as archive  # the module whose ``split`` tests replace
from resutil.errors import ArchiveError

from resutil.metadata import compute_manifest

from .helpers import cli_fails as fails, cli_ok as ok, make_exp, read_exp, seal

T0 = datetime(2024, 7, 6, 6, 43, 39)


def _files() -> dict[str, bytes]:
    rnd = os.urandom(300_000)
    return {
        "metrics.csv": "".join(f"{i},{1 / (i + 1):.6f}\n" for i in range(5000)).encode(),
        "weights.bin": rnd,  # incompressible, no telling suffix
        "plot.png": os.urandom(5000),  # compressed format: stored by suffix
        "big/stream.bin": os.urandom(1 << 20) * 3,  # > 1 MB: the streamed path
        "big/log.txt": b"step ok\n" * 300_000,  # > 1 MB text: streamed and deflated
        "tiny.txt": b"hi",
        "empty.dat": b"",
        "nested/deeper/日本語 name.txt": "unicode path ✓\n".encode(),
    }


def test_archive_is_a_standard_zip_with_sensible_compression(proj):
    files = _files()
    exp = make_exp(proj, "arch", {**files, "run.sh": "#!/bin/sh\necho hi\n" * 20}, when=T0)
    (exp / "run.sh").chmod(0o755)
    ok("push", exp.name)
    zpath = proj.zip_of(exp.name)
    with zipfile.ZipFile(zpath) as zf:
        assert zf.testzip() is None
        infos = {i.filename: i for i in zf.infolist()}
        assert set(infos) == set(files) | {"run.sh", "resutil-exp.yaml"}
        for rel, data in files.items():
            assert zf.read(rel) == data, rel
        assert infos["weights.bin"].compress_type == zipfile.ZIP_STORED
        assert infos["plot.png"].compress_type == zipfile.ZIP_STORED
        assert infos["big/stream.bin"].compress_type == zipfile.ZIP_STORED
        assert infos["metrics.csv"].compress_type == zipfile.ZIP_DEFLATED
        assert infos["big/log.txt"].compress_type == zipfile.ZIP_DEFLATED
        assert infos["big/log.txt"].compress_size < infos["big/log.txt"].file_size / 10
        assert stat.S_IMODE(infos["run.sh"].external_attr >> 16) & 0o111
        inside = yaml.safe_load(zf.read("resutil-exp.yaml"))
    # The metadata inside the archive carries the manifest of every other file.
    assert set(inside["manifest"]["files"]) == set(files) | {"run.sh"}
    for rel, data in files.items():
        assert inside["manifest"]["files"][rel] == [len(data), xxhash.xxh3_128(data).hexdigest()]
    # The sidecar records the archive's own hash.
    side = json.loads(proj.sidecar(exp.name).read_text())
    assert side["archive"]["hash"] == xxhash.xxh3_128(zpath.read_bytes()).hexdigest()
    assert side["archive"]["size"] == zpath.stat().st_size

    if shutil.which("unzip"):
        r = subprocess.run(["unzip", "-t", str(zpath)], capture_output=True, text=True)
        assert r.returncode == 0, r.stdout + r.stderr
        assert "No errors detected" in r.stdout

    # Round trip: pull on a "fresh machine" gives the same bytes and the executable bit.
    shutil.rmtree(exp)
    ok("pull", exp.name)
    for rel, data in files.items():
        assert (exp / rel).read_bytes() == data, rel
    assert os.access(exp / "run.sh", os.X_OK)
    assert "ok" in ok("verify", "--local", exp.name).stderr


def test_an_experiment_with_only_metadata_round_trips(proj):
    exp = make_exp(proj, "empty", {}, when=T0)
    ok("push", exp.name)
    shutil.rmtree(exp)
    ok("pull", exp.name)
    assert read_exp(exp)["status"] == "finished"


# -- resutil 0.1.x archives --------------------------------------------------------------------
def _old_archive(proj, name: str, files: dict[str, str], deps: list[str]) -> Path:
    """An archive as resutil 0.1.x wrote it: zipfile.ZIP_DEFLATED of the folder, its own
    resutil-exp.yaml (dependency entries are results/<name> paths), and no sidecar."""
    src = proj.root.parent / "old-machine" / name
    src.mkdir(parents=True)
    for rel, text in files.items():
        (src / rel).write_text(text)
    (src / "resutil-exp.yaml").write_text(yaml.safe_dump({
        "args": "train.py --epochs 3",
        "result_dir": f"results/{name}",
        "dependency": deps,
        "git": {"commit_hash": "0123456789abcdef0123456789abcdef01234567",
                "uncommited_files": []},
    }))
    proj.archive_dir.mkdir(parents=True, exist_ok=True)
    zpath = proj.zip_of(name)
    with zipfile.ZipFile(zpath, "w", zipfile.ZIP_DEFLATED) as zf:
        for root, _, names in os.walk(src):
            for n in names:
                p = Path(root) / n
                zf.write(p, os.path.relpath(p, src))
    return zpath


def test_0_1_x_archives_list_pull_and_show_lineage(proj):
    up = "aanohv_20240614T091534_raw-data"
    down = "aapiyl_20240706T064339_experiment_1"
    _old_archive(proj, up, {"data.csv": "a,b\n1,2\n"}, [])
    _old_archive(proj, down, {"result.txt": "0.91\n"}, [f"results/{up}"])
    assert not proj.sidecar_dir.exists() or not list(proj.sidecar_dir.iterdir())

    rows = {r["name"]: r for r in json.loads(ok("list", "--json").stdout)}
    assert set(rows) == {up, down}
    assert all(r["remote"] and not r["local"] for r in rows.values())

    info = json.loads(ok("show", "--json", "aapiyl").stdout)
    assert info["where"] == "remote only"
    assert info["commit"] == "0123456789abcdef0123456789abcdef01234567"
    assert info["args"] == "train.py --epochs 3"
    assert [u["name"] for u in info["upstream"]] == [up]

    r = ok("pull", "aapiyl")
    local = proj.results
    assert (local / down / "result.txt").read_text() == "0.91\n"
    assert (local / up / "data.csv").read_text() == "a,b\n1,2\n"  # pulled as its upstream
    assert f"Pulled {up}" in r.stderr

    info = json.loads(ok("show", "--json", up).stdout)
    assert info["downstream"] == [down]
    info = json.loads(ok("show", "--json", down).stdout)
    assert [u["name"] for u in info["upstream"]] == [up]

    # Without a recorded hash, verify still checks the zip's CRCs and says so; a pulled
    # 0.1.x folder has no manifest, which is a note, not a failure.
    r = ok("verify", "--remote", down)
    assert "ok" in r.stderr and "0.1.x" in r.stderr
    r = ok("verify", "--local", down, up)
    assert r.stderr.count("0.1.x") == 2


def test_0_1_x_archive_without_metadata_still_lists_and_pulls(proj):
    name = "aapiyl_20240706T064339"
    proj.archive_dir.mkdir(parents=True)
    with zipfile.ZipFile(proj.zip_of(name), "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("out.txt", "bare\n")
    assert [r["name"] for r in json.loads(ok("list", "--json").stdout)] == [name]
    ok("pull", name)
    assert (proj.results / name / "out.txt").read_text() == "bare\n"


def test_a_new_push_is_readable_the_0_1_x_way(proj):
    """0.1.x pulls with zipfile.extractall into results/<name>/ and reads resutil-exp.yaml."""
    up = make_exp(proj, "up", when=T0)
    down = make_exp(proj, "down", when=T0.replace(hour=9), deps=[up.name])
    ok("push", down.name)
    target = proj.root.parent / "old-client" / down.name
    with zipfile.ZipFile(proj.zip_of(down.name)) as zf:
        zf.extractall(target)
    meta = yaml.safe_load((target / "resutil-exp.yaml").read_text())
    assert meta["dependency"] == [up.name]
    assert meta["result_dir"] == f"results/{down.name}"
    assert set(meta["git"]) == {"commit_hash", "uncommited_files"}
    assert (target / "out.txt").read_text() == "result\n"


# -- many small files: the helper process ------------------------------------------------------
def _many_files(folder: Path, n: int = 120) -> dict[str, bytes]:
    files = {}
    for i in range(n):
        rel = f"run_{i // 40}/part_{i % 4}/f{i:03d}." + ("csv" if i % 3 else "bin")
        data = (f"{i},{i * 0.5}\n" * (i % 50 + 1)).encode() if i % 3 else os.urandom(i * 7)
        files[rel] = data
        (folder / rel).parent.mkdir(parents=True, exist_ok=True)
        (folder / rel).write_bytes(data)
    return files


def _members(zpath: Path) -> list[tuple]:
    """What an archive holds, member by member and in order, without the deflate bytes:
    ISA-L's deflate output may differ from one process to another (all valid)."""
    with zipfile.ZipFile(zpath) as zf:
        assert zf.testzip() is None
        return [(i.filename, i.date_time, i.CRC, i.file_size, i.compress_type,
                 i.external_attr, zf.read(i)) for i in zf.infolist()]


def _build(folder: Path, out: Path) -> ArchiveInfo:
    with open(out, "wb") as f:
        return build_archive(folder, f, scratch_dir=out.parent / "scratch")


def test_a_helper_process_packs_part_of_many_small_files(tmp_path, monkeypatch):
    """Past the threshold a helper process packs a share: the archive holds what a single
    process writes, member for member, and the helper's scratch segment is removed."""
    src = tmp_path / "exp"
    files = _many_files(src)
    single = _build(src, tmp_path / "single.zip")

    answers = []
    real_result = packer.Helper.result
    monkeypatch.setattr(packer.Helper, "result", lambda self: answers.append(real_result(self)) or answers[-1])
    monkeypatch.setattr(packer, "HELPER_MIN_FILES", 10)
    helped = _build(src, tmp_path / "helped.zip")

    assert len(answers) == 1 and answers[0] is not None, "the helper did not pack its share"
    entries, hashed = answers[0]
    assert 20 < len(entries) < 100  # it had a real share, not all and not nothing
    assert _members(tmp_path / "helped.zip") == _members(tmp_path / "single.zip")
    assert helped.manifest.files == single.manifest.files
    assert list((tmp_path / "scratch").iterdir()) == []
    with zipfile.ZipFile(tmp_path / "helped.zip") as zf:
        assert {n: zf.read(n) for n in zf.namelist()} == files


def test_without_a_working_helper_the_archive_is_the_same(tmp_path, monkeypatch):
    """A helper that cannot start, or dies, costs only speed."""
    src = tmp_path / "exp"
    _many_files(src)
    reference = _build(src, tmp_path / "ref.zip")
    monkeypatch.setattr(packer, "HELPER_MIN_FILES", 10)
    for executable in ("/nonexistent/python", shutil.which("false")):
        monkeypatch.setattr(packer.sys, "executable", executable)
        got = _build(src, tmp_path / "got.zip")
        assert got.manifest.files == reference.manifest.files, executable
        assert _members(tmp_path / "got.zip") == _members(tmp_path / "ref.zip"), executable


def test_a_file_that_vanishes_mid_push_is_named(tmp_path, monkeypatch):
    """A file deleted after the scan (in the helper's share or this process's) fails the
    archive with the file's name, not a traceback or a storage error."""
    src = tmp_path / "exp"
    _many_files(src)
    monkeypatch.setattr(packer, "HELPER_MIN_FILES", 10)
    for share in (0, 1):
        real_split = packer.split

        def split_then_delete(items, share=share):
            parts = real_split(items)
            victim = parts[share][-1]
            os.unlink(victim[1])
            return parts

        monkeypatch.setattr(archive, "split", split_then_delete)
        with pytest.raises(ArchiveError, match=r"cannot read run_\d/part_\d/f\d+\.\w+ in exp: No such file"):
            _build(src, tmp_path / "broken.zip")
        assert list((tmp_path / "scratch").iterdir()) == []


# -- extracting while downloading --------------------------------------------------------------
def _pushed_archive(tmp_path: Path) -> tuple[Path, dict[str, bytes], ArchiveInfo]:
    src = tmp_path / "src"
    files = {
        "metrics.csv": "".join(f"{i},{i / 7:.5f}\n" for i in range(20000)).encode(),
        "big/random.bin": os.urandom(3 << 20),  # > 1 MB: stored with a data descriptor
        "big/log.txt": b"epoch done\n" * 200_000,  # > 1 MB: deflated with a descriptor
        "empty.dat": b"",
        "run.sh": b"#!/bin/sh\necho hi\n",
        "deep/er/日本語.txt": "ok\n".encode(),
    }
    for rel, data in files.items():
        (src / rel).parent.mkdir(parents=True, exist_ok=True)
        (src / rel).write_bytes(data)
    (src / "run.sh").chmod(0o755)
    zpath = tmp_path / "a.zip"
    info = _build(src, zpath)
    return zpath, files, info


def _stream(data: bytes, dest: Path, described: dict | None, sizes, expected: str = "0" * 32
            ) -> StreamExtractor:
    dest.mkdir()
    sink = StreamExtractor(dest, lambda: (expected, described), "a.zip")
    pos, k = 0, 0
    while pos < len(data):
        n = sizes[k % len(sizes)]
        sink.write(data[pos:pos + n])
        pos, k = pos + n, k + 1
    return sink


def test_an_archive_extracts_while_it_arrives_in_any_chunking(tmp_path):
    zpath, files, info = _pushed_archive(tmp_path)
    assert len(info.described) == 2  # the two large files
    data = zpath.read_bytes()
    for i, sizes in enumerate([(len(data),), (1, 7, 30, 4093), (65536,), (8192, 1 << 20)]):
        dest = tmp_path / f"out{i}"
        sink = _stream(data, dest, info.described, sizes, info.hash)
        assert sink.tell() == len(data)
        assert sink.finish() == sum(map(len, files.values()))
        for rel, content in files.items():
            assert (dest / rel).read_bytes() == content, (sizes, rel)
        assert os.access(dest / "run.sh", os.X_OK)


def test_a_damaged_or_cut_stream_is_refused(tmp_path):
    zpath, _, info = _pushed_archive(tmp_path)
    data = bytearray(zpath.read_bytes())
    stored_at = data.index(b"big/random.bin") + 100  # inside the stored large file
    flipped = bytes(data[:stored_at]) + bytes([data[stored_at] ^ 1]) + bytes(data[stored_at + 1:])
    with pytest.raises(ArchiveError, match="CRC mismatch in 'big/random.bin'"):
        _stream(flipped, tmp_path / "flip", info.described, (65536,), info.hash)
    sink = _stream(bytes(data[: len(data) // 2]), tmp_path / "cut", info.described, (65536,),
                   info.hash)
    with pytest.raises(ArchiveError):
        sink.finish()
    # A layout without a descriptor member's size is corrupt; no layout at all, or no
    # recorded hash, means: fetch the archive whole instead.
    with pytest.raises(ArchiveError, match="size of 'big/.*' is not recorded"):
        _stream(bytes(data), tmp_path / "badlayout", {}, (65536,))
    with pytest.raises(NotStreamable):
        _stream(bytes(data), tmp_path / "nolayout", None, (65536,))
    with pytest.raises(NotStreamable):
        _stream(bytes(data), tmp_path / "nohash", info.described, (65536,), None)


def test_a_streamed_member_cannot_escape_the_folder(tmp_path):
    evil = tmp_path / "evil.zip"
    with zipfile.ZipFile(evil, "w") as zf:
        zf.writestr("ok.txt", "fine")
        zf.writestr("../escaped.txt", "gotcha")
    data = evil.read_bytes()
    with pytest.raises(ArchiveError, match="outside the experiment folder"):
        _stream(data, tmp_path / "dest", {}, (100,))
    assert not (tmp_path / "escaped.txt").exists()


# -- symbolic links: nothing from outside the experiment folder -------------------------------
SECRET = b"-----BEGIN OPENSSH PRIVATE KEY----- not for the bucket\n"


def _remote_bytes(proj) -> bytes:
    """Everything stored on the remote (archives, sidecars, part files), concatenated."""
    if not proj.remote.exists():
        return b""
    return b"".join(p.read_bytes() for p in sorted(proj.remote.rglob("*")) if p.is_file())


@pytest.fixture
def secret(tmp_path) -> Path:
    path = tmp_path / "home" / ".ssh" / "id_ed25519"
    path.parent.mkdir(parents=True)
    path.write_bytes(SECRET)
    return path


@pytest.mark.parametrize("link", ["file", "folder", "dangling", "nested"])
def test_a_link_out_of_the_folder_fails_the_push_naming_it(proj, secret, link):
    exp = make_exp(proj, "links", {"ok.txt": "fine\n", "sub/a.txt": "a\n"}, when=T0)
    target = {"file": secret, "folder": secret.parent, "dangling": exp / "gone.txt",
              "nested": secret}[link]
    where = exp / ("sub/deeper/key" if link == "nested" else "key")
    where.parent.mkdir(exist_ok=True)
    where.symlink_to(target)
    rel = where.relative_to(exp).as_posix()
    line = fails("push", exp.name, needles=[rel, "symbolic link"])
    assert ("nothing" if link == "dangling" else "outside") in line
    assert proj.remote_zips() == []
    assert SECRET not in _remote_bytes(proj)
    # The manifest a run records never reads it either.
    assert rel not in compute_manifest(exp).files


def test_an_experiment_folder_that_is_a_link_is_refused(proj, secret):
    elsewhere = secret.parent.parent / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "id_copy").write_bytes(SECRET)
    name = "aapiyl_20240706T064339_linked"
    proj.results.mkdir(exist_ok=True)
    (proj.results / name).symlink_to(elsewhere)
    fails("push", name, needles=[name, "symbolic link"])
    assert proj.remote_zips() == [] and SECRET not in _remote_bytes(proj)


def test_links_inside_the_folder_are_archived_as_what_they_point_to(proj, monkeypatch):
    """Documented policy: a link to a file or folder inside the experiment is stored as a
    copy of it (so the pulled folder reads the same, and 0.1.x extracts it too); the
    manifest agrees with the archive. The helper process's share obeys the same rule."""
    monkeypatch.setattr(packer, "HELPER_MIN_FILES", 10)
    files = {f"data/part{i:02d}.csv": f"{i},{i * i}\n" * 50 for i in range(30)}
    exp = make_exp(proj, "inner", files, when=T0)
    (exp / "latest.csv").symlink_to("data/part29.csv")
    (exp / "early.csv").symlink_to(exp / "data" / "part00.csv")  # absolute, still inside
    (exp / "current").symlink_to("data")
    (exp / "data" / "self").symlink_to("part05.csv")
    seal(exp)  # the run ends with its links in place
    ok("push", exp.name)
    with zipfile.ZipFile(proj.zip_of(exp.name)) as zf:
        assert zf.testzip() is None
        got = {i.filename: zf.read(i) for i in zf.infolist()}
        assert not any(stat.S_ISLNK(i.external_attr >> 16) for i in zf.infolist())
        inside = yaml.safe_load(got.pop("resutil-exp.yaml"))["manifest"]["files"]
    assert got["latest.csv"] == files["data/part29.csv"].encode()
    assert got["early.csv"] == files["data/part00.csv"].encode()
    assert got["data/self"] == files["data/part05.csv"].encode()
    assert {k[len("current/"):]: v for k, v in got.items() if k.startswith("current/")} == \
        {k[len("data/"):]: v for k, v in got.items() if k.startswith("data/")}
    # The manifest in the archive, the local one and a fresh scan all list what it holds.
    assert set(inside) == set(got) == set(compute_manifest(exp).files)
    assert read_exp(exp)["manifest"]["files"] == inside
    shutil.rmtree(exp)
    ok("pull", exp.name)
    assert (exp / "current" / "part03.csv").read_text() == files["data/part03.csv"]
    assert not (exp / "latest.csv").is_symlink()


def test_a_link_that_loops_fails_the_push_naming_it(proj):
    exp = make_exp(proj, "loop", {"a/x.txt": "x\n", "b/y.txt": "y\n"}, when=T0)
    (exp / "a" / "to_b").symlink_to("../b")
    (exp / "b" / "to_a").symlink_to("../a")  # a/to_b/to_a/to_b/... never ends
    seal(exp)  # recording the run's manifest walks no loop either
    fails("push", exp.name, needles=["to_a", "loop"])
    assert proj.remote_zips() == []


@pytest.mark.parametrize("share", [0, 1])
def test_a_file_swapped_for_a_link_after_the_scan_is_not_followed(tmp_path, secret, monkeypatch,
                                                                  share):
    """Between the scan and the read, a file replaced by a link out of the folder: in this
    process's share (0) and in the helper's (1), the link is not read."""
    src = tmp_path / "exp"
    _many_files(src)
    monkeypatch.setattr(packer, "HELPER_MIN_FILES", 10)
    real_split = packer.split

    def split_then_swap(items):
        parts = real_split(items)
        victim = parts[share][-1]
        os.unlink(victim[1])
        os.symlink(secret, victim[1])
        return parts

    monkeypatch.setattr(archive, "split", split_then_swap)
    with pytest.raises(ArchiveError, match="changed while it was being archived"):
        _build(src, tmp_path / "out.zip")
    assert SECRET not in (tmp_path / "out.zip").read_bytes()
    assert list((tmp_path / "scratch").iterdir()) == []


def test_files_only_listed_make_the_same_archive_as_files_stated(tmp_path, monkeypatch):
    """Past HELPER_MIN_FILES the scan only lists files and the packers stat them: large ones
    are handed back and streamed, links followed inside the folder; the archive holds the
    same members, in the same order, as the one of a scan that stats every file."""
    src = tmp_path / "exp"
    for d in ("a", "b", "a-b", "c"):
        (src / d).mkdir(parents=True)
        for i in range(8):
            (src / d / f"f{i}.csv").write_text(f"{i},{d}\n" * (i * 50))
    (src / "a" / "zbig.bin").write_bytes(os.urandom(2 << 20))
    (src / "b" / "abig.log").write_bytes(b"epoch ok\n" * 300_000)
    (src / "c" / "link_to_big").symlink_to("../a/zbig.bin")
    (src / "c" / "link_to_small").symlink_to("../b/f3.csv")
    stated = _build(src, tmp_path / "stated.zip")
    monkeypatch.setattr(packer, "HELPER_MIN_FILES", 5)
    listed = _build(src, tmp_path / "listed.zip")
    assert _members(tmp_path / "listed.zip") == _members(tmp_path / "stated.zip")
    assert listed.manifest.files == stated.manifest.files == compute_manifest(src).files
    assert list((tmp_path / "scratch").iterdir()) == []


@pytest.mark.parametrize("host_ahead_s", [-10, 10])
def test_a_file_servers_clock_is_used_for_changed_since_the_scan(tmp_path, monkeypatch,
                                                                 host_ahead_s):
    """Many files are stat'ed where they are opened, and one changed since the scan began
    (by its ctime) fails. With this host's clock 10 s off the file system's (a file
    server's), a file written just before the push still goes in, and one changed after
    the scan began still fails."""
    import time

    src = tmp_path / "exp"
    files = _many_files(src)
    monkeypatch.setattr(packer, "HELPER_MIN_FILES", 10)
    real = time.time_ns
    monkeypatch.setattr(time, "time_ns", lambda: real() + host_ahead_s * 1_000_000_000)
    got = _build(src, tmp_path / "ok.zip")
    assert got.manifest.files == compute_manifest(src).files
    with zipfile.ZipFile(tmp_path / "ok.zip") as zf:
        assert {n: zf.read(n) for n in zf.namelist()} == files

    real_split = packer.split

    def split_then_touch(items):
        parts = real_split(items)
        time.sleep(0.06)  # past the file system's coarse timestamps
        os.utime(parts[1][-1][1])  # a new ctime, the same content and size
        return parts

    monkeypatch.setattr(archive, "split", split_then_touch)
    with pytest.raises(ArchiveError, match="changed while it was being archived"):
        _build(src, tmp_path / "touched.zip")
    assert list((tmp_path / "scratch").iterdir()) == []


# -- files that change while they are archived --------------------------------------------------
class _Writer:
    """A real writer thread that keeps changing one file (appending, or rewriting it in
    place at the same size) until stopped."""

    def __init__(self, path: Path, mode: str) -> None:
        import threading

        self.path, self.mode = path, mode
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        size = self.path.stat().st_size
        with open(self.path, "r+b") as f:
            while not self.stop.is_set():
                if self.mode == "append":
                    f.seek(0, os.SEEK_END)
                    f.write(os.urandom(4096))
                else:
                    f.seek(0)
                    f.write(os.urandom(min(size, 1 << 16)))
                f.flush()
                self.stop.wait(0.0005)

    def __enter__(self) -> "_Writer":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        self.thread.join()


def _wait_for_a_change(path: Path) -> None:
    """Return once ``path`` visibly changed (size or mtime) after this call began."""
    import time

    before = os.stat(path)
    end = time.monotonic() + 30
    while time.monotonic() < end:
        now = os.stat(path)
        if (now.st_size, now.st_mtime_ns) != (before.st_size, before.st_mtime_ns):
            return
        time.sleep(0.001)
    raise AssertionError(f"{path} did not change")


CHANGING = {  # which file changes: small (this process's or the helper's share) or large
    "small-here": ("run_0/part_1/f001.csv", None),
    "small-helper": ("run_2/part_3/f119.csv", None),
    "large-stored": ("big/weights.bin", os.urandom(3 << 20)),
    "large-deflated": ("big/log.txt", b"epoch ok\n" * 400_000),
}


@pytest.mark.parametrize("mode", ["append", "rewrite"])
@pytest.mark.parametrize("which", list(CHANGING))
def test_a_file_written_during_a_push_fails_it_naming_the_file(proj, monkeypatch, which, mode):
    """A checkpoint still being saved: the push fails with one line naming the file and
    stores nothing, on every path (small files here and in the helper, large stored ones
    copied in the kernel's page cache, large deflated ones). The run is still going: its
    files are not yet sealed by a manifest."""
    exp = make_exp(proj, "ckpt", {}, when=T0, status="running")
    _many_files(exp)
    rel, content = CHANGING[which]
    if content is not None:
        (exp / rel).parent.mkdir(exist_ok=True)
        (exp / rel).write_bytes(content)
    monkeypatch.setattr(packer, "HELPER_MIN_FILES", 10)
    if which.startswith("small"):  # the changing file sits in the share the case names
        share = 0 if which == "small-here" else 1
        real_split = packer.split
        monkeypatch.setattr(archive, "split", lambda items: _check_share(real_split(items), rel, share))
    real_split_now = archive.split

    def split_after_a_change(items):
        _wait_for_a_change(exp / rel)  # the scan is over: the writer changes the file now
        return real_split_now(items)

    monkeypatch.setattr(archive, "split", split_after_a_change)
    with _Writer(exp / rel, mode):
        line = fails("push", exp.name, needles=[rel, "changed while it was being archived"])
    assert "nothing was stored" in line
    assert proj.remote_zips() == [] and list(proj.sidecar_dir.glob("*.json")) == []
    assert list((proj.results / ".resutil" / "tmp").glob("*")) == []
    monkeypatch.setattr(archive, "split", packer.split)
    ok("push", exp.name)  # once the writer is done
    assert "ok" in ok("verify", "--remote", exp.name).stderr


def _check_share(parts, rel: str, share: int):
    assert rel in {item[0] for item in parts[share]}, (rel, share)
    return parts


def test_resutils_own_log_may_grow_during_a_checkpoint_push(proj):
    """The run's output logs are appended to while a checkpoint is pushed (progress bars,
    other threads printing): the archive takes what they held when the push began."""
    exp = make_exp(proj, "logs", {"resutil-stdout.log": "epoch 1\n" * 1000,
                                  "resutil-stderr.log": "x" * (2 << 20)}, when=T0,
                   status="running")
    before = {n: (exp / n).read_bytes() for n in ("resutil-stdout.log", "resutil-stderr.log")}
    with _Writer(exp / "resutil-stdout.log", "append"), _Writer(exp / "resutil-stderr.log", "append"):
        ok("push", exp.name)
    with zipfile.ZipFile(proj.zip_of(exp.name)) as zf:
        assert zf.testzip() is None
        for n, data in before.items():
            got = zf.read(n)
            assert got.startswith(data) and (exp / n).read_bytes().startswith(got), n
