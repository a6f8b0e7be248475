"""Archives on the remote are untrusted: whoever can write to the bucket or the share can
plant one whose headers lie. Each attack here is a small zip written by hand (with a
sidecar whose hash matches, as a careful attacker would write), pulled, shown or verified
through the CLI on the local backend and on a cloud backend (Box's fake server: every
cloud backend extracts while downloading through the same code)."""

from __future__ import annotations

import os
import struct
import sys
import zlib

import pytest
import xxhash

from resutil.archive import ArchiveInfo
from resutil.metadata import ExpMeta, Manifest
from resutil.remote import Remote
from resutil.storage import backend_class

from .helpers import assert_one_error_line, cli_in, make_exp, make_project, small_tmpfs, tree

NAME = "aapiyl_20240706T064339_planted"
GiB = 1 << 30


def _deflate_zeros(n_mib: int) -> bytes:
    """A raw deflate stream of ``n_mib`` MiB of zero bytes, built without holding them: one
    MiB compressed once, repeated (a full flush makes each copy stand alone)."""
    c = zlib.compressobj(9, zlib.DEFLATED, -15)
    one = c.compress(bytes(1 << 20)) + c.flush(zlib.Z_FULL_FLUSH)
    return one * n_mib + zlib.compressobj(9, zlib.DEFLATED, -15).flush()


def hand_zip(*members: dict) -> bytes:
    """A zip whose headers say what each member dict says: ``name``, ``payload`` (the
    stored or deflated bytes), ``method`` (8), ``usize`` and ``crc`` as declared (both in
    the local header and the central directory; zip64 fields past 4 GiB)."""
    out, central = bytearray(), bytearray()
    for m in members:
        name, payload, method = m["name"].encode(), m["payload"], m.get("method", 8)
        usize, crc, csize = m["usize"], m["crc"], len(payload)
        big = usize >= 0xFFFFFFFF or csize >= 0xFFFFFFFF
        extra = struct.pack("<HHQQ", 1, 16, usize, csize) if big else b""
        u32, c32 = (0xFFFFFFFF, 0xFFFFFFFF) if big else (usize, csize)
        offset = len(out)
        out += struct.pack("<IHHHHHIIIHH", 0x04034B50, 45, 0x800, method, 0, 0x5821, crc, c32,
                           u32, len(name), len(extra)) + name + extra + payload
        central += struct.pack("<IHHHHHHIIIHHHHHII", 0x02014B50, 0x032D, 45, 0x800, method, 0,
                               0x5821, crc, c32, u32, len(name), len(extra), 0, 0, 0,
                               0o100644 << 16, offset) + name + extra
    start = len(out)
    out += central + struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, len(members), len(members),
                                 len(central), start, 0)
    return bytes(out)


@pytest.fixture(params=["local", "box"])
def project(request, tmp_path):
    """An empty project on the parametrised backend, and that backend's storage."""
    settings = request.getfixturevalue(f"{request.param}_settings")
    proj = make_project(tmp_path, settings)
    return proj, backend_class(settings.storage_type)(settings)


def plant(project, data: bytes, sidecar: bool = True, name: str = NAME,
          recorded_hash: str | None = None) -> None:
    """Store ``data`` as ``name``'s archive, with a sidecar written for that very version
    of it that records its true hash (or ``recorded_hash``)."""
    proj, storage = project
    stored = storage.write_bytes(proj.name, name + ".zip", data)
    if sidecar:
        digest = recorded_hash or xxhash.xxh3_128(data).hexdigest()
        info = ArchiveInfo(Manifest({}), len(data), digest, {})
        Remote(storage, proj.name).write_sidecar(ExpMeta(name=name), info, name + ".zip",
                                                 stored.version if stored else None)


def assert_nothing_kept(proj) -> None:
    assert not (proj.results / NAME).exists()
    assert not list((proj.results / ".resutil" / "tmp").glob("*"))


# -- (a) zip bombs ------------------------------------------------------------------------------
def test_a_bomb_whose_headers_claim_more_than_deflate_can_encode_is_refused(project):
    """10 GiB declared for 16 KB of deflate: refused before a byte is written."""
    proj, _ = project
    payload = _deflate_zeros(16)
    plant(project, hand_zip({"name": "zeros.bin", "payload": payload, "usize": 10 * GiB,
                             "crc": 0}))
    r = cli_in(proj, "pull", NAME)
    assert r.exit_code == 1
    line = assert_one_error_line(r.stderr, NAME, "zeros.bin")
    assert "more than deflate can encode" in line
    assert_nothing_kept(proj)


def test_a_bomb_larger_than_the_free_space_is_refused_before_writing(project):
    """Honest headers, 64 MiB of zeros in 64 KB, and a disk with 8 MB free: the pull says
    so at once instead of filling the disk."""
    proj, _ = project
    crc = 0
    for _ in range(64):
        crc = zlib.crc32(bytes(1 << 20), crc)
    plant(project, hand_zip({"name": "a.txt", "payload": b"hello", "method": 0, "usize": 5,
                             "crc": zlib.crc32(b"hello")},
                            {"name": "zeros.bin", "payload": _deflate_zeros(64),
                             "usize": 64 << 20, "crc": crc}))
    with small_tmpfs(proj.results, "8m"):
        r = cli_in(proj, "pull", NAME)
        left = tree(proj.results)
    assert r.exit_code == 1
    line = assert_one_error_line(r.stderr, NAME, "no space left")
    assert "needs 67.1 MB" in line  # said before writing, from the declared sizes
    assert not any(p.startswith(NAME[:22]) or p.startswith(".resutil/tmp/") for p in left)


def test_a_member_that_inflates_past_its_declared_size_is_cut_off(project):
    """1 KB declared, 64 MiB inside, on a disk with 8 MB free: extraction stops at the
    declared size (the disk never fills) and names the member."""
    proj, _ = project
    plant(project, hand_zip({"name": "small.txt", "payload": _deflate_zeros(64),
                             "usize": 1000, "crc": zlib.crc32(bytes(1000))}))
    with small_tmpfs(proj.results, "8m"):
        r = cli_in(proj, "pull", NAME)
        left = tree(proj.results)
    assert r.exit_code == 1
    line = assert_one_error_line(r.stderr, NAME, "small.txt")
    assert "no space left" not in line
    assert not any(p.startswith(NAME[:22]) or p.startswith(".resutil/tmp/") for p in left)


def test_a_small_member_that_lies_is_never_inflated_whole_in_memory(tmp_path, local_settings):
    """The same lie in a small member pulled from a file: 900 MiB never sit in memory."""
    import subprocess

    from .helpers import REPO

    proj = make_project(tmp_path, local_settings)
    storage = backend_class("local")(local_settings)
    plant((proj, storage), hand_zip({"name": "small.txt", "payload": _deflate_zeros(900),
                                     "usize": 1000, "crc": zlib.crc32(bytes(1000))}))
    # The peak resident size of the pull's own process (VmHWM; ru_maxrss would count the
    # test process it was forked from).
    code = ("import sys\nfrom resutil.cli import cli\ntry:\n    cli(sys.argv[1:])\nfinally:\n"
            "    hwm = [l for l in open('/proc/self/status') if l.startswith('VmHWM:')]\n"
            "    print(hwm[0].split()[1], file=sys.stderr)")
    r = subprocess.run([sys.executable, "-c", code, "pull", NAME], cwd=proj.root,
                       capture_output=True, text=True, timeout=120,
                       env={**os.environ, "PYTHONPATH": str(REPO)})
    *lines, peak = r.stderr.strip().splitlines()
    assert r.returncode == 1, r.stderr
    assert_one_error_line("\n".join(lines), NAME, "small.txt")
    assert int(peak) < 400 << 10, f"the pull used {int(peak) >> 10} MB"


# -- (b) CRCs are checked on every pull path ----------------------------------------------------
def test_a_member_with_a_bad_crc_is_refused_even_when_the_sidecar_hash_matches(project):
    proj, _ = project
    data = os.urandom(3 << 20)  # large and stored: the path that relied on the hash alone
    plant(project, hand_zip({"name": "ok.txt", "payload": b"fine\n", "method": 0, "usize": 5,
                             "crc": zlib.crc32(b"fine\n")},
                            {"name": "weights.bin", "payload": data, "method": 0,
                             "usize": len(data), "crc": zlib.crc32(data) ^ 1}))
    r = cli_in(proj, "pull", NAME)
    assert r.exit_code == 1
    line = assert_one_error_line(r.stderr, NAME, "weights.bin")
    assert "crc" in line.lower()
    assert_nothing_kept(proj)


# -- (c) metadata read from an archive is size-capped -------------------------------------------
def test_show_refuses_a_huge_metadata_file_in_a_small_archive(project):
    """An archive without sidecar (as 0.1.x pushed them) whose resutil-exp.yaml is 64 MiB
    of blanks in 64 KB: show reads at most 16 MiB of it and says why it stops."""
    proj, _ = project
    c = zlib.compressobj(9, zlib.DEFLATED, -15)
    blanks = c.compress(b" " * (64 << 20)) + c.flush()
    crc = zlib.crc32(b" " * (64 << 20))
    plant(project, hand_zip({"name": "resutil-exp.yaml", "payload": blanks, "usize": 64 << 20,
                             "crc": crc}), sidecar=False)
    r = cli_in(proj, "show", NAME)
    assert r.exit_code == 1
    assert_one_error_line(r.stderr, NAME, "resutil-exp.yaml", "16 MiB")


def test_show_still_reads_a_0_1_x_archive_with_a_long_manifest(project):
    """The cap counts only what comes before the manifest: an experiment of many files
    (a metadata file far above the cap) still shows."""
    proj, _ = project
    head = b"args: train.py\nresult_dir: results/x\ndependency: []\n"
    manifest = b"manifest:\n  files:\n" + b"".join(
        b'    "f%07d.bin": [1, \'00\']\n' % i for i in range(700_000))
    text = head + manifest
    plant(project, hand_zip({"name": "resutil-exp.yaml", "payload": zlib.compress(text, 1)[2:-4],
                             "usize": len(text), "crc": zlib.crc32(text)}), sidecar=False)
    assert len(text) > 16 << 20
    r = cli_in(proj, "show", "--json", NAME)
    assert r.exit_code == 0, r.stderr
    assert '"args": "train.py"' in r.stdout


# -- (d) verify reports damage of any kind in one line ------------------------------------------
def test_verify_reports_a_damaged_header_in_one_line(project):
    proj, storage = project
    exp = make_exp(proj, "v", {"a.txt": "alpha\n" * 100, "b.txt": "beta\n" * 100})
    r = cli_in(proj, "push", exp.name)
    assert r.exit_code == 0, r.stderr
    data = bytearray(storage.read_bytes(proj.name, exp.name + ".zip"))
    at = data.index(b"b.txt")  # the member's name in its local header
    data[at] = 0xFF  # not UTF-8, though the header says its name is
    storage.write_bytes(proj.name, exp.name + ".zip", bytes(data))
    r = cli_in(proj, "verify", "--remote", exp.name)
    assert r.exit_code == 1
    line = assert_one_error_line(r.stderr, exp.name, "does not match its recorded hash")
    assert "damaged zip structure" in line


def test_a_damaged_central_directory_is_a_hash_mismatch_on_pull(project):
    """Bytes no CRC covers (the central directory) are still checked: by the hash its
    sidecar recorded for that version of the archive (bit rot on the share, say)."""
    proj, storage = project
    exp = make_exp(proj, "h", {"a.txt": "alpha\n" * 100})
    assert cli_in(proj, "push", exp.name).exit_code == 0
    data = bytearray(storage.read_bytes(proj.name, exp.name + ".zip"))
    pushed_hash = xxhash.xxh3_128(bytes(data)).hexdigest()
    data[data.rindex(b"PK\x01\x02") + 12] ^= 0x01  # the modification time, central only
    plant(project, bytes(data), name=exp.name, recorded_hash=pushed_hash)
    import shutil

    shutil.rmtree(exp)
    r = cli_in(proj, "pull", exp.name)
    assert r.exit_code == 1
    assert_one_error_line(r.stderr, exp.name, "does not match its recorded hash")
    assert not exp.exists()


if sys.platform != "linux":  # pragma: no cover
    pytestmark = pytest.mark.skip("small_tmpfs and the memory figure need Linux")
