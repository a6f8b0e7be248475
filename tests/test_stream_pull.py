"""Pulling from a cloud storage extracts each file as the archive arrives: a connection cut
mid-download starts over cleanly, a damaged archive is refused with nothing kept, and a
full disk is reported in one line (Box's fake server stands in for every cloud backend:
the path is the same for all of them)."""

from __future__ import annotations

import os

import pytest

from resutil.storage import backend_class

from .helpers import assert_one_error_line, make_exp, small_tmpfs, tree
from .test_backends_e2e import cli_in, init_project

pytest.importorskip("box_sdk_gen")

FILES = {"table.csv": "".join(f"{i},{i * i}\n" for i in range(40000)),
         "weights.bin": os.urandom(3 << 20), "notes/readme.txt": "hello\n"}


@pytest.fixture
def pushed(box_settings, tmp_path):
    """An experiment with a large member, pushed to Box from project a; project b is empty."""
    a = init_project(tmp_path / "a", box_settings)
    exp = make_exp(a, "big", files=FILES)
    r = cli_in(a, "push", exp.name)
    assert r.exit_code == 0, r.stderr
    b = init_project(tmp_path / "b", box_settings)
    return b, exp.name


def test_a_download_cut_midway_starts_over_and_the_pull_is_whole(box_fake, pushed):
    b, name = pushed
    assert cli_in(b, "show", name).exit_code == 0  # reads (and caches) the sidecar
    before = box_fake.count("GET", "/dl/")
    box_fake.drop_next("/dl/")  # the archive's download is cut halfway
    r = cli_in(b, "pull", name)
    assert r.exit_code == 0, r.stderr
    assert box_fake.count("GET", "/dl/") - before == 2  # cut once, then whole
    for rel, content in FILES.items():
        data = content.encode() if isinstance(content, str) else content
        assert (b.results / name / rel).read_bytes() == data, rel
    assert not list((b.results / ".resutil" / "tmp").glob("*"))
    assert "ok" in cli_in(b, "verify", "--local", name).stderr


def test_a_damaged_archive_is_refused_and_nothing_is_kept(box_fake, pushed):
    b, name = pushed
    # Damaged on the way, every time (Box still holds, and lists, what was pushed, so the
    # sidecar's hash applies); a byte in the middle is inside weights.bin, a stored member.
    # (An archive replaced on the storage is another version, which the sidecar does not
    # describe: that pull extracts and checks CRCs instead.)
    box_fake.corrupt_next(name + ".zip", count=1000)
    r = cli_in(b, "pull", name)
    assert r.exit_code == 1
    line = assert_one_error_line(r.stderr, name)
    assert "CRC mismatch in 'weights.bin'" in line  # found on the way, before the hash
    assert not (b.results / name).exists()
    assert not list((b.results / ".resutil" / "tmp").glob("*"))


def test_an_archive_damaged_on_the_storage_is_not_paired_and_is_refused(box_settings, pushed):
    """Content replaced on the storage (same name, same size) is a new version of the file,
    which the sidecar does not describe: the pull checks the archive itself, refuses it
    and keeps nothing."""
    b, name = pushed
    storage = backend_class("box")(box_settings)
    data = bytearray(storage.read_bytes(b.name, name + ".zip"))
    data[len(data) // 2] ^= 0xFF  # inside weights.bin, a stored member
    storage.write_bytes(b.name, name + ".zip", bytes(data))
    r = cli_in(b, "pull", name)
    assert r.exit_code == 1
    assert_one_error_line(r.stderr, name, "corrupt")
    assert not (b.results / name).exists()
    assert not list((b.results / ".resutil" / "tmp").glob("*"))


def test_a_full_disk_during_a_streaming_pull_is_one_line(pushed):
    b, name = pushed
    with small_tmpfs(b.results, "1m"):
        r = cli_in(b, "pull", name)
        left = tree(b.results)
    assert r.exit_code == 1
    assert_one_error_line(r.stderr, "no space left", name)
    assert not any(p.startswith(name[:22]) for p in left)
    assert not [p for p in left if p.startswith(".resutil/tmp/")]


def test_without_a_recorded_layout_the_pull_fetches_then_extracts(box_settings, pushed, monkeypatch):
    """Sidecars written before the layout was recorded (or by 0.1.x: no sidecar) still pull."""
    from resutil import remote

    b, name = pushed
    real = remote.Remote.stream_facts
    monkeypatch.setattr(remote.Remote, "stream_facts", lambda self, exp: (real(self, exp)[0], None))
    r = cli_in(b, "pull", name)
    assert r.exit_code == 0, r.stderr
    assert (b.results / name / "weights.bin").read_bytes() == FILES["weights.bin"]
