#!/usr/bin/env python3
"""Benchmark resutil's cloud backends against the raw SDKs, on the test suite's local servers.

For each backend (GCS on gcp-storage-emulator, Google Drive on tests/servers/fake_drive.py,
Box on tests/servers/fake_box.py) this starts the local server the tests use, with a
throw-away service-account / JWT key going through the real auth path, and writes a resutil
project whose ``resutil-conf.yaml`` points at it (``storage_type`` + ``storage_config`` with
``endpoint`` and ``key_file_path``). It builds one experiment of ``--mb`` MiB of seeded
random bytes (3 large + 8 small files, so the zip is the same size), runs one untimed
full-size warm-up repetition, then ``--repeat`` timed ones, each with a fresh experiment
identity and these steps (each preceded, untimed, by ``os.sync()`` and by writing and
deleting a scratch file of twice the experiment's size; see ``Primer``):

* **push**: ``project.remote.push(folder)`` in-process: archive (zip, xxh128 hashes) to a
  scratch file, upload, sidecar;
* **archive only**: the same ``build_archive`` to a scratch file (with an fsync only if
  ``Remote.push`` does one);
* **upload only**: ``storage.upload`` of the reference archive (resutil's transfer path
  alone);
* **raw upload**: the SDK's natural call for the reference archive (resutil's own builder
  made it once), same chunk size as resutil: GCS ``blob.upload_from_filename``; Drive
  ``files().insert`` with a resumable ``MediaFileUpload`` through the same authorised
  service; Box ``chunked_uploads.upload_big_file`` through the same client;
* **archive + raw upload**: push's work done by hand (build_archive, raw upload);
* **pull**: ``sync.pull_one(project, exp)`` into a fresh results folder (a second project on
  the same remote, whose listing is done before the clock starts, as ``resutil pull`` does);
* **download only**: ``storage.download`` to a file;
* **raw download**: the SDK's natural call writing the same object to a file (GCS
  ``download_to_filename``, Drive ``MediaIoBaseDownload``, Box
  ``download_file_to_output_stream``);
* **extract only**: ``extract_archive`` of the reference archive into a fresh folder;
* **raw download + extract**: pull's disk work done by hand.

overhead = resutil / raw - 1. The issue's target (<= 10 %) is on the totals: push against
the raw upload, pull against the raw download. The other rows say where the difference
comes from.

**list**: a fresh remote is filled with ``--list-count`` tiny archives + sidecars written
straight into the server's store (not timed; see ``seed`` in each server class), then
``Remote(storage, project).experiments()`` (a fresh Remote, no cache; the storage is warm:
token and folder ids known) is timed against ONE raw SDK listing of the project folder,
fully paged (GCS ``list_blobs``, Drive ``files().list``, Box ``get_folder_items``). A
"cold" figure (a freshly loaded Project: token exchange, folder look-ups, both listings,
what ``resutil list`` pays) is reported beside it. Target: < 2 s.

The servers run in child processes (``multiprocessing`` spawn), so their Python work does
not compete for the benchmark's GIL: on a 2-core machine client and server get a core each.
Medians (and, as "best-of", minima) of ``--repeat`` runs are reported. ``--profile DIR``
adds one push, pull and list under cProfile. The script exits 0 whatever the figures: it
is a measurement, not a test.

Run from the repository with the project's virtualenv (the gcs, gdrive and box extras and
the test-only packages gcp-storage-emulator, PyJWT and cryptography must be installed)::

    .venv/bin/python benchmarks/bench_backends.py [--mb 300] [--list-count 5000] \
        [--repeat 7] [--warmup 1] [--backends gcs,gdrive,box] [--json OUT] [--profile DIR]

Generated data lives under ``benchmarks/work/backends-<pid>/`` and is deleted at the end
(``--keep`` keeps it).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import multiprocessing
import os
import platform
import random
import shutil
import statistics
import sys
import time
import traceback
import uuid
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
if str(REPO) not in sys.path:  # `import resutil` and `import tests.servers...` from anywhere
    sys.path.insert(0, str(REPO))

from resutil.archive import build_archive, extract_archive

PROJECT = "bench"
MiB = 1 << 20
LIST_TARGET_S = 2.0
OVERHEAD_TARGET = 0.10
SEED = 20240706
ALL_BACKENDS = ("gcs", "gdrive", "box")


def log(msg: str) -> None:
    print(msg, flush=True)


# ======================================================================= servers (child side)
# Each class runs inside a child process; its public methods are the commands the parent may
# send (see _server_main). ``info`` is what the parent needs to reach it.
class _GCSServer:
    """gcp-storage-emulator (in-memory) + the OAuth token endpoint of tests/test_backend_gcs."""

    def __init__(self, opts: dict) -> None:
        from gcp_storage_emulator.server import create_server

        from tests.test_backend_gcs import TokenServer

        self.emu = create_server("127.0.0.1", 0, in_memory=True)
        self.emu.start()
        port = self.emu._api._httpd.server_address[1]  # as tests/backend_gcs.py does
        self.url = f"http://127.0.0.1:{port}"
        self.token = TokenServer(opts["public_pem"])
        self.info = {"url": self.url, "token_url": f"{self.token.url}/token"}

    def seed(self, bucket: str, entries: list[tuple[str, bytes, str]]) -> int:
        """Store objects directly, through the emulator's own object-resource builder.

        Uploading them over HTTP is quadratic: the emulator's in-memory store rewrites a JSON
        dump of every object's metadata after each upload (``_write_config_to_file``), and its
        HTTP server is single-threaded. Here the dump is written once, at the end.
        """
        from gcp_storage_emulator.handlers.objects import _checksums, _make_object_resource

        st = self.emu._storage
        write_config = st._write_config_to_file
        st._write_config_to_file = lambda: None
        try:
            for key, data, ctype in entries:
                obj = _make_object_resource(self.url, bucket, key, ctype, str(len(data)))
                st.create_file(bucket, key, data, _checksums(data, obj))
        finally:
            st._write_config_to_file = write_config
        write_config()
        return len(entries)

    def stop(self) -> None:
        self.token.close()
        self.emu.stop()


class _DriveServer:
    """tests/servers/fake_drive.py, as tests/backend_gdrive.py starts it."""

    def __init__(self, opts: dict) -> None:
        from tests.servers.fake_drive import FakeDrive

        self.fake = FakeDrive()
        self.fake.start()
        self.info = {"url": self.fake.url, "token_url": self.fake.token_url}

    def register_key(self, email: str, n: int, e: int) -> None:
        self.fake.register_key(email, n, e)

    def new_base(self) -> str:
        """A fresh base folder in a fresh Shared Drive (service account: Content manager)."""
        drive_id = self.fake.create_shared_drive(f"team-{uuid.uuid4().hex[:6]}",
                                                 role="fileOrganizer")
        return self.fake.create_folder("resutil", drive_id)

    def seed(self, base: str, folders: dict[str, list[tuple[str, bytes, str]]]) -> int:
        """Create subfolders of ``base`` and files in them directly in the fake's store."""
        n = 0
        for title, entries in folders.items():
            fid = self.fake.create_folder(title, base)
            for name, data, ctype in entries:
                self.fake.create_file(name, fid, data, mime_type=ctype)
                n += 1
        return n

    def remove(self, file_id: str) -> None:
        """Delete as the drive's owner (a Content manager may only trash)."""
        self.fake.remove(file_id)

    def purge_trash(self) -> int:
        """Free the fake's memory: trashed files (resutil may only trash in a Shared Drive)
        and finished resumable sessions (the fake keeps each one's full content)."""
        with self.fake.lock:
            doomed = [fid for fid, f in self.fake.files.items() if f["labels"]["trashed"]]
            for uid in [u for u, up in self.fake.uploads.items() if up.result is not None]:
                del self.fake.uploads[uid]
            self.fake.requests.clear()
        for fid in doomed:
            self.fake.remove(fid)
        return len(doomed)

    def stop(self) -> None:
        self.fake.stop()


class _BoxServer:
    """tests/servers/fake_box.py with the JWT app of tests/backend_box.py."""

    def __init__(self, opts: dict) -> None:
        from tests.backend_box import ENTERPRISE_ID, JWT_CLIENT_ID, JWT_KEY_ID, JWT_SECRET
        from tests.servers.fake_box import FakeBox

        self.fake = FakeBox()
        self.fake.start()
        self.fake.add_jwt_app(JWT_CLIENT_ID, JWT_SECRET, JWT_KEY_ID, opts["public_pem"],
                              ENTERPRISE_ID)
        self.info = {"url": self.fake.url}

    def new_root(self) -> str:
        return self.fake.create_folder(f"resutil-bench-{uuid.uuid4().hex[:8]}")

    def seed(self, root: str, folders: dict[str, list[tuple[str, bytes, str]]]) -> int:
        """Create subfolders of ``root`` and files in them directly in the fake's store."""
        n = 0
        for title, entries in folders.items():
            fid = self.fake.create_folder(title, root)
            for name, data, _ctype in entries:
                self.fake.put_file(fid, name, data)
                n += 1
        return n

    def purge_trash(self) -> int:
        """Box deletes move files to the trash; drop them to free the fake's memory."""
        with self.fake.lock:
            n = len(self.fake.trash)
            self.fake.trash.clear()
            self.fake.downloads.clear()
            self.fake.log.clear()
        return n

    def stop(self) -> None:
        self.fake.stop()


_SERVERS = {"gcs": _GCSServer, "gdrive": _DriveServer, "box": _BoxServer}


def _server_main(kind: str, opts: dict, conn: Any) -> None:
    """Child process: start the server, then answer (command, args) messages."""
    os.chdir(REPO)
    try:
        srv = _SERVERS[kind](opts)
    except BaseException:  # noqa: BLE001 - reported to the parent
        conn.send(("err", traceback.format_exc()))
        return
    conn.send(("ok", srv.info))
    while True:
        try:
            cmd, args = conn.recv()
        except EOFError:
            cmd, args = "stop", ()
        try:
            if cmd == "stop":
                srv.stop()
                conn.send(("ok", None))
                return
            conn.send(("ok", getattr(srv, cmd)(*args)))
        except BaseException:  # noqa: BLE001
            try:
                conn.send(("err", traceback.format_exc()))
            except OSError:
                return


class ServerProcess:
    """A backend's local server in a child process."""

    def __init__(self, kind: str, opts: dict | None = None) -> None:
        ctx = multiprocessing.get_context("spawn")
        self.conn, child = ctx.Pipe()
        self.proc = ctx.Process(target=_server_main, args=(kind, opts or {}, child),
                                name=f"bench-{kind}-server", daemon=True)
        self.proc.start()
        child.close()
        self.info = self._reply()

    def _reply(self) -> Any:
        try:
            status, value = self.conn.recv()
        except EOFError:
            raise RuntimeError(f"the {self.proc.name} process exited (code "
                               f"{self.proc.exitcode}) without answering") from None
        if status != "ok":
            raise RuntimeError(f"server process failed:\n{value}")
        return value

    def call(self, cmd: str, *args: Any) -> Any:
        self.conn.send((cmd, args))
        return self._reply()

    def stop(self) -> None:
        if self.proc.is_alive():
            with contextlib.suppress(Exception):
                self.call("stop")
            self.proc.join(5)
        if self.proc.is_alive():
            self.proc.terminate()
            self.proc.join(5)


# ======================================================================= backends (parent side)
class Backend:
    """How to reach one server with resutil and with its raw SDK."""

    name = ""
    label = ""

    def __init__(self, work: Path) -> None:
        self.work = work
        self.server: ServerProcess | None = None

    # set up ----------------------------------------------------------------------------
    def start(self) -> None:
        raise NotImplementedError

    def new_remote(self) -> dict:
        """storage_config of a fresh, empty remote."""
        raise NotImplementedError

    def stop(self) -> None:
        if self.server is not None:
            self.server.stop()

    def describe_chunks(self) -> str:
        return ""

    def cleanup(self) -> None:
        """Free server memory after a repetition (untimed)."""

    def extra_upload_steps(self, path: Path, rep: int) -> list[tuple[str, Callable[[], Any]]]:
        """Backend-specific diagnostic uploads: (figure key, call returning a raw handle)."""
        return []

    # raw SDK ---------------------------------------------------------------------------
    def raw_begin(self, project: Any) -> None:
        """Prepare raw-SDK access next to resutil's (after ``project`` is loaded)."""

    def raw_upload(self, path: Path, name: str) -> Any:
        raise NotImplementedError

    def raw_download(self, handle: Any, dest: Path) -> None:
        raise NotImplementedError

    def raw_delete(self, handle: Any) -> None:
        raise NotImplementedError

    def raw_list(self, project: Any) -> int:
        """One listing of the project folder, fully paged; returns the entry count."""
        raise NotImplementedError

    def seed(self, storage_config: dict, folders: dict[str, list[tuple[str, bytes, str]]]) -> None:
        raise NotImplementedError


class GCSBackend(Backend):
    name, label = "gcs", "GCS (gcp-storage-emulator)"

    def start(self) -> None:
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric import rsa

        from tests.test_backend_gcs import write_sa_key

        _no_regional_access_boundary()
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        private = key.private_bytes(serialization.Encoding.PEM,
                                    serialization.PrivateFormat.PKCS8,
                                    serialization.NoEncryption())
        public = key.public_key().public_bytes(serialization.Encoding.PEM,
                                               serialization.PublicFormat.SubjectPublicKeyInfo)
        self.server = ServerProcess("gcs", {"public_pem": public})
        self.url = self.server.info["url"]
        self.key_path = write_sa_key(self.work / "keys" / "gcs-sa.json", private,
                                     self.server.info["token_url"])

        from google.auth.credentials import AnonymousCredentials
        from google.cloud import storage

        self.admin = storage.Client(project="resutil-bench", credentials=AnonymousCredentials(),
                                    client_options={"api_endpoint": self.url})

    def new_remote(self) -> dict:
        from google.cloud import storage

        bucket = storage.Bucket(self.admin, f"resutil-bench-{uuid.uuid4().hex[:10]}")
        # No soft delete (the emulator, like GCS, keeps deleted objects 7 days by default;
        # here that would keep every deleted 300 MiB archive in the emulator's memory).
        self.admin.create_bucket(bucket)
        bucket.soft_delete_policy.retention_duration_seconds = 0
        bucket.patch()
        bucket = bucket.name
        return {"bucket_name": bucket, "endpoint": self.url, "key_file_path": str(self.key_path)}

    def describe_chunks(self) -> str:
        return "16 MiB resumable chunks"

    extra_rows = (("raw_upload_1chunk", "raw upload in ONE chunk (emulator cost check)"),)

    def raw_begin(self, project: Any) -> None:
        from google.api_core.client_options import ClientOptions
        from google.cloud import storage
        from google.oauth2 import service_account

        from resutil.storage.gcs import SCOPE

        cfg = project.config.storage_config
        creds = service_account.Credentials.from_service_account_file(
            cfg["key_file_path"], scopes=[SCOPE])
        client = storage.Client(project=None, credentials=creds,
                                client_options=ClientOptions(api_endpoint=cfg["endpoint"]))
        self.bucket = client.bucket(cfg["bucket_name"])
        self.chunk_size = project.storage.chunk_size  # what resutil uses (16 MiB)

    def raw_upload(self, path: Path, name: str) -> Any:
        blob = self.bucket.blob(f"raw/{name}", chunk_size=self.chunk_size)
        blob.upload_from_filename(str(path))
        return blob.name

    def raw_download(self, handle: Any, dest: Path) -> None:
        self.bucket.blob(handle).download_to_filename(str(dest))

    def extra_upload_steps(self, path: Path, rep: int) -> list[tuple[str, Callable[[], Any]]]:
        """The same raw upload in ONE resumable chunk: the emulator copies the whole
        partial object on every chunk (O(n^2) in chunks), which this figure isolates."""
        size = path.stat().st_size
        whole = -(-size // (256 << 10)) * (256 << 10)

        def one_chunk() -> Any:
            blob = self.bucket.blob(f"raw/one-chunk-{rep}.zip", chunk_size=whole)
            blob.upload_from_filename(str(path))
            return blob.name

        return [("raw_upload_1chunk", one_chunk)]

    def raw_delete(self, handle: Any) -> None:
        self.bucket.blob(handle).delete()

    def raw_list(self, project: Any) -> int:
        return sum(1 for _ in self.bucket.list_blobs(prefix=f"{project.config.project_name}/",
                                                     delimiter="/"))

    def seed(self, storage_config: dict, folders: dict[str, list[tuple[str, bytes, str]]]) -> None:
        entries = [(f"{folder}/{name}", data, ctype)
                   for folder, items in folders.items() for name, data, ctype in items]
        self.server.call("seed", storage_config["bucket_name"], entries)  # type: ignore[union-attr]


class DriveBackend(Backend):
    name, label = "gdrive", "Google Drive (tests/servers/fake_drive.py)"

    def start(self) -> None:
        from tests.backend_gdrive import make_service_account_key

        self.server = ServerProcess("gdrive")
        self.url = self.server.info["url"]
        key = make_service_account_key(self.server.info["token_url"], name="resutil-bench")
        self.server.call("register_key", key.client_email, key.n, key.e)
        self.key_path = key.write(self.work / "keys" / "gdrive-sa.json")

    def new_remote(self) -> dict:
        base = self.server.call("new_base")  # type: ignore[union-attr]
        return {"base_folder_id": base, "key_file_path": str(self.key_path),
                "endpoint": self.url}

    def describe_chunks(self) -> str:
        from resutil.storage import gdrive

        return (f"{gdrive.CHUNK_SIZE // MiB} MiB resumable chunks, "
                f"{gdrive.DOWNLOAD_CHUNK_SIZE // MiB} MiB download ranges")

    def raw_begin(self, project: Any) -> None:
        from resutil.storage import gdrive

        st = project.storage
        _, self.service = st._session()  # the same authorised Drive v2 service resutil uses
        self.http = st._http()
        self.chunk = gdrive.CHUNK_SIZE
        self.dl_chunk = gdrive.DOWNLOAD_CHUNK_SIZE
        self.list_fields = gdrive.LIST_FIELDS
        self.base = st.base_folder_id
        made = self.service.files().insert(
            body={"title": "raw", "mimeType": gdrive.FOLDER_MIME, "parents": [{"id": self.base}]},
            supportsAllDrives=True, fields="id").execute(http=self.http)
        self.raw_folder = made["id"]

    def raw_upload(self, path: Path, name: str) -> Any:
        from googleapiclient.http import MediaFileUpload

        media = MediaFileUpload(str(path), mimetype="application/zip", chunksize=self.chunk,
                                resumable=True)
        request = self.service.files().insert(
            body={"title": name, "mimeType": "application/zip",
                  "parents": [{"id": self.raw_folder}]},
            media_body=media, supportsAllDrives=True, fields="id")
        response = None
        while response is None:
            _, response = request.next_chunk(http=self.http)
        return response["id"]

    def raw_download(self, handle: Any, dest: Path) -> None:
        from googleapiclient.http import MediaIoBaseDownload

        request = self.service.files().get_media(fileId=handle, supportsAllDrives=True)
        request.http = self.http
        with open(dest, "wb") as fd:
            downloader = MediaIoBaseDownload(fd, request, chunksize=self.dl_chunk)
            done = False
            while not done:
                _, done = downloader.next_chunk()

    def raw_delete(self, handle: Any) -> None:
        # The service account is Content manager: it may only trash; the owner deletes.
        self.server.call("remove", handle)  # type: ignore[union-attr]

    def cleanup(self) -> None:
        self.server.call("purge_trash")  # type: ignore[union-attr]

    def raw_list(self, project: Any) -> int:
        st = project.storage
        folder_id = st._folder_id(project.config.project_name, create=False)  # cached id
        params: dict[str, Any] = {
            "q": f"'{folder_id}' in parents and trashed = false", "maxResults": 1000,
            "fields": self.list_fields, "supportsAllDrives": True,
            "includeItemsFromAllDrives": True,
        }
        count = 0
        while True:
            page = self.service.files().list(**params).execute(http=self.http)
            count += len(page.get("items") or [])
            params["pageToken"] = page.get("nextPageToken")
            if not params["pageToken"]:
                return count

    def seed(self, storage_config: dict, folders: dict[str, list[tuple[str, bytes, str]]]) -> None:
        self.server.call("seed", storage_config["base_folder_id"], folders)  # type: ignore[union-attr]


class BoxBackend(Backend):
    name, label = "box", "Box (tests/servers/fake_box.py)"

    def start(self) -> None:
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric import rsa

        from tests.backend_box import BOX_ENV, PASSPHRASE, write_box_config

        for k in BOX_ENV:  # the key file must be what signs in
            os.environ.pop(k, None)
        # the throw-away JWT app key of tests/backend_box.py (an encrypted PKCS#8 PEM)
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        private = key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(PASSPHRASE.encode())).decode()
        public = key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode()
        self.server = ServerProcess("box", {"public_pem": public})
        self.url = self.server.info["url"]
        path = self.work / "keys" / "box_config.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        self.key_path = write_box_config(path, private)

    def new_remote(self) -> dict:
        root = self.server.call("new_root")  # type: ignore[union-attr]
        return {"folder_id": root, "key_file_path": str(self.key_path), "endpoint": self.url}

    def describe_chunks(self) -> str:
        from tests.servers.fake_box import PART_SIZE

        return f"{PART_SIZE // MiB} MiB upload parts (set by the server)"

    def raw_begin(self, project: Any) -> None:
        st = project.storage
        self.client = st._client()  # the same signed-in BoxClient resutil uses
        from box_sdk_gen import CreateFolderParent

        self.raw_folder = self.client.folders.create_folder(
            f"raw-{uuid.uuid4().hex[:6]}", CreateFolderParent(id=st.folder_id)).id

    def raw_upload(self, path: Path, name: str) -> Any:
        from box_sdk_gen import UploadFileAttributes, UploadFileAttributesParentField

        from resutil.storage.box import CHUNKED_MIN

        size = path.stat().st_size
        with open(path, "rb") as f:
            if size < CHUNKED_MIN:  # upload sessions need >= 20 MB (only the warm-up file)
                attrs = UploadFileAttributes(
                    name=name, parent=UploadFileAttributesParentField(id=self.raw_folder))
                return self.client.uploads.upload_file(attrs, f).entries[0].id
            return self.client.chunked_uploads.upload_big_file(f, name, size, self.raw_folder).id

    def raw_download(self, handle: Any, dest: Path) -> None:
        with open(dest, "wb") as f:
            self.client.downloads.download_file_to_output_stream(handle, f)

    def raw_delete(self, handle: Any) -> None:
        self.client.files.delete_file_by_id(handle)

    def cleanup(self) -> None:
        self.server.call("purge_trash")  # type: ignore[union-attr]

    def raw_list(self, project: Any) -> int:
        from resutil.storage.box import ITEM_FIELDS, PAGE_SIZE

        folder_id = project.storage._subfolder(project.config.project_name, create=False)
        count, marker = 0, None
        while True:
            page = self.client.folders.get_folder_items(
                folder_id, fields=ITEM_FIELDS, usemarker=True, marker=marker, limit=PAGE_SIZE)
            count += len(page.entries or [])
            marker = page.next_marker
            if not marker:
                return count

    def seed(self, storage_config: dict, folders: dict[str, list[tuple[str, bytes, str]]]) -> None:
        self.server.call("seed", storage_config["folder_id"], folders)  # type: ignore[union-attr]


BACKEND_CLASSES: dict[str, type[Backend]] = {
    "gcs": GCSBackend, "gdrive": DriveBackend, "box": BoxBackend,
}


def _no_regional_access_boundary() -> None:
    """As tests/test_backend_gcs.py does: google-auth >= 2.4x starts a background GET to
    iamcredentials.googleapis.com after a service-account token refresh; a benchmark on
    local servers must not reach out to Google, and nothing public turns it off."""
    from google.auth import credentials

    cls = getattr(credentials, "CredentialsWithRegionalAccessBoundary", None)
    if cls is not None and hasattr(cls, "_is_regional_access_boundary_lookup_required"):
        cls._is_regional_access_boundary_lookup_required = lambda self: False


# ======================================================================= data
def make_source(folder: Path, mb: int) -> int:
    """Seeded random (incompressible) files totalling ``mb`` MiB: three large, eight small."""
    rnd = random.Random(SEED)
    total = mb * MiB
    small = [(f"logs/part-{i:02d}.bin", 512 << 10) for i in range(8)] if total > 8 * MiB else []
    rest = total - sum(s for _, s in small)
    sizes = [("model.pt", int(rest * 0.5)), ("data/train.bin", int(rest * 0.3))]
    sizes.append(("data/val.bin", rest - sum(s for _, s in sizes)))
    written = 0
    for rel, size in sizes + small:
        p = folder / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        with open(p, "wb") as f:
            left = size
            while left:
                n = min(left, 32 * MiB)
                f.write(rnd.randbytes(n))
                left -= n
        written += size
    return written


def link_tree(src: Path, dest: Path) -> None:
    """Hard-link every file of ``src`` into ``dest`` (same page cache, no extra disk)."""
    for root, _dirs, files in os.walk(src):
        rel = Path(root).relative_to(src)
        (dest / rel).mkdir(parents=True, exist_ok=True)
        for f in files:
            os.link(Path(root) / f, dest / rel / f)


def write_project(folder: Path, storage_type: str, storage_config: dict) -> Path:
    import yaml

    folder.mkdir(parents=True, exist_ok=True)
    conf = {"project_name": PROJECT, "results_dir": "results", "storage_type": storage_type,
            "storage_config": storage_config}
    (folder / "resutil-conf.yaml").write_text(yaml.safe_dump(conf, sort_keys=False))
    return folder


def resutil_state() -> dict:
    """Which resutil was measured: the commit, and the files changed since (with mtimes)."""
    import subprocess

    def git(*a: str) -> str:
        r = subprocess.run(["git", "-C", str(REPO), *a], capture_output=True, text=True,
                           check=False)
        return r.stdout.strip()

    changed = [ln[3:] for ln in git("status", "--porcelain", "--", "resutil").splitlines()]
    return {"commit": git("rev-parse", "--short", "HEAD"),
            "changed": {f: datetime.fromtimestamp((REPO / f).stat().st_mtime)
                        .isoformat(timespec="seconds")
                        for f in changed if (REPO / f).is_file()}}


def load_project(folder: Path):
    from resutil.project import Project

    return Project.load(start=folder)


def new_experiment(project, src: Path, comment: str) -> Path:
    """A fresh experiment folder (new identity) holding hard links to ``src``'s files."""
    from resutil.metadata import ExpMeta, write_meta

    name = project.workspace.create(comment).name
    folder = project.workspace.path(name)
    link_tree(src, folder)
    write_meta(folder, ExpMeta(name=name, comment=comment, status="finished",
                               result_dir=str(folder), started_at=datetime.now().isoformat()))
    return folder


def list_entries(count: int) -> dict[str, list[tuple[str, bytes, str]]]:
    """``count`` tiny archives in ``bench/`` and their sidecars in ``bench.resutil/``."""
    from resutil.naming import make_name

    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("resutil-exp.yaml", "status: finished\n")
        zf.writestr("out.txt", "x")
    tiny_zip = buf.getvalue()
    start = datetime(2025, 1, 1)
    archives, sidecars = [], []
    for i in range(count):
        n = make_name(start + timedelta(seconds=37 * i), f"list-{i}")
        side = json.dumps({"format": 1, "name": n.name,
                           "archive": {"name": n.name + ".zip", "size": len(tiny_zip),
                                       "hash": "0" * 32, "algorithm": "xxh128"},
                           "meta": {"name": n.name, "status": "finished"}}).encode()
        archives.append((n.name + ".zip", tiny_zip, "application/zip"))
        sidecars.append((n.identity + ".json", side, "application/json"))
    return {PROJECT: archives, f"{PROJECT}.resutil": sidecars}


# ======================================================================= measuring
class Primer:
    """Makes freshly freed memory available before each timed step.

    On a VM whose guest returns free pages to the host (virtio-balloon free page reporting,
    as on the firecracker VM these figures come from), the first write into a page the guest
    has not used lately costs a host page fault: page-cache writes then run at ~400 MB/s
    instead of several GB/s, depending on how much memory the previous steps happened to
    free. A pull, which writes the archive and then the extracted files, suffers most. Writing
    and deleting a scratch file of ``size`` bytes just before the clock starts makes every
    step start from the same state (the pages are freed to the guest's allocator and reused
    at once). ``--no-prime`` turns this off.
    """

    def __init__(self, path: Path | None, size: int) -> None:
        self.path, self.size = path, size
        self.block = bytes(16 * MiB)

    def __call__(self) -> None:
        if self.path is None or self.size <= 0:
            return
        fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            for _ in range(-(-self.size // len(self.block))):
                os.write(fd, self.block)
        finally:
            os.close(fd)
            os.unlink(self.path)  # unlinked before write-back: no disk I/O


PRIME = Primer(None, 0)


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    os.sync()  # write-back of the previous step must not leak into this one
    PRIME()
    t = time.perf_counter()
    result = fn()
    return time.perf_counter() - t, result


def rmtree(p: Path) -> None:
    shutil.rmtree(p, ignore_errors=True)


@dataclass
class Figures:
    samples: dict[str, list[float]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    info: dict[str, Any] = field(default_factory=dict)

    def add(self, key: str, value: float) -> None:
        self.samples.setdefault(key, []).append(value)

    def med(self, key: str) -> float | None:
        v = self.samples.get(key)
        return statistics.median(v) if v else None


def push_fsyncs() -> bool:
    """Whether ``Remote.push`` fsyncs its scratch archive (it did until recently)."""
    import inspect

    from resutil.remote import Remote

    return "fsync(" in inspect.getsource(Remote.push)


def write_archive(folder: Path, path: Path, finish: Callable | None = None) -> int:
    """build_archive into ``path`` as ``Remote.push`` does it (fsync included if it does)."""
    with open(path, "wb") as out:
        info = build_archive(folder, out, finish)
        if PUSH_FSYNCS:
            out.flush()
            os.fsync(out.fileno())
    return info.size


PUSH_FSYNCS = False


def archive_only(project, folder: Path) -> int:
    """What push does before uploading: build the archive into a scratch file."""
    from resutil.metadata import read_meta

    meta = read_meta(folder, with_manifest=False)
    tmp = project.workspace.new_tmp("bench-archive")
    try:
        # the finish callback of Remote.push, minus writing the local metadata file
        return write_archive(folder, tmp / "a.zip", lambda m: meta.to_text().encode())
    finally:
        rmtree(tmp)


class Run:
    """One backend's measurements: its server, the push project and the reference archive."""

    def __init__(self, be: Backend, args: argparse.Namespace, work: Path, src: Path,
                 src_bytes: int) -> None:
        self.be, self.args, self.src, self.src_bytes = be, args, src, src_bytes
        self.fig = Figures()
        self.root = work / be.name

    def setup(self) -> None:
        be, fig = self.be, self.fig
        fig.info["loadavg_start"] = os.getloadavg()
        t0 = time.perf_counter()
        be.start()
        fig.info["server_start_s"] = round(time.perf_counter() - t0, 2)
        fig.info["chunks"] = be.describe_chunks()
        fig.info["extra_rows"] = getattr(be, "extra_rows", [])
        fig.info["push_fsyncs"] = PUSH_FSYNCS
        self.remote_cfg = be.new_remote()
        self.project = load_project(write_project(self.root / "push", be.name, self.remote_cfg))
        self.project.remote.experiments()  # token, folder look-ups: not part of any figure
        be.raw_begin(self.project)
        self.storage = self.project.storage

        # Warm-up (untimed): a tiny push and a tiny raw upload, so that every timed step
        # finds its folders made and its connections open.
        ws = self.project.workspace
        tiny = ws.path(ws.create("warmup").name)
        (tiny / "x.txt").write_text("warm-up\n")
        self.project.remote.push(tiny)
        tiny_zip = self.root / "tiny.zip"
        with open(tiny_zip, "wb") as out:
            build_archive(tiny, out)
        be.raw_delete(be.raw_upload(tiny_zip, "warmup.zip"))

        # The archive the raw SDK sends: resutil's own builder, from an experiment like the
        # pushed ones (same files; the pushed one differs only by its metadata file).
        self.ref_exp = new_experiment(self.project, self.src, "reference")
        self.ref_zip = self.root / "reference.zip"
        with open(self.ref_zip, "wb") as out:
            self.ref_size = build_archive(self.ref_exp, out).size
        fig.info["archive_bytes"] = self.ref_size
        fig.info["source_bytes"] = self.src_bytes
        log(f"  archive: {self.ref_size / MiB:.1f} MiB ({self.src_bytes / MiB:.1f} MiB of files)")

    def step(self, key: str, fn: Callable[[], Any]) -> Any:
        s, result = timed(fn)
        if self.rep >= 0:
            self.fig.add(key, s)
        self.lap[key] = s
        return result

    def repetition(self, i: int) -> None:
        """All transfer steps once; ``self.rep`` < 0 for a warm-up (not recorded)."""
        from resutil.sync import pull_one

        be, fig, project, storage, step = self.be, self.fig, self.project, self.storage, self.step
        rep, root, ref_zip, ref_size = self.rep, self.root, self.ref_zip, self.ref_size
        folder = new_experiment(project, self.src, f"bench-{i}")
        name = folder.name

        # -- push side: the archive alone, the whole push, resutil's upload alone, raw SDK
        step("archive", lambda: archive_only(project, folder))
        info = step("push", lambda: project.remote.push(folder))
        if abs(info.size - ref_size) > ref_size // 100:
            fig.notes.append(f"rep {rep}: pushed archive is {info.size} B, reference {ref_size} B")
        side = f"transfer-{i}.zip"  # not an experiment name: listings ignore it
        step("upload", lambda: storage.upload(ref_zip, PROJECT, side))
        handle = step("raw_upload", lambda: be.raw_upload(ref_zip, f"raw-{i}.zip"))
        for key, fn in be.extra_upload_steps(ref_zip, i):
            be.raw_delete(step(key, fn))
        be.raw_delete(step("raw_push_like", lambda: self.raw_push_like(i)))

        # -- pull side: into a fresh results folder (a second project on the same remote)
        pull_proj = load_project(write_project(root / f"pull-{i}", be.name, self.remote_cfg))
        exp = pull_proj.remote.require(name)  # `resutil pull` lists first; not timed
        written = step("pull", lambda: pull_one(pull_proj, exp))
        if written < self.src_bytes:
            fig.notes.append(f"rep {rep}: pull wrote {written} B of {self.src_bytes} B")
        rmtree(pull_proj.config.root)
        dest = root / f"download-{i}.zip"
        step("download", lambda: storage.download(PROJECT, side, dest))
        self.check_size(dest, "download")
        step("raw_download", lambda: be.raw_download(handle, dest))
        self.check_size(dest, "raw download")
        ext = root / f"extract-{i}"
        ext.mkdir()
        step("extract", lambda: extract_archive(ref_zip, ext))
        rmtree(ext)
        step("raw_pull_like", lambda: self.raw_pull_like(handle, dest, ext))
        rmtree(ext)

        # free the server's memory and the local disk (untimed)
        project.remote.delete(project.remote.require(name))
        storage.delete(PROJECT, side)
        be.raw_delete(handle)
        be.cleanup()
        project.workspace.remove(name)
        os.sync()
        lap = self.lap
        what = f"rep {rep + 1}/{self.args.repeat}" if rep >= 0 else "warm-up"
        log(f"  {what}: push {lap['push']:.2f} s (archive {lap['archive']:.2f}, upload "
            f"{lap['upload']:.2f}) / raw upload {lap['raw_upload']:.2f} s; pull "
            f"{lap['pull']:.2f} s (download {lap['download']:.2f}, extract "
            f"{lap['extract']:.2f}) / raw download {lap['raw_download']:.2f} s")

    def check_size(self, path: Path, what: str) -> None:
        if path.stat().st_size != self.ref_size:
            self.fig.notes.append(f"rep {self.rep}: {what} has {path.stat().st_size} B")
        path.unlink()

    def raw_push_like(self, i: int) -> Any:
        """Push's work done by hand: build_archive to a file, raw SDK upload."""
        zpath = self.root / f"by-hand-{i}.zip"
        write_archive(self.ref_exp, zpath)
        try:
            return self.be.raw_upload(zpath, f"by-hand-{i}.zip")
        finally:
            zpath.unlink()

    def raw_pull_like(self, handle: Any, zpath: Path, ext: Path) -> None:
        """Pull's disk work done by hand: raw SDK download to a file, extract_archive."""
        self.be.raw_download(handle, zpath)
        ext.mkdir()
        extract_archive(zpath, ext)
        zpath.unlink()

    def transfers(self) -> None:
        for i in range(self.args.warmup + self.args.repeat):
            self.rep = i - self.args.warmup  # negative: a warm-up repetition
            self.lap: dict[str, float] = {}
            self.repetition(i)

    def listing(self) -> None:
        from resutil.remote import Remote

        be, fig, args = self.be, self.fig, self.args
        list_cfg = be.new_remote()
        t = time.perf_counter()
        be.seed(list_cfg, list_entries(args.list_count))
        fig.info["list_seed_s"] = round(time.perf_counter() - t, 2)
        list_dir = write_project(self.root / "list", be.name, list_cfg)
        lproj = load_project(list_dir)
        lproj.remote.experiments()  # warm: token and folder ids
        be.raw_begin(lproj)
        self.list_project = lproj
        for rep in range(args.repeat):
            s, found = timed(lambda: Remote(lproj.storage, PROJECT).experiments())
            fig.add("list", s)
            if len(found) != args.list_count:
                fig.notes.append(f"list rep {rep}: resutil found {len(found)} experiments")
            s, n = timed(lambda: be.raw_list(lproj))
            fig.add("raw_list", s)
            if n != args.list_count:
                fig.notes.append(f"list rep {rep}: raw listing returned {n} entries")
            s, _ = timed(lambda: load_project(list_dir).remote.experiments())
            fig.add("list_cold", s)
        log(f"  list of {args.list_count}: resutil {fig.med('list'):.3f} s, raw "
            f"{fig.med('raw_list'):.3f} s, cold {fig.med('list_cold'):.3f} s "
            f"(seeding took {fig.info['list_seed_s']} s)")


def bench_backend(be: Backend, args: argparse.Namespace, work: Path, src: Path,
                  src_bytes: int, prof_dir: Path | None) -> Figures:
    run = Run(be, args, work, src, src_bytes)
    run.setup()
    run.transfers()
    if prof_dir is not None:
        profile_transfers(run, prof_dir)
    if args.list_count > 0:
        run.listing()
        if prof_dir is not None:
            from resutil.remote import Remote

            storage = run.list_project.storage
            profile_call(prof_dir / f"{be.name}-list.prof",
                         lambda: Remote(storage, PROJECT).experiments())
    run.fig.info["loadavg_end"] = os.getloadavg()
    return run.fig


# ======================================================================= profiling
def profile_call(out: Path, fn: Callable[[], Any], top: int = 14) -> None:
    import cProfile
    import pstats

    prof = cProfile.Profile()
    os.sync()
    PRIME()
    t = time.perf_counter()
    prof.enable()
    try:
        fn()
    finally:
        prof.disable()
    wall = time.perf_counter() - t
    prof.dump_stats(str(out))
    s = io.StringIO()
    pstats.Stats(prof, stream=s).sort_stats("tottime").print_stats(top)
    lines = [ln for ln in s.getvalue().splitlines() if ln.strip()]
    log(f"  --- cProfile {out.name}: {wall:.2f} s under the profiler; top own time "
        "(calling thread only)")
    for ln in lines[3:3 + top + 1]:
        log("    " + ln[:160])


def profile_transfers(run: Run, prof_dir: Path) -> None:
    from resutil.sync import pull_one

    be, project = run.be, run.project
    folder = new_experiment(project, run.src, "profile")
    profile_call(prof_dir / f"{be.name}-push.prof", lambda: project.remote.push(folder))
    pull_proj = load_project(write_project(run.root / "pull-profile", be.name, run.remote_cfg))
    exp = pull_proj.remote.require(folder.name)
    profile_call(prof_dir / f"{be.name}-pull.prof", lambda: pull_one(pull_proj, exp))
    rmtree(pull_proj.config.root)
    project.remote.delete(project.remote.require(folder.name))
    be.cleanup()
    project.workspace.remove(folder.name)


# ======================================================================= report
def pct(x: float | None) -> str:
    return "-" if x is None else f"{x * 100:+.1f} %"


def sec(x: float | None) -> str:
    return "-" if x is None else f"{x:.2f} s"


def verdict(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


def summarise(label: str, fig: Figures, args: argparse.Namespace) -> dict:
    m = fig.med
    def lo(key: str) -> float | None:
        return min(fig.samples[key]) if fig.samples.get(key) else None

    out: dict[str, Any] = {"medians_s": {k: m(k) for k in fig.samples},
                           "min_s": {k: lo(k) for k in fig.samples},
                           "samples_s": fig.samples, "info": fig.info, "notes": fig.notes}
    mib = fig.info.get("archive_bytes", 0) / MiB
    # (label, resutil, raw, overhead or ratio, best-of overhead, target verdict, remark)
    rows: list[tuple[str, ...]] = []

    def compare(key: str, raw: str, label: str, target: bool) -> None:
        if m(key) is None or m(raw) is None:
            return
        over, best = m(key) / m(raw) - 1, lo(key) / lo(raw) - 1
        out.setdefault("overheads", {})[f"{key}/{raw}"] = {"median": over, "best_of": best}
        if target:
            out[f"{key}_overhead"], out[f"{key}_overhead_best"] = over, best
            out[f"{key}_pass"] = over <= OVERHEAD_TARGET
        rows.append((label, sec(m(key)), sec(m(raw)), pct(over), pct(best),
                     verdict(over <= OVERHEAD_TARGET) if target else "",
                     f"{mib / m(key):.0f} vs {mib / m(raw):.0f} MiB/s"))

    def alone(key: str, label: str, remark: str = "") -> None:
        if m(key) is not None:
            rows.append((label, sec(m(key)), "", "", "", "", remark))

    compare("push", "raw_upload", "push (archive + upload)", True)
    alone("archive", "  archive only", "build_archive to a scratch file"
          + (" + fsync" if fig.info.get("push_fsyncs") else ""))
    compare("upload", "raw_upload", "  upload only (storage.upload)", False)
    compare("push", "raw_push_like", "  vs build_archive + raw upload", False)
    for key, row_label in fig.info.get("extra_rows", []):
        alone(key, f"  {row_label}")
    compare("pull", "raw_download", "pull (download + extract)", True)
    compare("download", "raw_download", "  download only (storage.download)", False)
    alone("extract", "  extract only", "extract_archive of the same zip")
    compare("pull", "raw_pull_like", "  vs raw download + extract_archive", False)
    if m("list") is not None:
        ratio = m("list") / m("raw_list")
        out["list_ratio"] = ratio
        out["list_pass"] = m("list") < LIST_TARGET_S
        out["list_cold_pass"] = m("list_cold") < LIST_TARGET_S
        rows.append((f"list {args.list_count}", sec(m("list")), sec(m("raw_list")),
                     f"x{ratio:.2f}", f"x{lo('list') / lo('raw_list'):.2f}",
                     verdict(m("list") < LIST_TARGET_S), "fresh Remote, warm storage"))
        rows.append(("  list, cold (new Project)", sec(m("list_cold")), "",
                     f"x{m('list_cold') / m('raw_list'):.2f}", "",
                     verdict(m("list_cold") < LIST_TARGET_S),
                     "token + folder look-ups + both listings"))
    out["rows"] = rows
    head = ("", "resutil", "raw SDK", "overhead", "best-of", "target", "")
    widths = [max(len(r[i]) for r in rows + [head]) for i in range(6)]
    la = fig.info.get("loadavg_start", (0, 0, 0))
    log(f"\n{label}: median of {args.repeat} ('best-of' compares the minima); "
        f"{fig.info.get('chunks', '')}; load average at start {la[0]:.1f}")
    for r in [head] + rows:
        log("  " + "  ".join(c.ljust(w) for c, w in zip(r, widths)) + "  " + r[6])
    for n in fig.notes:
        log(f"  note: {n}")
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--mb", type=int, default=300, help="experiment size in MiB (default 300)")
    ap.add_argument("--list-count", type=int, default=5000,
                    help="remote experiments to list (default 5000; 0 skips)")
    ap.add_argument("--repeat", type=int, default=7, help="repetitions, median reported")
    ap.add_argument("--warmup", type=int, default=1,
                    help="full-size repetitions run first and not recorded (default 1)")
    ap.add_argument("--backends", default=",".join(ALL_BACKENDS),
                    help="comma-separated subset of gcs,gdrive,box")
    ap.add_argument("--json", type=Path, help="write all figures to this file")
    ap.add_argument("--profile", type=Path, metavar="DIR",
                    help="also run one push, pull and list under cProfile; .prof files go here")
    ap.add_argument("--no-prime", action="store_true",
                    help="do not write+delete a scratch file before each timed step (see Primer)")
    ap.add_argument("--keep", action="store_true", help="keep the generated data")
    args = ap.parse_args(argv)
    names = [b.strip() for b in args.backends.split(",") if b.strip()]
    bad = [b for b in names if b not in BACKEND_CLASSES]
    if bad:
        ap.error(f"unknown backend(s) {', '.join(bad)}; use {', '.join(ALL_BACKENDS)}")

    os.environ.pop("RESUTIL_CONFIG", None)
    os.environ.pop("RESUTIL_NO_REMOTE", None)
    work = HERE / "work" / f"backends-{os.getpid()}"
    work.mkdir(parents=True)
    if args.profile:
        args.profile.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    results: dict[str, Any] = {
        "command": " ".join([Path(sys.argv[0]).name] + (argv if argv is not None else sys.argv[1:])),
        "date": datetime.now().isoformat(timespec="seconds"),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                    "platform": platform.platform()},
        "args": {"mb": args.mb, "list_count": args.list_count, "repeat": args.repeat,
                 "warmup": args.warmup, "prime": not args.no_prime},
        "backends": {},
    }
    global PRIME, PUSH_FSYNCS
    PRIME = Primer(None if args.no_prime else work / "prime.tmp", 2 * args.mb * MiB + 64 * MiB)
    PUSH_FSYNCS = push_fsyncs()
    results["resutil"] = state = resutil_state()
    newest = max(state["changed"].values(), default="-")
    log(f"resutil at {state['commit']} + {len(state['changed'])} uncommitted file(s) in "
        f"resutil/ (newest {newest}); push {'fsyncs' if PUSH_FSYNCS else 'does not fsync'} "
        "its scratch archive")
    try:
        src = work / "source"
        t = time.perf_counter()
        src_bytes = make_source(src, args.mb)
        log(f"source: {src_bytes / MiB:.0f} MiB of seeded random bytes in 11 files "
            f"({time.perf_counter() - t:.1f} s)")
        for name in names:
            be = BACKEND_CLASSES[name](work)
            log(f"\n== {be.label}")
            t = time.perf_counter()
            try:
                fig = bench_backend(be, args, work, src, src_bytes, args.profile)
            except Exception as e:  # noqa: BLE001 - report and go on with the next backend
                log(f"  {name}: FAILED: {type(e).__name__}: {e}")
                traceback.print_exc()
                results["backends"][name] = {"error": f"{type(e).__name__}: {e}"}
                continue
            finally:
                be.stop()
                rmtree(work / name)
            summary = summarise(be.label, fig, args)
            summary["wall_s"] = round(time.perf_counter() - t, 1)
            results["backends"][name] = summary
            log(f"  ({summary['wall_s']} s for this backend)")
    finally:
        if not args.keep:
            rmtree(work)
    results["wall_s"] = round(time.perf_counter() - started, 1)

    log("\n== summary (targets: push and pull overhead <= 10 % over the raw SDK transfer; "
        "list < 2 s)")
    for name, r in results["backends"].items():
        if "error" in r:
            log(f"  {name:7s} ERROR {r['error']}")
            continue
        ov = r.get("overheads", {})
        parts = []
        for key, raw, path_key in (("push", "raw_upload", "upload/raw_upload"),
                                   ("pull", "raw_download", "download/raw_download")):
            if f"{key}_overhead" in r:
                path = ov.get(path_key, {}).get("median")
                parts.append(f"{key} {pct(r[f'{key}_overhead'])} {verdict(r[f'{key}_pass'])}"
                             f" (transfer alone {pct(path)})")
        if "list_ratio" in r:
            parts.append(f"list {sec(r['medians_s']['list'])} = x{r['list_ratio']:.1f} raw "
                         f"{verdict(r['list_pass'])}")
        log(f"  {name:7s} " + "; ".join(parts))
    log(f"  total wall time {results['wall_s']:.0f} s")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2, default=str))
        log(f"figures written to {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
