"""The storage contract, written once and run against every backend."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from resutil.errors import StorageChanged, StorageNotFound
from resutil.storage import backend_class

from .helpers import big_file


@pytest.fixture
def storage(storage_settings):
    return backend_class(storage_settings.storage_type)(storage_settings)


def test_empty_folder_lists_nothing(storage):
    assert storage.list("Proj") == []
    assert storage.stat("Proj", "a.zip") is None


def test_write_read_list_delete(storage):
    storage.write_bytes("Proj", "a.zip", b"hello")
    storage.write_bytes("Proj", "b.zip", b"world!")
    storage.write_bytes("Proj.resutil", "a.json", b"{}")
    listed = {o.name: o.size for o in storage.list("Proj")}
    assert listed == {"a.zip": 5, "b.zip": 6}
    assert storage.read_bytes("Proj", "b.zip") == b"world!"
    assert storage.stat("Proj", "a.zip").size == 5
    storage.delete("Proj", "a.zip")
    assert [o.name for o in storage.list("Proj")] == ["b.zip"]
    assert [o.name for o in storage.list("Proj.resutil")] == ["a.json"]


def test_overwrite_replaces_content(storage):
    storage.write_bytes("Proj", "a.zip", b"one")
    storage.write_bytes("Proj", "a.zip", b"second version")
    assert [o.name for o in storage.list("Proj")] == ["a.zip"]
    assert storage.read_bytes("Proj", "a.zip") == b"second version"


def test_rename_keeps_content(storage):
    storage.write_bytes("Proj", "old.zip", b"data")
    storage.rename("Proj", "old.zip", "new.zip")
    assert [o.name for o in storage.list("Proj")] == ["new.zip"]
    assert storage.read_bytes("Proj", "new.zip") == b"data"


def test_missing_objects_raise_not_found(storage, tmp_path):
    with pytest.raises(StorageNotFound):
        storage.download("Proj", "nope.zip", tmp_path / "x")
    with pytest.raises(StorageNotFound):
        storage.delete("Proj", "nope.zip")
    with pytest.raises(StorageNotFound):
        storage.rename("Proj", "nope.zip", "other.zip")


def test_failed_staged_upload_stores_nothing(storage):
    with pytest.raises(RuntimeError):
        with storage.staged_upload("Proj", "a.zip") as staged:
            staged.path.write_bytes(b"half")
            raise RuntimeError("crash mid-push")
    assert storage.list("Proj") == []


@pytest.mark.slow
def test_large_file_round_trip(storage, tmp_path, big_file_mb):
    """Big enough to take the SDK's chunked/resumable path."""
    src = big_file(tmp_path / "big.bin", big_file_mb, seed=0)
    seen = []

    class Cb:
        def set_total(self, total):
            seen.append(("total", total))

        def advance(self, n):
            seen.append(("adv", n))

        def message(self, text):
            pass

    storage.upload(src, "Proj", "big.zip", Cb())
    assert storage.stat("Proj", "big.zip").size == src.stat().st_size
    dest = tmp_path / "back.bin"
    storage.download("Proj", "big.zip", dest)
    assert dest.read_bytes() == src.read_bytes()
    assert sum(n for kind, n in seen if kind == "adv") == src.stat().st_size


def test_check_probe_leaves_nothing(storage):
    storage.check("Proj.resutil")
    assert storage.list("Proj.resutil") == []


def test_version_changes_when_content_is_replaced(storage):
    first = storage.write_bytes("Proj", "a.zip", b"one")
    listed = storage.stat("Proj", "a.zip")
    assert listed.version and first is not None and first.version == listed.version
    second = storage.write_bytes("Proj", "a.zip", b"two, longer")
    assert second.version == storage.stat("Proj", "a.zip").version != first.version


def test_create_exclusive_only_once(storage):
    assert storage.create_exclusive("Proj.resutil", "x.claim", b"run-1")
    assert not storage.create_exclusive("Proj.resutil", "x.claim", b"run-2")
    # A retry of the call that stored it (its answer was lost) still says it is ours.
    assert storage.create_exclusive("Proj.resutil", "x.claim", b"run-1")
    assert storage.read_bytes("Proj.resutil", "x.claim") == b"run-1"


def test_create_exclusive_has_one_winner_among_concurrent_writers(storage, storage_settings):
    """Two writers (clients of their own, as on two machines) create the same name at the
    same moment: exactly one is told it did, and the object holds that one's data."""
    cls = type(storage)
    writers = [cls(storage_settings), cls(storage_settings)]
    names = []
    for n in range(8):
        name = f"race-{n}.claim"
        names.append(name)
        start = threading.Barrier(2)

        def create(i, name=name, start=start, n=n):
            start.wait()
            return writers[i].create_exclusive("Proj.resutil", name, f"run-{i}-{n}".encode())

        with ThreadPoolExecutor(2) as pool:
            results = list(pool.map(create, range(2)))
        assert results.count(True) == 1, results
        winner = results.index(True)
        for w in writers:
            assert w.read_bytes("Proj.resutil", name) == f"run-{winner}-{n}".encode()
    assert sorted(o.name for o in storage.list("Proj.resutil")) == names


@pytest.mark.slow
def test_upload_reports_the_stored_version_of_a_large_file(storage, tmp_path, big_file_mb):
    """The chunked/resumable paths answer with what they stored: the version a listing
    shows, for a new object and for new content under the same name."""
    src = big_file(tmp_path / "big.bin", big_file_mb, seed=0)
    first = storage.upload(src, "Proj", "big.zip")
    listed = storage.stat("Proj", "big.zip")
    assert first is not None and first.version is not None
    assert (first.name, first.size, first.version) == (listed.name, listed.size, listed.version)
    other = big_file(tmp_path / "other.bin", big_file_mb, seed=1)
    with storage.staged_upload("Proj", "big.zip") as staged:
        staged.path.write_bytes(other.read_bytes())
    second = staged.stored
    listed = storage.stat("Proj", "big.zip")
    assert second is not None and second.version == listed.version != first.version
    assert second.size == listed.size == other.stat().st_size


def test_rename_returns_the_renamed_object(storage):
    storage.write_bytes("Proj", "old.zip", b"data")
    renamed = storage.rename("Proj", "old.zip", "new.zip")
    listed = storage.stat("Proj", "new.zip")
    assert renamed is not None and renamed.version is not None
    assert (renamed.name, renamed.size, renamed.version) == ("new.zip", 4, listed.version)
    assert storage.stat("Proj", "old.zip") is None
    same = storage.rename("Proj", "new.zip", "new.zip")  # a no-op, not a loss
    assert storage.read_bytes("Proj", "new.zip") == b"data"
    assert same is not None and same.version == storage.stat("Proj", "new.zip").version


def test_read_range_reads_those_bytes(storage):
    data = bytes(range(256)) * 40  # 10,240 bytes, every offset distinguishable
    storage.write_bytes("Proj", "a.zip", data)
    version = storage.stat("Proj", "a.zip").version
    assert storage.read_range("Proj", "a.zip", 0, 10) == data[:10]
    assert storage.read_range("Proj", "a.zip", 5000, 1234, version) == data[5000:6234]
    assert storage.read_range("Proj", "a.zip", len(data) - 7, 7) == data[-7:]
    # Past the end: what is there, and nothing at all from the end on.
    assert storage.read_range("Proj", "a.zip", len(data) - 3, 100) == data[-3:]
    assert storage.read_range("Proj", "a.zip", len(data), 10) == b""
    assert storage.read_range("Proj", "a.zip", 17, 0) == b""


def test_read_range_of_a_missing_object_raises_not_found(storage):
    with pytest.raises(StorageNotFound):
        storage.read_range("Proj", "nope.zip", 0, 10)
    storage.write_bytes("Proj", "a.zip", b"x")
    with pytest.raises(StorageNotFound):
        storage.read_range("Proj", "nope.zip", 0, 10)


def test_read_range_of_a_replaced_object(storage):
    """A read for the listed version of an object replaced since: the backends that can
    ask for a version (local inode, GCS generation) refuse; the others read what is there
    now (their callers check what they read against its recorded hash)."""
    storage.write_bytes("Proj", "a.zip", b"first content")
    old = storage.stat("Proj", "a.zip").version
    storage.write_bytes("Proj", "a.zip", b"SECOND CONTENT")
    try:
        got = storage.read_range("Proj", "a.zip", 0, 6, old)
    except StorageChanged:
        assert storage.type_name in ("local", "gcs")
    else:
        assert storage.type_name in ("gdrive", "box") and got == b"SECOND"


@pytest.mark.slow
def test_read_range_inside_a_large_file(storage, tmp_path, big_file_mb):
    """A range deep inside a file stored by the chunked/resumable path."""
    src = big_file(tmp_path / "big.bin", big_file_mb, seed=2)
    storage.upload(src, "Proj", "big.zip")
    data = src.read_bytes()
    at = len(data) - (3 << 20) - 12345
    assert storage.read_range("Proj", "big.zip", at, 1 << 20) == data[at:at + (1 << 20)]
