"""One file of an experiment without the whole archive: ``resutil cat``, ``resutil get``,
``resutil.open`` and ``partial.retrieve_file``, on every backend, through ranged reads of
the archive (the sidecar's member index, or the central directory of an archive without
one, as 0.1.x pushed them), with damaged members refused."""

from __future__ import annotations

import io
import json
import os
import random
import struct
import zipfile
import zlib
from pathlib import Path

import pytest

import resutil
from resutil import partial
from resutil.errors import ArchiveError, ExperimentError, ExperimentNotFound, ResutilError
from resutil.project import Project
from resutil.remote import ARCHIVE_SUFFIX
from resutil.storage import backend_class

from .helpers import (
    assert_one_line, chdir, cli_in, cli_ok, make_clone, make_exp, make_project, meta_01x,
    run_cli, tree, zip_01x,
)

TEXT = "".join(f"{i},{i * i},{i % 7}\n" for i in range(3000))  # deflated in the archive
RANDOM = random.Random(7).randbytes(50_000)  # incompressible: stored
FILES = {"metrics.json": '{"acc": 0.91}\n', "table.csv": TEXT, "blob.bin": RANDOM,
         "plots/a.txt": "plot a\n", "plots/deep/b.txt": "plot b\n", "empty.txt": ""}


@pytest.fixture
def no_whole_downloads(monkeypatch, storage_type):
    """Fail any download of a whole object but a sidecar: a partial read must not need it."""
    cls = backend_class(storage_type)
    whole = cls._download

    def refuse(self, folder, name, *args, **kwargs):
        assert not name.endswith(ARCHIVE_SUFFIX), f"{name} was downloaded whole"
        return whole(self, folder, name, *args, **kwargs)

    monkeypatch.setattr(cls, "_download", refuse)


def pushed(tmp_path: Path, settings, files=FILES):
    """A project with one experiment pushed, and a second clone on the same storage (a
    local one when ``settings`` is None)."""
    a = make_project(tmp_path / "a", settings)
    folder = make_exp(a, "run", files=files)
    cli_ok("push", folder.name, cwd=a.root)
    b = make_project(tmp_path / "b", settings) if settings else make_clone(a, tmp_path / "b")
    return a, b, folder.name


def test_cat_get_and_open_read_single_files_remotely(storage_settings, tmp_path,
                                                      no_whole_downloads):
    a, b, name = pushed(tmp_path, storage_settings)
    for rel, content in FILES.items():
        data = content.encode() if isinstance(content, str) else content
        r = cli_in(b, "cat", name[:6], rel)
        assert r.exit_code == 0, r.stderr
        assert r.stdout_bytes == data, rel
    project = Project.load(b.root)
    with resutil.open(name, "blob.bin", project=project) as f:
        assert f.read(10) == RANDOM[:10]
        assert f.read() == RANDOM[10:]
    out = tmp_path / "out"
    r = cli_in(b, "get", name, "plots", "*.csv", "-o", str(out))
    assert r.exit_code == 0, r.stderr
    assert tree(out) == {"plots", "plots/a.txt", "plots/deep", "plots/deep/b.txt", "table.csv"}
    assert (out / "plots/deep/b.txt").read_text() == "plot b\n"
    assert (out / "table.csv").read_text() == TEXT
    # Nothing of it was put under the results folder: the experiment is still not here.
    assert not b.exp_dirs()
    assert json.loads(cli_in(b, "list", "--json").stdout)[0]["local"] is False


def test_the_sidecar_locates_each_member(storage_settings, tmp_path):
    """A read of one file after the listing is one ranged request of exactly its bytes."""
    a, b, name = pushed(tmp_path, storage_settings)
    project = Project.load(b.root)
    exp = project.remote.require(name)
    index = project.remote.member_index(exp)
    assert index.source == "sidecar" and "resutil-exp.yaml" in index.members
    storage = project.remote.storage
    asked = []
    read_range = storage.read_range

    def counted(folder, obj, start, length, version=None):
        asked.append((obj, length))
        return read_range(folder, obj, start, length, version)

    storage.read_range = counted  # (an instance attribute: counts, changes nothing)
    with partial.open_file(project, name, "table.csv") as f:
        assert f.read().decode() == TEXT
    assert asked == [(exp.archive.name, index.members["table.csv"].csize)]
    assert index.members["table.csv"].csize < len(TEXT) / 2  # deflated
    assert index.members["blob.bin"].csize == len(RANDOM)  # stored


def test_01x_archives_are_read_through_their_central_directory(storage_settings, tmp_path,
                                                               no_whole_downloads):
    b = make_project(tmp_path / "b", storage_settings)
    storage = backend_class(storage_settings.storage_type)(storage_settings)
    name = "aaaaab_20240101T000000_old"
    blob = zip_01x({"resutil-exp.yaml": meta_01x(name), "results.csv": TEXT,
                    "sub/x.txt": "x\n", "raw.bin": RANDOM})
    storage.write_bytes("Proj", name + ARCHIVE_SUFFIX, blob)
    assert cli_in(b, "cat", name, "results.csv").stdout == TEXT
    assert cli_in(b, "cat", name, "sub/x.txt").stdout == "x\n"
    assert cli_in(b, "cat", name, "raw.bin").stdout_bytes == RANDOM
    # The metadata of a 0.1.x archive also comes from a ranged read of its one member.
    assert cli_in(b, "show", name).exit_code == 0
    project = Project.load(b.root)
    assert project.remote.member_index(project.remote.require(name)).source == "directory"


def test_large_members_through_the_central_directory(tmp_path, monkeypatch):
    """Members of more than a window are read in several requests; members written with a
    zip64 data descriptor are found through the central directory too (no sidecar)."""
    a, b, name = pushed(tmp_path, None, {"big.bin": random.Random(3).randbytes(3 << 20),
                                         "big.csv": TEXT * 80})
    for p in b.remote.joinpath("Proj.resutil").iterdir():
        p.unlink()  # as if pushed without a sidecar
    monkeypatch.setattr("resutil.archive.read.WINDOW", 1 << 20)
    project = Project.load(b.root)
    with resutil.open(name, "big.bin", project=project) as f:
        assert f.read() == random.Random(3).randbytes(3 << 20)
    assert partial.open_file(project, name, "big.csv").read().decode() == TEXT * 80
    assert project.remote.member_index(project.remote.require(name)).source == "directory"


def _flip_in_member(zip_path: Path, member: str, at: int = 100, fix_crc: bool = False) -> None:
    """Flip a byte of ``member``'s data in place (same inode, size and mtime: its sidecar
    still pairs with it); ``fix_crc`` also rewrites its CRC, in the archive and in the
    sidecar's member index, so that only the content hash can tell."""
    st = zip_path.stat()
    raw = bytearray(zip_path.read_bytes())
    with zipfile.ZipFile(zip_path) as zf:
        info = zf.getinfo(member)
        changed = bytearray(zf.read(member))
    assert info.compress_type == zipfile.ZIP_STORED
    name_len, extra_len = struct.unpack_from("<HH", raw, info.header_offset + 26)
    raw[info.header_offset + 30 + name_len + extra_len + at] ^= 0xFF
    if fix_crc:
        changed[at] ^= 0xFF
        crc = zlib.crc32(changed)
        struct.pack_into("<I", raw, info.header_offset + 14, crc)  # the local header's
        end = raw.rfind(b"PK\x05\x06")
        off = struct.unpack_from("<I", raw, end + 16)[0]
        while raw[off + 46:off + 46 + len(member)] != member.encode():
            n, e, c = struct.unpack_from("<HHH", raw, off + 28)
            off += 46 + n + e + c
        struct.pack_into("<I", raw, off + 16, crc)  # and the central directory's
        sidecar = next(zip_path.parent.with_suffix(".resutil").glob("*.json"))
        side = json.loads(sidecar.read_text())
        for row in side["archive"]["members"]:
            if row[0] == member:
                row[5] = crc
        sidecar.write_text(json.dumps(side))
    with open(zip_path, "r+b") as f:
        f.write(raw)
    os.utime(zip_path, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert zip_path.stat().st_ino == st.st_ino


@pytest.mark.parametrize("fix_crc", [False, True], ids=["crc", "hash"])
def test_a_damaged_member_is_refused(tmp_path, fix_crc):
    a, b, name = pushed(tmp_path, None)
    _flip_in_member(a.zip_of(name), "blob.bin", fix_crc=fix_crc)
    project = Project.load(b.root)
    assert project.remote.member_index(project.remote.require(name)).source == "sidecar"
    why = "content hash" if fix_crc else "CRC"
    err = cli_in(b, "cat", name, "blob.bin")
    assert err.exit_code == 1
    assert_one_line(err.stderr.strip(), "blob.bin", "damaged", why)
    out = tmp_path / "out"
    r = run_cli("get", name, "blob.bin", "metrics.json", "-o", str(out), cwd=b.root)
    assert r.exit_code == 1 and "damaged" in r.stderr
    assert not (out / "blob.bin").exists()  # never half a file
    assert not [p for p in out.rglob("*") if ".resutil" in p.name]  # no scratch left
    # The other files of the archive stay readable.
    assert cli_in(b, "cat", name, "metrics.json").stdout == FILES["metrics.json"]


def test_a_damaged_member_is_refused_on_every_backend(storage_settings, tmp_path):
    """An archive replaced by a damaged copy (the sidecar no longer pairs): the central
    directory locates the member and its CRC refuses it."""
    a, b, name = pushed(tmp_path, storage_settings)
    storage = backend_class(storage_settings.storage_type)(storage_settings)
    raw = bytearray(storage.read_bytes("Proj", name + ARCHIVE_SUFFIX))
    at = raw.find(RANDOM[1000:1100])
    assert at > 0
    raw[at + 50] ^= 0x01
    storage.write_bytes("Proj", name + ARCHIVE_SUFFIX, bytes(raw))
    project = Project.load(b.root)
    with pytest.raises(ArchiveError) as e:
        partial.open_file(project, name, "blob.bin").read()
    assert_one_line(e, "blob.bin", "damaged", "CRC")
    assert partial.open_file(project, name, "table.csv").read().decode() == TEXT


def test_declared_sizes_that_cannot_be_true_are_refused(tmp_path):
    """An 0.1.x archive whose directory claims more than deflate can encode: refused before
    a byte is inflated."""
    b = make_project(tmp_path / "b")
    name = "aaaaab_20240101T000000_old"
    blob = bytearray(zip_01x({"bomb.txt": "0" * 100_000}))
    cd = blob.rfind(b"PK\x01\x02")
    struct.pack_into("<I", blob, cd + 24, 0xFFFF_FFF0)  # uncompressed size
    b.archive_dir.mkdir(parents=True)
    b.zip_of(name).write_bytes(bytes(blob))
    err = cli_in(b, "cat", name, "bomb.txt")
    assert err.exit_code == 1
    assert_one_line(err.stderr.strip(), "bomb.txt", "deflate can encode")


def test_a_damaged_central_directory_is_one_line(tmp_path):
    b = make_project(tmp_path / "b")
    name = "aaaaab_20240101T000000_old"
    b.archive_dir.mkdir(parents=True)
    b.zip_of(name).write_bytes(b"PK\x03\x04 not really a zip" * 10)
    err = cli_in(b, "cat", name, "x.txt")
    assert err.exit_code == 1
    assert_one_line(err.stderr.strip(), name, "not a zip archive")


def test_local_experiments_are_read_from_their_folder(proj, tmp_path):
    folder = make_exp(proj, "here", files=FILES)
    assert cli_ok("cat", folder.name, "plots/a.txt").stdout == "plot a\n"
    with resutil.open(folder.name[:6], "blob.bin") as f:  # the project found from the cwd
        assert f.read() == RANDOM
    (tmp_path / "secret.txt").write_text("outside")
    os.symlink(tmp_path / "secret.txt", folder / "link.txt")
    for bad, needle in [("../x", "not a path inside"), ("/etc/passwd", "not a path inside"),
                        ("link.txt", "has no file"), ("plots", "is a folder"),
                        ("nope.txt", "has no file")]:
        r = run_cli("cat", folder.name, bad)
        assert r.exit_code == 1, bad
        assert_one_line(r.stderr.strip(), needle)


def test_get_refuses_the_results_folder_and_existing_files(proj, tmp_path):
    folder = make_exp(proj, "here", files=FILES)
    r = run_cli("get", folder.name, "metrics.json", "-o", str(proj.results / "copy"))
    assert r.exit_code == 1 and "inside the results folder" in r.stderr
    with chdir(proj.results):
        r = run_cli("get", folder.name, "metrics.json")
        assert r.exit_code == 1 and "inside the results folder" in r.stderr
    out = tmp_path / "out"
    out.mkdir()
    (out / "metrics.json").write_text("mine")
    r = run_cli("get", folder.name, "metrics.json", "table.csv", "-o", str(out))
    assert r.exit_code == 1 and "--force" in r.stderr
    assert (out / "metrics.json").read_text() == "mine" and not (out / "table.csv").exists()
    cli_ok("get", folder.name, "metrics.json", "table.csv", "-o", str(out), "--force")
    assert (out / "metrics.json").read_text() == FILES["metrics.json"]
    r = run_cli("get", folder.name, "*.parquet", "-o", str(out))
    assert r.exit_code == 1
    assert_one_line(r.stderr.strip(), "no file matching", "*.parquet")


def test_retrieve_file_for_the_snakemake_plugin(storage_settings, tmp_path):
    """The library call a workflow engine uses: one file to a path of its choosing,
    replaced only once it arrived whole."""
    a, b, name = pushed(tmp_path, storage_settings)
    project = Project.load(b.root)
    dest = tmp_path / "work" / "metrics.json"
    size = partial.retrieve_file(project, name, "metrics.json", dest)
    assert size == len(FILES["metrics.json"])
    assert dest.read_text() == FILES["metrics.json"]
    assert sorted(p.name for p in dest.parent.iterdir()) == ["metrics.json"]
    with pytest.raises(ExperimentNotFound):
        partial.retrieve_file(project, name, "missing.txt", dest)
    with pytest.raises(ResutilError, match="inside the results folder"):
        partial.retrieve_file(project, name, "metrics.json", b.results / "x.json")
    assert dest.read_text() == FILES["metrics.json"]


def test_match_files_patterns(proj):
    folder = make_exp(proj, "here", files=FILES)
    source = partial.find_source(Project.load(proj.root), folder.name)
    assert partial.match_files(source, ["plots/*"]) == ["plots/a.txt", "plots/deep/b.txt"]
    assert partial.match_files(source, ["plots/deep", "metrics.json"]) == [
        "metrics.json", "plots/deep/b.txt"]
    assert partial.match_files(source, ["*.txt"]) == ["empty.txt", "plots/a.txt",
                                                      "plots/deep/b.txt"]
    with pytest.raises(ExperimentError):
        partial.match_files(source, ["../x"])


def test_empty_and_reading_in_small_pieces(tmp_path):
    a, b, name = pushed(tmp_path, None)
    project = Project.load(b.root)
    assert partial.open_file(project, name, "empty.txt").read() == b""
    f = partial.open_file(project, name, "table.csv")
    got = io.BytesIO()
    while chunk := f.read(777):
        got.write(chunk)
    assert got.getvalue().decode() == TEXT
