"""The storage contract, written once and run against every backend."""

from __future__ import annotations

import os

import pytest

from resutil.errors import StorageNotFound
from resutil.storage import backend_class


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


def test_large_file_round_trip(storage, tmp_path, big_file_mb):
    """Big enough to take the SDK's chunked/resumable path."""
    src = tmp_path / "big.bin"
    block = os.urandom(1 << 20)
    with open(src, "wb") as f:
        for i in range(big_file_mb):
            f.write(block[i:] + block[:i])
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
