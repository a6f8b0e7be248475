"""Box-specific behaviour: sign-in flows, paging, retries, faults and the messages users see.

Everything runs the real SDK (box_sdk_gen) against tests/servers/fake_box.py over HTTP.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import json
import os
from concurrent.futures import ThreadPoolExecutor

import pytest

from resutil.errors import (
    ConfigError,
    StorageError,
    StorageNotFound,
    StoragePermission,
    StorageUnavailable,
)
from resutil.storage import StorageSettings, backend_class
from tests.backend_box import (
    CCG_CLIENT_ID,
    CCG_SECRET,
    ENTERPRISE_ID,
    write_box_config,
)
from tests.helpers import Recorder, assert_one_line, big_file, closed_port

pytest.importorskip("box_sdk_gen", reason="boxsdk is not installed (pip install 'resutil[box]')")

MiB = 1024 * 1024


def make(settings: StorageSettings, **changes):
    """A BoxStorage for ``settings`` with some storage_config values changed (None drops)."""
    values = {k: v for k, v in {**settings.values, **changes}.items() if v is not None}
    return backend_class("box")(dataclasses.replace(settings, values=values))


CHUNKED_MIB = 21  # large enough for a chunked upload session (>= 20 MiB)


def changed_copy(src, dest):
    """``src`` with its last bytes changed: a new version sharing all but the last part."""
    data = bytearray(src.read_bytes())
    data[-10:] = b"new ending"
    dest.write_bytes(data)
    return dest


# -- sign-in flows ----------------------------------------------------------------------------
def test_client_credentials_from_env_round_trip(box_fake, box_settings, monkeypatch):
    monkeypatch.setenv("BOX_CLIENT_ID", CCG_CLIENT_ID)
    monkeypatch.setenv("BOX_CLIENT_SECRET", CCG_SECRET)
    monkeypatch.setenv("BOX_ENTERPRISE_ID", ENTERPRISE_ID)
    tokens = box_fake.count("POST", "/oauth2/token")
    storage = make(box_settings, key_file_path=None)
    storage.write_bytes("Proj", "a.zip", b"ccg")
    storage.rename("Proj", "a.zip", "b.zip")
    assert [(o.name, o.size) for o in storage.list("Proj")] == [("b.zip", 3)]
    assert storage.read_bytes("Proj", "b.zip") == b"ccg"
    storage.delete("Proj", "b.zip")
    assert storage.list("Proj") == []
    assert box_fake.count("POST", "/oauth2/token") == tokens + 1


def test_client_credentials_incomplete_env(box_settings, monkeypatch):
    monkeypatch.setenv("BOX_CLIENT_ID", CCG_CLIENT_ID)
    storage = make(box_settings, key_file_path=None)
    with pytest.raises(ConfigError) as err:
        storage.list("Proj")
    assert "BOX_CLIENT_SECRET" in str(err.value) and "BOX_ENTERPRISE_ID" in str(err.value)


def test_no_credentials_at_all(box_settings):
    with pytest.raises(ConfigError) as err:
        make(box_settings, key_file_path=None).list("Proj")
    text = assert_one_line(err)
    assert "key_file_path" in text and "BOX_CLIENT_ID" in text and "BOX_DEVELOPER_TOKEN" in text


def test_developer_token_round_trip_and_expiry(box_fake, box_settings, monkeypatch):
    box_fake.add_developer_token("dev-token-1")
    monkeypatch.setenv("BOX_DEVELOPER_TOKEN", "dev-token-1")
    storage = make(box_settings, key_file_path=None)
    storage.write_bytes("Proj", "a.zip", b"dev")
    assert storage.read_bytes("Proj", "a.zip") == b"dev"
    box_fake.developer_tokens.discard("dev-token-1")
    with pytest.raises(StoragePermission) as err:
        storage.list("Proj")
    assert "developer token (BOX_DEVELOPER_TOKEN) has expired" in assert_one_line(err)


def test_token_refreshed_after_401(box_fake, box_settings):
    storage = make(box_settings)
    storage.write_bytes("Proj", "a.zip", b"x")
    tokens = box_fake.count("POST", "/oauth2/token")
    box_fake.fail_next(401)
    assert [o.name for o in storage.list("Proj")] == ["a.zip"]
    box_fake.expire_tokens()
    assert storage.read_bytes("Proj", "a.zip") == b"x"
    assert box_fake.count("POST", "/oauth2/token") == tokens + 2


# -- config errors ----------------------------------------------------------------------------
@pytest.mark.parametrize("case, expected", [
    ("missing", "does not exist"),
    ("not_json", "is not valid JSON (line 1)"),
    ("wrong_shape", "is not a Box JWT config.json (missing: boxAppSettings.appAuth.publicKeyID"),
    ("oauth_client_json", "missing: boxAppSettings.clientID"),
])
def test_bad_key_file(box_settings, tmp_path, case, expected):
    path = tmp_path / "bad.json"
    if case == "not_json":
        path.write_text("clientID: nope\n")
    elif case == "wrong_shape":
        path.write_text(json.dumps({"boxAppSettings": {"clientID": "a", "clientSecret": "b",
                                                       "appAuth": {}}, "enterpriseID": "1"}))
    elif case == "oauth_client_json":
        path.write_text(json.dumps({"installed": {"client_id": "x"}}))
    storage = make(box_settings, key_file_path=str(path))  # no error before first use
    with pytest.raises(ConfigError) as err:
        storage.list("Proj")
    text = assert_one_line(err)
    assert f"Box key file {path}" in text and expected in text
    assert "Developer Console" in text


def test_wrong_passphrase(box_settings, box_keypair, tmp_path):
    path = write_box_config(tmp_path / "c.json", box_keypair[0], app_auth={"passphrase": "nope"})
    with pytest.raises(ConfigError) as err:
        make(box_settings, key_file_path=str(path)).write_bytes("Proj", "a.zip", b"x")
    assert "passphrase is wrong" in assert_one_line(err)


def test_bad_folder_id_and_no_network_in_constructor(box_settings):
    with pytest.raises(ConfigError, match="folder_id must be the number"):
        make(box_settings, folder_id="My Folder")
    storage = make(box_settings, folder_id="https://app.box.com/folder/12345",
                   endpoint="http://127.0.0.1:9")
    assert storage.folder_id == "12345" and storage.describe() == "Box folder 12345"


# -- permission and not-found messages ----------------------------------------------------------
def test_wrong_client_secret(box_settings, box_keypair, tmp_path):
    path = write_box_config(tmp_path / "c.json", box_keypair[0], app={"clientSecret": "nope"})
    with pytest.raises(StoragePermission) as err:
        make(box_settings, key_file_path=str(path)).list("Proj")
    assert ("wrong client id/secret or the app is not authorised by the enterprise admin"
            in assert_one_line(err))


def test_unknown_key_id(box_settings, box_keypair, tmp_path):
    path = write_box_config(tmp_path / "c.json", box_keypair[0], app_auth={"publicKeyID": "old"})
    with pytest.raises(StoragePermission) as err:
        make(box_settings, key_file_path=str(path)).list("Proj")
    assert "JWT rejected: check the key id and the machine clock" in assert_one_line(err)


def test_forbidden_names_service_account(box_fake, box_settings):
    from tests.servers.fake_box import SERVICE_LOGIN

    root = box_settings.values["folder_id"]
    box_fake.read_only.add(root)
    storage = make(box_settings)
    assert storage.list("Proj") == []  # a Viewer can read
    with pytest.raises(StoragePermission) as err:
        storage.write_bytes("Proj", "a.zip", b"x")
    text = assert_one_line(err)
    assert text.startswith(f"Box folder {root}: cannot upload Proj/a.zip")
    who = f"the service account {SERVICE_LOGIN}"
    assert f"{who} is not a collaborator (Editor) on folder {root}" in text


def test_root_folder_not_found(box_settings):
    storage = make(box_settings, folder_id="987654321")
    for op in (lambda: storage.list("Proj"), lambda: storage.write_bytes("Proj", "a.zip", b"x")):
        with pytest.raises(StorageNotFound) as err:
            op()
        assert ("Box folder 987654321 not found or not shared with the app's service account"
                in assert_one_line(err))


# -- paging, retries, network -------------------------------------------------------------------
def test_lists_more_than_1000_entries(box_fake, box_settings):
    proj = box_fake.create_folder("Proj", box_settings.values["folder_id"])
    for i in range(2500):
        box_fake.put_file(proj, f"e{i:04d}.zip", b"z" * (i % 7))
    listed = make(box_settings).list("Proj")
    assert len(listed) == 2500 and len({o.name for o in listed}) == 2500
    assert {o.size for o in listed} == set(range(7))
    assert box_fake.count("GET", f"/2.0/folders/{proj}/items") == 3


def test_503_once_is_retried_and_progress_counts_once(box_fake, box_settings, tmp_path):
    storage = make(box_settings)
    src = tmp_path / "a.zip"
    src.write_bytes(os.urandom(300_000))
    box_fake.fail_next(503, match="/api/2.0/files/content")
    rec = Recorder()
    storage.upload(src, "Proj", "a.zip", rec)
    assert rec.total == rec.advanced == 300_000
    assert storage.read_bytes("Proj", "a.zip") == src.read_bytes()


def test_persistent_503_reports_unavailable(box_fake, box_settings):
    storage = make(box_settings)
    storage.list("Proj")
    box_fake.fail_next(503, count=100, match="/items")
    rec = Recorder()
    with pytest.raises(StorageUnavailable) as err:
        storage._call(lambda: storage._list("Proj"), "list", "Proj", rec)
    text = assert_one_line(err)
    assert text.startswith(f"Box folder {storage.folder_id}: cannot list Proj: Box answered 503")
    assert "try again later" in text
    assert len(rec.messages) == box_settings.retries and "retrying" in rec.messages[0]


@pytest.mark.slow
@pytest.mark.timeout(40)  # a hang guard: the SDKs' own defaults would wait minutes
def test_network_down_reports_quickly(box_settings):
    port = closed_port()
    settings = dataclasses.replace(box_settings, retry_wait=0.5)  # the default backoff
    storage = make(settings, endpoint=f"http://127.0.0.1:{port}")
    with pytest.raises(StorageUnavailable) as err:
        storage.list("Proj")
    assert f"cannot reach 127.0.0.1:{port} (connection refused)" in assert_one_line(err)


def test_dropped_download_is_retried(box_fake, box_settings):
    storage = make(box_settings)
    storage.write_bytes("Proj", "a.zip", b"0123456789" * 1000)
    box_fake.drop_next("/dl/")
    assert storage.read_bytes("Proj", "a.zip") == b"0123456789" * 1000


# -- chunked uploads, versions, races ----------------------------------------------------------
@pytest.mark.slow
def test_dropped_part_and_202_commit_are_retried(box_fake, box_settings, tmp_path):
    storage = make(box_settings)
    src = big_file(tmp_path / "big.bin", CHUNKED_MIB)
    box_fake.drop_next("/upload_sessions/")  # the first part's connection is cut halfway
    box_fake.commit_202_once = True
    rec = Recorder()
    puts, commits = box_fake.count("PUT", "/upload_sessions/"), box_fake.count("POST", "/commit$")
    storage.upload(src, "Proj", "big.zip", rec)
    assert rec.advanced == src.stat().st_size
    assert box_fake.count("PUT", "/upload_sessions/") - puts == 3 + 1  # 3 parts, one sent twice
    assert box_fake.count("POST", "/commit$") - commits == 2  # 202 + Retry-After, then 201
    assert storage.read_bytes("Proj", "big.zip") == src.read_bytes()
    (info,) = storage.list("Proj")
    assert info.version == hashlib.sha1(src.read_bytes()).hexdigest()


@pytest.mark.slow
def test_failed_chunked_upload_keeps_old_version(box_fake, box_settings, tmp_path):
    storage = make(box_settings)
    v1 = big_file(tmp_path / "v1.bin", CHUNKED_MIB)
    v2 = changed_copy(v1, tmp_path / "v2.bin")
    box_fake.drop_next("/upload_sessions/", count=1000)
    with pytest.raises(StorageUnavailable) as err:
        storage.upload(v1, "Proj", "big.zip")
    assert "cannot reach" in assert_one_line(err)
    assert storage.list("Proj") == []  # nothing half-uploaded is visible

    box_fake.clear_faults()
    storage.upload(v1, "Proj", "big.zip")
    (info,) = storage.list("Proj")
    box_fake.drop_next("/upload_sessions/", count=1000)
    with pytest.raises(StorageUnavailable):
        storage.upload(v2, "Proj", "big.zip")
    assert storage.list("Proj") == [info]
    assert storage.read_bytes("Proj", "big.zip") == v1.read_bytes()

    box_fake.clear_faults()
    parts_before = box_fake.count("PUT", "/upload_sessions/")
    storage.upload(v2, "Proj", "big.zip")  # a new version of the same Box file
    assert storage.read_bytes("Proj", "big.zip") == v2.read_bytes()
    (proj,) = box_fake.children(box_settings.values["folder_id"])
    (f,) = box_fake.children(proj.id)
    assert [len(v) for v in f.versions] == [v1.stat().st_size, v2.stat().st_size]
    # the plan endpoint dedups parts equal to the old version: only changed parts are sent
    assert box_fake.count("PUT", "/upload_sessions/") - parts_before == 1


def test_listing_lag_409_races_are_absorbed(box_fake, box_settings):
    root = box_settings.values["folder_id"]
    make(box_settings).write_bytes("Proj", "a.zip", b"old")
    box_fake.listing_lag(2)  # a fresh client sees neither the folder nor the file
    storage = make(box_settings)
    storage.write_bytes("Proj", "a.zip", b"new")  # 409 on create folder, 409 on upload
    assert [f.name for f in box_fake.children(root)] == ["Proj"]
    (f,) = box_fake.children(box_fake.children(root)[0].id)
    assert f.versions == [b"old", b"new"]
    assert storage.read_bytes("Proj", "a.zip") == b"new"


def test_exclusive_create_whose_answer_was_lost_is_still_ours(box_fake, box_settings):
    """The upload is done but its answer is lost: the SDK sends it again and gets 409; the
    file named in the 409 is read back without a listing (which may lag) and is ours."""
    storage = make(box_settings)
    storage.write_bytes("Proj.resutil", "other.json", b"{}")
    box_fake.lose_next("/api/2.0/files/content")
    box_fake.listing_lag(5)
    uploads = box_fake.count("POST", "/files/content$")
    assert storage.create_exclusive("Proj.resutil", "x.claim", b"run-A")
    assert box_fake.count("POST", "/files/content$") - uploads == 2
    box_fake.clear_faults()
    (meta,) = [f for f in box_fake.children(box_settings.values["folder_id"])]
    assert {f.name: f.versions for f in box_fake.children(meta.id)} == {
        "other.json": [b"{}"], "x.claim": [b"run-A"]}
    assert not make(box_settings).create_exclusive("Proj.resutil", "x.claim", b"run-B")


def test_exclusive_create_never_adds_a_version(box_fake, box_settings):
    """A name that is in use is not overwritten, not even when this client believes the
    folder lacks it (a listing from before another client created it)."""
    a, b = make(box_settings), make(box_settings)
    a.list("Proj.resutil")
    b.write_bytes("Proj.resutil", "x.claim", b"run-B")
    assert not a.create_exclusive("Proj.resutil", "x.claim", b"run-A")
    assert a.read_bytes("Proj.resutil", "x.claim") == b"run-B"
    (meta,) = box_fake.children(box_settings.values["folder_id"])
    (f,) = box_fake.children(meta.id)
    assert f.versions == [b"run-B"]


def test_exclusive_create_with_a_folder_in_the_way(box_fake, box_settings):
    storage = make(box_settings)
    storage.write_bytes("Proj.resutil", "other.json", b"{}")
    (meta,) = box_fake.children(box_settings.values["folder_id"])
    box_fake.create_folder("x.claim", meta.id)
    with pytest.raises(StorageError, match="a folder with that name is in the way"):
        storage.create_exclusive("Proj.resutil", "x.claim", b"run-A")


def test_rename_replaces_existing_target(box_settings):
    storage = make(box_settings)
    storage.write_bytes("Proj", "a.zip", b"aaa")
    storage.write_bytes("Proj", "b.zip", b"bb")
    storage.rename("Proj", "a.zip", "b.zip")
    assert [(o.name, o.size) for o in storage.list("Proj")] == [("b.zip", 3)]
    assert storage.read_bytes("Proj", "b.zip") == b"aaa"


def test_stale_cache_after_another_client_deletes(box_settings):
    a, b = make(box_settings), make(box_settings)
    a.write_bytes("Proj", "x.zip", b"1")
    assert b.read_bytes("Proj", "x.zip") == b"1"  # b remembers x.zip's id
    a.delete("Proj", "x.zip")
    a.write_bytes("Proj", "x.zip", b"2")  # a different Box file now
    assert b.read_bytes("Proj", "x.zip") == b"2"
    a.delete("Proj", "x.zip")
    with pytest.raises(StorageNotFound):
        b.delete("Proj", "x.zip")


def test_parallel_uploads_into_a_new_folder(box_fake, box_settings):
    """Threads (and processes) race to create the folder; the losers reuse the winner's."""
    root = box_settings.values["folder_id"]
    shared, other = make(box_settings), make(box_settings)
    jobs = [(shared if i % 2 else other, f"f{i}.zip") for i in range(8)]
    with ThreadPoolExecutor(max_workers=shared.max_workers) as pool:
        list(pool.map(lambda job: job[0].write_bytes("Proj", job[1], job[1].encode()), jobs))
    assert [f.name for f in box_fake.children(root)] == ["Proj"]
    assert sorted(o.name for o in shared.list("Proj")) == sorted(name for _, name in jobs)


def test_upload_with_a_stale_listing(box_fake, box_settings):
    a, b = make(box_settings), make(box_settings)
    a.write_bytes("Proj", "x.zip", b"1")
    b.list("Proj")  # b remembers x.zip ...
    a.delete("Proj", "x.zip")  # ... which another client deletes
    b.write_bytes("Proj", "x.zip", b"2")  # new version answers 404: upload as a new file
    a.write_bytes("Proj", "y.zip", b"3")  # b believes y.zip is absent
    b.write_bytes("Proj", "y.zip", b"4")  # new file answers 409: version the existing one
    (proj,) = box_fake.children(box_settings.values["folder_id"])
    assert {f.name: f.versions for f in box_fake.children(proj.id)} == {
        "x.zip": [b"2"], "y.zip": [b"3", b"4"]}
    assert a.read_bytes("Proj", "y.zip") == b"4"


@pytest.mark.slow
def test_chunked_upload_reads_ahead_and_round_trips(box_fake, box_settings, tmp_path):
    """A thread reads and hashes the parts ahead of the sends: every part's Digest and the
    whole file's (both checked by the fake) stay right, and the file arrives byte for byte."""
    storage = make(box_settings)
    src = big_file(tmp_path / "big.bin", 29)  # 4 parts of 8 MiB, the last one short
    rec = Recorder()
    puts = box_fake.count("PUT", "/upload_sessions/")
    listed = box_fake.count("GET", r"/upload_sessions/\w+/parts$")
    storage.upload(src, "Proj", "big.zip", rec)
    assert rec.total == rec.advanced == src.stat().st_size
    assert box_fake.count("PUT", "/upload_sessions/") - puts == 4
    assert box_fake.count("GET", r"/upload_sessions/\w+/parts$") == listed  # the commit checks
    assert storage.read_bytes("Proj", "big.zip") == src.read_bytes()
    assert [o.size for o in storage.list("Proj")] == [src.stat().st_size]


@pytest.mark.slow
def test_failed_commit_aborts_the_session(box_fake, box_settings, tmp_path):
    storage = make(box_settings)
    src = big_file(tmp_path / "big.bin", CHUNKED_MIB)
    box_fake.fail_next(400, match="/commit", code="bad_request", message="Injected failure")
    aborts = box_fake.count("DELETE", "/upload_sessions/")
    with pytest.raises(StorageError) as err:
        storage.upload(src, "Proj", "big.zip")
    assert "cannot upload Proj/big.zip: Box answered 400" in assert_one_line(err)
    assert storage.list("Proj") == []
    assert box_fake.count("DELETE", "/upload_sessions/") == aborts + 1
    (proj,) = box_fake.children(box_settings.values["folder_id"])
    assert not [s for s in box_fake.sessions.values() if s.folder_id == proj.id]


def test_part_reader_digests_and_a_file_that_changes_size(tmp_path):
    from resutil.storage.box import _PartReader, _SizeChanged

    def b64(digest):
        return base64.b64encode(digest).decode()

    data = os.urandom(2 * MiB + 123)
    path = tmp_path / "f.bin"
    path.write_bytes(data)
    reader = _PartReader(path, len(data), MiB, sha512=True)
    parts = []
    while (item := reader.next()) is not None:
        parts.append(item)
    reader.close()
    assert [(offset, len(d)) for offset, d, _, _ in parts] == [(0, MiB), (MiB, MiB),
                                                                (2 * MiB, 123)]
    for offset, d, sha1, sha512 in parts:
        assert d == data[offset:offset + len(d)]
        assert sha1 == b64(hashlib.sha1(d).digest())
        assert sha512 == hashlib.sha512(d).hexdigest()
    assert reader.file_sha1 == b64(hashlib.sha1(data).digest())
    for size in (len(data) + 1, len(data) - 1):  # shrank / grew since its size was taken
        reader = _PartReader(path, size, MiB, sha512=False)
        with pytest.raises(_SizeChanged):
            while reader.next() is not None:
                pass
        reader.close()
    reader = _PartReader(path, len(data), MiB, sha512=False)  # given up after one part
    assert reader.next()[0] == 0
    reader.close()


# -- ranged reads -----------------------------------------------------------------------------
def test_a_range_answered_whole_is_refused(box_fake, box_settings):
    """A server or proxy that ignores ``Range`` and sends the whole file: the read stops as
    soon as more than the range arrived, in one line."""
    storage = make(box_settings)
    storage.write_bytes("Proj", "a.zip", bytes(range(256)) * 100)
    assert storage.read_range("Proj", "a.zip", 10, 5) == bytes(range(10, 15))
    box_fake.ignore_ranges = True
    with pytest.raises(StorageError) as e:
        storage.read_range("Proj", "a.zip", 10, 5)
    assert_one_line(e, "ignored the byte range")


def test_a_member_damaged_in_transit_is_refused(box_fake, box_settings, tmp_path):
    """Box keeps the file's SHA-1 (its version), so the sidecar still pairs: the member's
    recorded CRC and hash catch a byte damaged on the way."""
    from resutil.errors import ArchiveError
    from resutil.partial import open_file
    from resutil.project import Project
    from tests.helpers import cli_ok, make_exp, make_project

    a = make_project(tmp_path / "a", box_settings)
    data = os.urandom(200_000)
    folder = make_exp(a, "run", files={"a.txt": "a\n", "middle.bin": data, "z.txt": "z\n"})
    cli_ok("push", folder.name, cwd=a.root)
    project = Project.load(make_project(tmp_path / "b", box_settings).root)  # not local there
    assert open_file(project, folder.name, "middle.bin").read() == data
    box_fake.corrupt_next(folder.name + ".zip")  # flips the archive's middle byte
    with pytest.raises(ArchiveError) as e:
        open_file(project, folder.name, "middle.bin").read()
    assert_one_line(e, "middle.bin", "damaged")
    assert open_file(project, folder.name, "middle.bin").read() == data
