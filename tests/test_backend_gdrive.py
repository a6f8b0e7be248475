"""Google Drive behaviour beyond the storage contract, against the fake Drive v2 server.

The real pydrive2/oauth2client/googleapiclient stack talks HTTP to tests/servers/fake_drive.py;
faults are injected on the server side only. Assertions are on what a user sees: the error
class and its one-line message.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import socket
import time

import pytest

from resutil.errors import (
    ConfigError,
    StorageNotFound,
    StoragePermission,
    StorageUnavailable,
)
from resutil.storage import backend_class

from .backend_gdrive import gdrive_settings_for, make_service_account_key
from tests.helpers import (
    Recorder,
    assert_one_line,
    at_once,
    big_file,
    cli_fails,
    cli_ok,
    closed_port,
    make_exp,
    make_project,
)

pytest.importorskip("pydrive2", reason="PyDrive2 is not installed (pip install 'resutil[gdrive]')")

pytestmark = pytest.mark.filterwarnings(
    "ignore:sign\\(\\) is deprecated:DeprecationWarning"  # oauth2client on pyOpenSSL
)

FOLDER = "application/vnd.google-apps.folder"


def open_gdrive(settings):
    return backend_class("gdrive")(settings)


@pytest.fixture
def storage(gdrive_settings):
    return open_gdrive(gdrive_settings)


@pytest.fixture
def base(gdrive_settings) -> str:
    return gdrive_settings.values["base_folder_id"]


def folder_id(fake, parent: str, title: str) -> str:
    (found,) = [f for f in fake.children(parent) if f["title"] == title]
    return found["id"]


# -- listing, duplicates, layout -------------------------------------------------------------
def test_lists_more_than_one_page(storage, fake_drive, base):
    proj = fake_drive.create_folder("Proj", base)
    for i in range(1234):
        fake_drive.create_file(f"e{i:04d}.zip", proj, b"x" * (i % 7))
    before = len(fake_drive.requests)
    names = {o.name: o.size for o in storage.list("Proj")}
    assert len(names) == 1234
    assert names["e1233.zip"] == 1233 % 7
    pages = [p for m, p in fake_drive.requests[before:] if m == "GET" and "pageToken=" in p]
    assert pages, "the second page was never requested"


def test_duplicate_titles_list_once_and_upload_replaces_oldest(storage, fake_drive, base):
    old_proj = fake_drive.create_folder("Proj", base, created=1_000_000)
    new_proj = fake_drive.create_folder("Proj", base, created=2_000_000)  # a racing client's
    oldest = fake_drive.create_file("a.zip", old_proj, b"first", created=1_000_001)
    newer = fake_drive.create_file("a.zip", old_proj, b"second!", created=1_000_002)
    fake_drive.create_file("stray.zip", new_proj, b"x")

    assert [(o.name, o.size) for o in storage.list("Proj")] == [("a.zip", 5)]
    assert storage.read_bytes("Proj", "a.zip") == b"first"
    assert storage.stat("Proj", "a.zip").size == 5

    storage.write_bytes("Proj", "a.zip", b"replaced content")
    files = [f for f in fake_drive.children(old_proj) if f["title"] == "a.zip"]
    assert sorted(f["id"] for f in files) == sorted([oldest, newer])  # no third copy
    assert fake_drive.read(oldest) == b"replaced content"
    assert fake_drive.read(newer) == b"second!"
    assert storage.read_bytes("Proj", "a.zip") == b"replaced content"

    storage.delete("Proj", "a.zip")  # every copy goes, so no older one resurfaces
    assert storage.list("Proj") == []


def test_rename_replaces_target_and_shadowed_duplicates(storage, fake_drive, base):
    proj = fake_drive.create_folder("Proj", base)
    fake_drive.create_file("x_20240101T000000_a.zip", proj, b"keep", created=1_000_001)
    fake_drive.create_file("x_20240101T000000_a.zip", proj, b"shadow", created=1_000_002)
    fake_drive.create_file("x_20240101T000000_b.zip", proj, b"old target", created=1_000_003)
    storage.rename("Proj", "x_20240101T000000_a.zip", "x_20240101T000000_b.zip")
    assert [o.name for o in storage.list("Proj")] == ["x_20240101T000000_b.zip"]
    assert storage.read_bytes("Proj", "x_20240101T000000_b.zip") == b"keep"


# -- exclusive create: create, then check ---------------------------------------------------
def _claims(fake, parent: str, title: str = "x.claim") -> list[bytes]:
    """The content of every (untrashed) file of that title, oldest first."""
    files = sorted((f for f in fake.children(parent) if f["title"] == title),
                   key=lambda f: (f["createdDate"], f["id"]))
    return [fake.read(f["id"]) for f in files]


def _meta_folder(storage, fake, base) -> str:
    storage.write_bytes("Proj.resutil", "other.json", b"{}")
    return folder_id(fake, base, "Proj.resutil")


def test_exclusive_create_loses_to_a_file_made_just_before_its_own(storage, fake_drive, base):
    """Another client's file appears between this client's look and its insert: its file is
    the earlier one, so it wins, and this client removes its own."""
    meta = _meta_folder(storage, fake_drive, base)
    fake_drive.before_next("uploadType=multipart",
                           lambda: fake_drive.create_file("x.claim", meta, b"run-B"))
    assert not storage.create_exclusive("Proj.resutil", "x.claim", b"run-A")
    assert _claims(fake_drive, meta) == [b"run-B"]
    assert storage.read_bytes("Proj.resutil", "x.claim") == b"run-B"


def test_exclusive_create_wins_over_a_later_file(storage, fake_drive, base):
    """A file of the same title created after this client's is the loser's to remove: the
    order is Drive's createdDate, not the order of the listing."""
    meta = _meta_folder(storage, fake_drive, base)
    later = time.time() + 3600
    fake_drive.before_next("uploadType=multipart", lambda: fake_drive.create_file(
        "x.claim", meta, b"run-B", created=later))
    assert storage.create_exclusive("Proj.resutil", "x.claim", b"run-A")
    assert _claims(fake_drive, meta) == [b"run-A", b"run-B"]
    assert storage.read_bytes("Proj.resutil", "x.claim") == b"run-A"


def test_exclusive_create_whose_answer_was_lost_is_still_ours(storage, fake_drive, base):
    meta = _meta_folder(storage, fake_drive, base)
    fake_drive.lose_next_answer("uploadType=multipart")
    assert storage.create_exclusive("Proj.resutil", "x.claim", b"run-A")
    assert _claims(fake_drive, meta) == [b"run-A"]  # a resent insert's copy was removed


def test_exclusive_create_loser_whose_clean_up_failed_removes_its_file_later(
        storage, fake_drive, base):
    meta = _meta_folder(storage, fake_drive, base)
    fake_drive.before_next("uploadType=multipart",
                           lambda: fake_drive.create_file("x.claim", meta, b"run-B"))
    fake_drive.fail_next(503, "backendError", match="DELETE /drive/v2/files/")
    assert not storage.create_exclusive("Proj.resutil", "x.claim", b"run-A")
    assert _claims(fake_drive, meta) == [b"run-B"]


def test_exclusive_create_in_a_folder_removed_meanwhile(storage, fake_drive, base):
    meta = _meta_folder(storage, fake_drive, base)
    fake_drive.remove(meta)  # someone, in the web UI
    assert storage.create_exclusive("Proj.resutil", "x.claim", b"run-A")
    assert _claims(fake_drive, folder_id(fake_drive, base, "Proj.resutil")) == [b"run-A"]


def test_project_folder_removed_meanwhile_is_recreated(storage, fake_drive, base):
    storage.write_bytes("Proj", "a.zip", b"x")
    fake_drive.remove(folder_id(fake_drive, base, "Proj"))  # someone, in the web UI
    assert storage.list("Proj") == []
    cb = Recorder()
    storage.upload(_small(storage), "Proj", "b.zip", cb)
    assert any("starting over" in m for m in cb.messages)
    assert [o.name for o in storage.list("Proj")] == ["b.zip"]


def test_empty_file_round_trip(storage, tmp_path):
    storage.write_bytes("Proj", "empty.zip", b"")
    assert storage.stat("Proj", "empty.zip").size == 0
    assert storage.read_bytes("Proj", "empty.zip") == b""


def test_expired_upload_session_starts_over(storage, fake_drive, tmp_path):
    src = big_file(tmp_path / "big.bin", 20)
    fake_drive.fail_next(404, "notFound", "Upload session expired", match="upload_id=")
    cb = Recorder()
    storage.upload(src, "Proj", "big.zip", cb)
    assert any("starting over" in m for m in cb.messages)
    assert storage.read_bytes("Proj", "big.zip") == src.read_bytes()
    assert [o.name for o in storage.list("Proj")] == ["big.zip"]


def test_titles_with_quotes_and_backslashes(storage):
    name = "it's a \\ test.zip"
    storage.write_bytes("Bob's proj", name, b"quoted")
    assert [o.name for o in storage.list("Bob's proj")] == [name]
    assert storage.read_bytes("Bob's proj", name) == b"quoted"


def test_layout_is_what_resutil_01_reads(storage, fake_drive, base):
    """<base>/<project>/<name>.zip; sidecars live in a sibling folder, not in <project>."""
    storage.write_bytes("MyProj", "aapiyl_20240706T064339_exp.zip", b"zip")
    storage.write_bytes("MyProj.resutil", "aapiyl_20240706T064339_exp.json", b"{}")
    folders = {f["title"]: f for f in fake_drive.children(base)}
    assert set(folders) == {"MyProj", "MyProj.resutil"}
    assert all(f["mimeType"] == FOLDER for f in folders.values())
    # 0.1.x: find the project folder by title, then list "'<id>' in parents and trashed = false"
    (proj,) = fake_drive.query(f"title = 'MyProj' and mimeType = '{FOLDER}'")
    listed = fake_drive.query(f"'{proj['id']}' in parents and trashed = false")
    assert [f["title"] for f in listed] == ["aapiyl_20240706T064339_exp.zip"]
    assert listed[0]["mimeType"] == "application/zip"
    # a deleted archive is invisible to 0.1.x too (trashed when only Content manager)
    storage.delete("MyProj", "aapiyl_20240706T064339_exp.zip")
    assert fake_drive.query(f"'{proj['id']}' in parents and trashed = false") == []


def test_archives_pushed_by_resutil_01_are_listed_and_pulled(storage, fake_drive, base):
    proj = fake_drive.create_folder("Legacy", base)
    fake_drive.create_file("aaaaaa_20240101T000000.zip", proj, b"PK old archive")
    assert [o.name for o in storage.list("Legacy")] == ["aaaaaa_20240101T000000.zip"]
    assert storage.read_bytes("Legacy", "aaaaaa_20240101T000000.zip") == b"PK old archive"
    assert storage.list("Legacy.resutil") == []


def test_delete_is_permanent_for_a_shared_drive_manager(fake_drive, gdrive_key, tmp_path):
    drive = fake_drive.create_shared_drive("managed", role="organizer")
    base = fake_drive.create_folder("resutil", drive)
    key = gdrive_key.write(tmp_path / "k.json")
    storage = open_gdrive(gdrive_settings_for(fake_drive.url, key, base, tmp_path))
    storage.write_bytes("P", "a.zip", b"x")
    storage.delete("P", "a.zip")
    proj = folder_id(fake_drive, base, "P")
    assert fake_drive.children(proj, include_trashed=True) == []


def test_parallel_uploads_share_one_folder(storage, fake_drive, base):
    at_once(lambda i: storage.write_bytes("Proj", f"{i}.zip", str(i).encode()),
            range(storage.max_workers * 2))
    assert [f["title"] for f in fake_drive.children(base)] == ["Proj"]
    assert len(storage.list("Proj")) == storage.max_workers * 2


def test_requests_always_reach_shared_drives(storage, fake_drive):
    before = len(fake_drive.requests)
    storage.write_bytes("Proj", "a.zip", b"x")
    storage.read_bytes("Proj", "a.zip")
    for method, path in fake_drive.requests[before:]:
        if path.startswith("/token"):
            continue
        assert "supportsAllDrives=true" in path, (method, path)
        if method == "GET" and path.startswith("/drive/v2/files?"):
            assert "includeItemsFromAllDrives=true" in path
            assert "corpora=drive" in path


# -- transient failures ------------------------------------------------------------------
def test_503_once_is_retried(storage, fake_drive):
    storage.write_bytes("Proj", "a.zip", b"x")
    fake_drive.fail_next(503, "backendError", "Backend Error")
    cb = Recorder()
    storage.upload(_small(storage), "Proj", "b.zip", cb)
    assert sorted(o.name for o in storage.list("Proj")) == ["a.zip", "b.zip"]
    assert any("retrying" in m and "503" in m for m in cb.messages)


def test_rate_limit_is_retried(storage, fake_drive):
    fake_drive.fail_next(403, "userRateLimitExceeded", "User Rate Limit Exceeded", times=2)
    storage.write_bytes("Proj", "a.zip", b"x")
    assert [o.name for o in storage.list("Proj")] == ["a.zip"]


def test_persistent_503_is_one_line_unavailable(storage, fake_drive):
    fake_drive.fail_next(503, "backendError", "Backend Error", times=100)
    with pytest.raises(StorageUnavailable) as exc:
        storage.list("Proj")
    msg = assert_one_line(exc)
    assert "Google Drive" in msg and "503" in msg
    fake_drive.clear_faults()


def test_expired_token_is_refreshed(storage, fake_drive):
    storage.write_bytes("Proj", "a.zip", b"x")
    tokens = sum(1 for _, p in fake_drive.requests if p.startswith("/token"))
    fake_drive.expire_tokens()  # the next API call answers 401
    assert storage.read_bytes("Proj", "a.zip") == b"x"
    assert sum(1 for _, p in fake_drive.requests if p.startswith("/token")) == tokens + 1


def test_401_once_refreshes_and_succeeds(storage, fake_drive):
    storage.list("Proj")
    tokens = sum(1 for _, p in fake_drive.requests if p.startswith("/token"))
    fake_drive.fail_next(401, "authError", "Invalid Credentials")
    storage.write_bytes("Proj", "a.zip", b"x")
    assert storage.read_bytes("Proj", "a.zip") == b"x"
    assert sum(1 for _, p in fake_drive.requests if p.startswith("/token")) == tokens + 1


def test_chunk_503_resumes_the_same_session(storage, fake_drive, tmp_path):
    src = big_file(tmp_path / "big.bin", 20)
    fake_drive.fail_next(503, "backendError", match="upload_id=")
    cb = Recorder()
    before = len(fake_drive.requests)
    storage.upload(src, "Proj", "big.zip", cb)
    sessions = [p for m, p in fake_drive.requests[before:]
                if m == "POST" and "uploadType=resumable" in p]
    assert len(sessions) == 1
    assert cb.advanced == cb.total == src.stat().st_size
    assert storage.read_bytes("Proj", "big.zip") == src.read_bytes()


def test_connection_dropped_mid_upload_is_resumed(storage, fake_drive, tmp_path):
    src = big_file(tmp_path / "big.bin", 20)
    fake_drive.drop_next_upload_chunk()
    cb = Recorder()
    storage.upload(src, "Proj", "big.zip", cb)
    assert fake_drive.drop_chunks == 0
    assert cb.advanced == src.stat().st_size
    assert storage.stat("Proj", "big.zip").size == src.stat().st_size
    assert storage.read_bytes("Proj", "big.zip") == src.read_bytes()


def test_upload_that_keeps_dropping_fails_cleanly(storage, fake_drive, tmp_path):
    src = big_file(tmp_path / "big.bin", 10)
    fake_drive.drop_next_upload_chunk(times=1000)
    cb = Recorder()
    before = len(fake_drive.requests)
    with pytest.raises(StorageUnavailable) as exc:
        storage.upload(src, "Proj", "big.zip", cb)
    msg = assert_one_line(exc)
    assert "Proj/big.zip" in msg and "lost the connection" in msg
    # resumed in place `retries` times, then given up: no second round of fresh sessions
    sessions = [p for m, p in fake_drive.requests[before:]
                if m == "POST" and "uploadType=resumable" in p]
    assert len(sessions) == 1
    assert len(cb.messages) == storage.settings.retries
    fake_drive.clear_faults()
    assert storage.list("Proj") == []  # all-or-nothing: no partial file


def test_interrupted_upload_leaves_nothing(storage, fake_drive, tmp_path):
    src = big_file(tmp_path / "big.bin", 20)

    class CtrlC(Recorder):
        def advance(self, n):
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        storage.upload(src, "Proj", "big.zip", CtrlC())
    assert storage.list("Proj") == []


@pytest.mark.timeout(40)  # a hang guard: the SDKs' own defaults would wait minutes
def test_network_down_is_reported_quickly(tmp_path):
    port = closed_port()
    url = f"http://127.0.0.1:{port}"
    key = make_service_account_key(f"{url}/token").write(tmp_path / "k.json")
    settings = gdrive_settings_for(url, key, "base", tmp_path)
    storage = open_gdrive(settings)  # no network in the constructor
    with pytest.raises(StorageUnavailable) as exc:
        storage.list("Proj")
    msg = assert_one_line(exc)
    assert "Google Drive" in msg and f"127.0.0.1:{port}" in msg and "network" in msg


@pytest.mark.slow
@pytest.mark.timeout(40)  # a hang guard: the SDKs' own defaults would wait minutes
def test_blackholed_network_times_out(tmp_path, monkeypatch):
    """Connection attempts that are never answered (SYNs dropped) end after CONNECT_TIMEOUT."""
    from resutil.storage import gdrive

    # The defaults report a dead network within ~15 s: attempts x connect timeout + backoff.
    attempts = 4  # StorageSettings.retries = 3
    assert attempts * gdrive.CONNECT_TIMEOUT + 0.5 * (1 + 2 + 4) <= 15.5
    monkeypatch.setattr(gdrive, "CONNECT_TIMEOUT", 0.3)

    with socket.socket() as srv:  # a full accept queue: the kernel drops further SYNs
        srv.bind(("127.0.0.1", 0))
        srv.listen(0)
        url = f"http://127.0.0.1:{srv.getsockname()[1]}"
        fillers = []
        for _ in range(4):
            c = socket.socket()
            c.setblocking(False)
            c.connect_ex(srv.getsockname())
            fillers.append(c)
        time.sleep(0.1)
        key = make_service_account_key(f"{url}/token").write(tmp_path / "k.json")
        storage = open_gdrive(gdrive_settings_for(url, key, "base",
                                                  tmp_path))
        try:
            with pytest.raises(StorageUnavailable, match="cannot reach .*timed out"):
                storage.list("Proj")
        finally:
            for c in fillers:
                c.close()


# -- configuration and permission errors ----------------------------------------------------
def test_service_account_without_quota_needs_a_shared_drive(fake_drive, gdrive_key, tmp_path):
    my_drive_folder = fake_drive.create_folder("shared with the SA")  # not in a Shared Drive
    key = gdrive_key.write(tmp_path / "k.json")
    storage = open_gdrive(gdrive_settings_for(fake_drive.url, key, my_drive_folder, tmp_path))
    for src_size in (10, 9 << 20):  # multipart and resumable
        src = tmp_path / "f.bin"
        src.write_bytes(b"x" * src_size)
        with pytest.raises(StoragePermission) as exc:
            storage.upload(src, "Proj", "a.zip")
        msg = str(exc.value)
        assert "Google Drive" in msg and "Proj/a.zip" in msg
        assert "no Drive storage quota" in msg and "Shared Drive" in msg
        assert "Content manager" in msg and "client_user_email" in msg
    assert storage.list("Proj") == []


def test_read_only_share_names_the_account_to_share_with(fake_drive, gdrive_key, tmp_path):
    drive = fake_drive.create_shared_drive("viewers", role="reader")
    base = fake_drive.create_folder("resutil", drive)
    fake_drive.create_folder("Proj", base)
    key = gdrive_key.write(tmp_path / "k.json")
    storage = open_gdrive(gdrive_settings_for(fake_drive.url, key, base, tmp_path))
    assert storage.list("Proj") == []  # reading works
    with pytest.raises(StoragePermission) as exc:
        storage.write_bytes("Proj", "a.zip", b"x")
    msg = str(exc.value)
    assert "insufficientFilePermissions" in msg
    assert f"share the folder {base} with {gdrive_key.client_email}" in msg
    assert "Content manager" in msg


def test_injected_insufficient_permissions(storage, fake_drive, gdrive_key):
    storage.list("Proj")
    fake_drive.fail_next(403, "insufficientFilePermissions",
                         "The user does not have sufficient permissions for this file.")
    with pytest.raises(StoragePermission, match="share the folder .* as Editor"):
        storage.write_bytes("Proj", "a.zip", b"x")


def test_missing_base_folder(fake_drive, gdrive_key, tmp_path):
    key = gdrive_key.write(tmp_path / "k.json")
    storage = open_gdrive(gdrive_settings_for(fake_drive.url, key, "1NoSuchFolder", tmp_path))
    with pytest.raises(StorageNotFound) as exc:
        storage.list("Proj")
    assert str(exc.value) == (
        f"Google Drive folder 1NoSuchFolder not found or not shared with "
        f"{gdrive_key.client_email}; share it with that address (as Content manager of its "
        "Shared Drive) or fix storage_config.base_folder_id"
    )


def test_base_folder_that_is_a_file(fake_drive, gdrive_key, gdrive_base_folder, tmp_path):
    file_id = fake_drive.create_file("notes.txt", gdrive_base_folder, b"x")
    key = gdrive_key.write(tmp_path / "k.json")
    storage = open_gdrive(gdrive_settings_for(fake_drive.url, key, file_id, tmp_path))
    with pytest.raises(ConfigError, match="is a file .* not a Google Drive folder"):
        storage.list("Proj")


def test_missing_key_file(fake_drive, gdrive_base_folder, tmp_path):
    settings = gdrive_settings_for(fake_drive.url, tmp_path / "nope.json", gdrive_base_folder,
                                   tmp_path)
    storage = open_gdrive(settings)  # lazy: constructing is fine
    with pytest.raises(ConfigError, match=r"Google Drive key file not found: .*nope\.json"):
        storage.list("Proj")


def test_key_file_not_json(fake_drive, gdrive_base_folder, tmp_path):
    key = tmp_path / "key.json"
    key.write_text("-----BEGIN PRIVATE KEY-----\n")
    storage = open_gdrive(gdrive_settings_for(fake_drive.url, key, gdrive_base_folder, tmp_path))
    with pytest.raises(ConfigError, match="key file .*key.json is not valid JSON"):
        storage.list("Proj")


def test_oauth_client_secret_instead_of_key(fake_drive, gdrive_base_folder, tmp_path):
    key = tmp_path / "client_secret.json"
    key.write_text(json.dumps({"installed": {
        "client_id": "x.apps.googleusercontent.com", "client_secret": "s",
        "auth_uri": "https://accounts.google.com/o/oauth2/auth",
        "token_uri": "https://oauth2.googleapis.com/token", "redirect_uris": ["http://localhost"],
    }}))
    storage = open_gdrive(gdrive_settings_for(fake_drive.url, key, gdrive_base_folder, tmp_path))
    with pytest.raises(ConfigError, match="is an OAuth client secret, not a service-account key"):
        storage.list("Proj")


def test_key_with_a_broken_private_key(fake_drive, gdrive_key, gdrive_base_folder, tmp_path):
    info = dict(gdrive_key.info, private_key="-----BEGIN PRIVATE KEY-----\nAAAA\n")
    key = tmp_path / "k.json"
    key.write_text(json.dumps(info))
    storage = open_gdrive(gdrive_settings_for(fake_drive.url, key, gdrive_base_folder, tmp_path))
    with pytest.raises(ConfigError, match="cannot be used as a service-account key"):
        storage.list("Proj")


def test_revoked_key(fake_drive, gdrive_base_folder, tmp_path):
    sa = make_service_account_key(fake_drive.token_url, "revoked")
    fake_drive.register_key(sa.client_email, sa.n, sa.e)
    fake_drive.revoke_key(sa.client_email)
    key = sa.write(tmp_path / "k.json")
    storage = open_gdrive(gdrive_settings_for(fake_drive.url, key, gdrive_base_folder, tmp_path))
    with pytest.raises(StoragePermission) as exc:
        storage.list("Proj")
    msg = assert_one_line(exc)
    assert "invalid_grant" in msg and "key was revoked or the clock is wrong" in msg
    assert sa.client_email in msg


def test_key_signed_with_the_wrong_private_key(fake_drive, gdrive_key, gdrive_base_folder,
                                               tmp_path):
    other = make_service_account_key(fake_drive.token_url)
    info = dict(other.info, client_email=gdrive_key.client_email)  # registered email, other key
    key = tmp_path / "k.json"
    key.write_text(json.dumps(info))
    storage = open_gdrive(gdrive_settings_for(fake_drive.url, key, gdrive_base_folder, tmp_path))
    with pytest.raises(StoragePermission, match="Invalid JWT Signature"):
        storage.list("Proj")


def test_bad_endpoint_is_a_config_error(fake_drive, gdrive_key, gdrive_base_folder, tmp_path):
    key = gdrive_key.write(tmp_path / "k.json")
    with pytest.raises(ConfigError, match="endpoint must be an http"):
        open_gdrive(gdrive_settings_for(fake_drive.url, key, gdrive_base_folder, tmp_path,
                                        endpoint="127.0.0.1:1234"))


def _small(storage):
    path = storage.settings.scratch_dir / "small.zip"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"small")
    return path


# -- the CLI on Drive ----------------------------------------------------------------------
def test_cli_push_list_comment_pull_on_drive(fake_drive, gdrive_settings, tmp_path):
    proj = make_project(tmp_path, gdrive_settings)
    up = make_exp(proj, "up")
    down = make_exp(proj, "down", deps=[up.name])
    cli_ok("push", down.name, cwd=proj.root)  # pushes its upstream too
    cli_ok("comment", down.name, "renamed", cwd=proj.root)
    shutil.rmtree(proj.results)
    cli_ok("pull", "--all", cwd=proj.root)
    renamed = down.name.rsplit("_", 1)[0] + "_renamed"
    assert {p.name for p in proj.results.iterdir()} >= {up.name, renamed}

    base = gdrive_settings.values["base_folder_id"]
    proj_id = folder_id(fake_drive, base, "Proj")
    assert sorted(f["title"] for f in fake_drive.children(proj_id)) == sorted(
        [f"{up.name}.zip", f"{renamed}.zip"])

    os.unlink(gdrive_settings.values["key_file_path"])
    cli_fails("list", needles=["Google Drive key file not found"], cwd=proj.root)


# -- uploading while the archive is written ----------------------------------------------------
@pytest.mark.parametrize("size", [3 * (256 << 10) + 777, 4 * (256 << 10)],
                         ids=["ragged", "whole-chunks"])
def test_staged_upload_sends_chunks_while_the_file_is_written(storage, fake_drive, monkeypatch, size):
    """A push to Drive uploads the archive while it is being built, as a resumable session
    of unknown length; a length that is a multiple of the chunk size ends cleanly too."""
    from resutil.storage import gdrive

    monkeypatch.setattr(gdrive, "CHUNK_SIZE", 256 << 10)
    data = os.urandom(size)
    fake_drive.drop_next_upload_chunk()  # one chunk is cut: the session resumes
    chunk_puts = lambda: sum(1 for m, p in list(fake_drive.requests) if m == "PUT")  # noqa: E731
    before = chunk_puts()
    with storage.staged_upload("Proj", "big.zip") as staged:
        with open(staged.path, "wb") as f:
            for k in range(0, size, 64 << 10):
                f.write(data[k:k + (64 << 10)])
                f.flush()
                time.sleep(0.01)
        sent_while_writing = chunk_puts() - before
    assert sent_while_writing >= 2, "nothing was uploaded before the file was complete"
    assert storage.read_bytes("Proj", "big.zip") == data
    assert [o.name for o in storage.list("Proj")] == ["big.zip"]
    listed = storage.stat("Proj", "big.zip")
    assert staged.stored.version == listed.version == hashlib.md5(data).hexdigest()
    assert staged.stored.size == listed.size == size


def test_staged_upload_that_could_not_follow_the_writer_uploads_whole(storage, fake_drive,
                                                                       monkeypatch):
    """The session of the upload-while-written fails to start (a transient 503): the
    finished file goes up whole, and what was stored is still reported."""
    from resutil.storage import gdrive

    monkeypatch.setattr(gdrive, "CHUNK_SIZE", 256 << 10)
    data = os.urandom(5 * (256 << 10) + 99)
    fake_drive.fail_next(503, "backendError", match="uploadType=resumable")
    before = len(fake_drive.requests)
    with storage.staged_upload("Proj", "big.zip") as staged:
        with open(staged.path, "wb") as f:
            for k in range(0, len(data), 64 << 10):
                f.write(data[k:k + (64 << 10)])
                f.flush()
                time.sleep(0.01)
    assert not fake_drive.faults, "the upload never tried to follow the writer"
    assert any("uploadType=multipart" in p for _, p in fake_drive.requests[before:])
    assert storage.read_bytes("Proj", "big.zip") == data
    assert staged.stored.version == storage.stat("Proj", "big.zip").version \
        == hashlib.md5(data).hexdigest()


def test_staged_upload_abandoned_midway_stores_nothing(storage, fake_drive, monkeypatch):
    from resutil.storage import gdrive

    monkeypatch.setattr(gdrive, "CHUNK_SIZE", 256 << 10)
    with pytest.raises(RuntimeError, match="build failed"):
        with storage.staged_upload("Proj", "big.zip") as staged:
            with open(staged.path, "wb") as f:
                for _ in range(12):
                    f.write(os.urandom(64 << 10))
                    f.flush()
                    time.sleep(0.01)
            raise RuntimeError("build failed")
    assert storage.list("Proj") == []


def test_a_checked_download_of_a_listed_file_needs_no_look_up(storage, fake_drive, gdrive_settings):
    """Right after a listing, a download whose content the caller checks (a pull) uses the
    listed file id; a file deleted for good since is reported missing."""
    gone = f"b-{os.urandom(4).hex()}.zip"  # the fake server is shared by all tests
    storage.write_bytes("Proj", "a.zip", b"A")
    storage.write_bytes("Proj", gone, b"B")
    storage.list("Proj")
    before = len(fake_drive.requests)
    sink = storage.download_to("Proj", "a.zip", io.BytesIO)
    assert sink.getvalue() == b"A"
    assert not [p for _, p in fake_drive.requests[before:] if "q=" in p]  # no title query
    [b] = [f for f in fake_drive.files.values() if f.get("title") == gone]
    fake_drive.remove(b["id"])  # its owner deletes it for good
    with pytest.raises(StorageNotFound):
        storage.download_to("Proj", gone, io.BytesIO)
