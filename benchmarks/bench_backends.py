#!/usr/bin/env python3
"""Benchmark resutil's cloud backends against the raw SDKs, on the test suite's local servers.

For each backend (GCS on gcp-storage-emulator, Google Drive on tests/servers/fake_drive.py,
Box on tests/servers/fake_box.py) this starts the local server the tests use, with a
throw-away service-account / JWT key going through the real auth path, and writes a resutil
project whose ``resutil-conf.yaml`` points at it (``storage_type`` + ``storage_config`` with
``endpoint`` and ``key_file_path``). Then, per repetition, every time with a fresh
experiment identity:

* **push**: ``project.remote.push(folder)`` in-process: archive (zip + xxh128 hashes +
  fsync) to scratch, upload, sidecar upload;
* **archive only**: the same ``build_archive`` + fsync to a scratch file (the part of push
  that is not network);
* **raw upload**: the SDK's natural call for the same archive file, same chunk size as
  resutil (GCS ``blob.upload_from_filename``; Drive ``files().insert`` with a resumable
  ``MediaFileUpload`` through the same authorised service; Box
  ``chunked_uploads.upload_big_file``);
* **pull**: ``sync.pull_one(project, exp)`` into a fresh results folder (a second project on
  the same remote, whose listing is done before the clock starts, as ``resutil pull`` does);
* **extract only**: ``extract_archive`` of the same archive into a fresh folder;
* **raw download**: the SDK's natural call writing the same object to a file.

overhead = resutil / raw - 1; the issue's target is <= 10 % on the total (push includes the
archiving, pull the extraction).

**list**: a fresh remote is filled with ``--list-count`` tiny archives + sidecars written
straight into the server's store (not timed; see ``seed`` in each server class), then
``Remote(storage, project).experiments()`` (a fresh Remote, no cache; the storage is warm:
token and folder ids known) is timed against ONE raw SDK listing of the project folder,
fully paged. A "cold" figure (a freshly loaded Project: token exchange, folder look-ups,
both listings: what ``resutil list`` pays) is reported beside it. Target: < 2 s.

The servers run in child processes (``multiprocessing`` spawn), so their Python work does
not compete for the benchmark's GIL; on this 2-core machine client and server each get a
core. Timed steps are preceded by an untimed ``os.sync()``. Medians of ``--repeat`` runs
are reported. The script exits 0 whatever the figures: it is a measurement, not a test.

Run from the repository, with the project's virtualenv (the cloud extras and the
test-only packages, gcp-storage-emulator, PyJWT, cryptography, must be installed)::

    .venv/bin/python benchmarks/bench_backends.py [--mb 300] [--list-count 5000] \
        [--repeat 3] [--backends gcs,gdrive,box] [--json OUT] [--profile DIR]

Generated data lives under ``benchmarks/work/backends-<pid>/`` and is deleted at the end.
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
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Callable

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
if str(REPO) not in sys.path:  # `import resutil` and `import tests.servers...` from anywhere
    sys.path.insert(0, str(REPO))

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
        """Drop trashed files (resutil trashes in a Shared Drive), freeing their memory."""
        with self.fake.lock:
            doomed = [fid for fid, f in self.fake.files.items() if f["labels"]["trashed"]]
        for fid in doomed:
            self.fake.remove(fid)
        return len(doomed)

    def stop(self) -> None:
        self.fake.stop()


class _BoxServer:
    """tests/servers/fake_box.py, as tests/backend_box.py starts it."""

    def __init__(self, opts: dict) -> None:
        from tests.servers.fake_box import FakeBox

        self.fake = FakeBox()
        self.fake.start()
        self.info = {"url": self.fake.url}

    def call(self, method: str, *args: Any) -> Any:
        return getattr(self.fake, method)(*args)

    def seed(self, parent: str, folders: dict[str, list[tuple[str, bytes, str]]]) -> int:
        n = 0
        for title, entries in folders.items():
            fid = self.fake.create_folder(title, parent)
            for name, data, _ctype in entries:
                self.fake.put_file(fid, name, data)
                n += 1
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
        status, value = self.conn.recv()
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
        bucket = f"resutil-bench-{uuid.uuid4().hex[:10]}"
        self.admin.create_bucket(bucket)
        return {"bucket_name": bucket, "endpoint": self.url, "key_file_path": str(self.key_path)}

    def describe_chunks(self) -> str:
        return "16 MiB resumable chunks"

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
        raise NotImplementedError("Box: not wired yet")


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
def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    os.sync()  # write-back of the previous step must not leak into this one
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


def archive_only(project, folder: Path) -> int:
    """What push does before uploading: build the archive into a scratch file and fsync."""
    from resutil.archive import build_archive
    from resutil.metadata import read_meta

    meta = read_meta(folder, with_manifest=False)
    tmp = project.workspace.new_tmp("bench-archive")
    try:
        with open(tmp / "a.zip", "wb") as out:
            # the finish callback of Remote.push, minus writing the local metadata file
            info = build_archive(folder, out, lambda m: meta.to_text().encode())
            out.flush()
            os.fsync(out.fileno())
        return info.size
    finally:
        rmtree(tmp)


def bench_backend(be: Backend, args: argparse.Namespace, work: Path, src: Path,
                  src_bytes: int, prof_dir: Path | None) -> Figures:
    from resutil.archive import build_archive, extract_archive
    from resutil.metadata import read_meta
    from resutil.remote import Remote
    from resutil.sync import pull_one

    fig = Figures()
    t0 = time.perf_counter()
    be.start()
    fig.info["server_start_s"] = round(time.perf_counter() - t0, 2)
    fig.info["chunks"] = be.describe_chunks()
    root = work / be.name
    remote_cfg = be.new_remote()
    proj_dir = write_project(root / "push", be.name, remote_cfg)
    project = load_project(proj_dir)
    project.remote.experiments()  # token, folder look-ups: not part of any figure
    be.raw_begin(project)

    # Warm-up (untimed): a tiny push and a tiny raw upload, so that every timed step finds
    # its folders made and its connections open.
    tiny = project.workspace.path(project.workspace.create("warmup").name)
    (tiny / "x.txt").write_text("warm-up\n")
    project.remote.push(tiny)
    tiny_zip = root / "tiny.zip"
    with open(tiny_zip, "wb") as out:
        build_archive(tiny, out)
    be.raw_delete(be.raw_upload(tiny_zip, "warmup.zip"))

    # The archive the raw SDK sends: resutil's own builder, from an experiment like the pushed ones.
    ref_exp = new_experiment(project, src, "reference")
    ref_zip = root / "reference.zip"
    with open(ref_zip, "wb") as out:
        ref_info = build_archive(ref_exp, out)
    fig.info["archive_bytes"] = ref_info.size
    fig.info["source_bytes"] = src_bytes
    log(f"  archive: {ref_info.size / MiB:.1f} MiB ({src_bytes / MiB:.1f} MiB of files)")

    for rep in range(args.repeat):
        folder = new_experiment(project, src, f"bench-{rep}")
        name = folder.name

        s, _ = timed(lambda: archive_only(project, folder))
        fig.add("archive", s)

        s, info = timed(lambda: project.remote.push(folder))
        fig.add("push", s)
        if abs(info.size - fig.info["archive_bytes"]) > fig.info["archive_bytes"] // 100:
            fig.notes.append(f"rep {rep}: pushed archive is {info.size} B, reference "
                             f"{fig.info['archive_bytes']} B")

        s, handle = timed(lambda: be.raw_upload(ref_zip, f"raw-{rep}.zip"))
        fig.add("raw_upload", s)

        # pull into a fresh results folder: a second project on the same remote
        pull_proj = load_project(write_project(root / f"pull-{rep}", be.name, remote_cfg))
        exp = pull_proj.remote.require(name)  # `resutil pull` lists first; not timed
        s, written = timed(lambda: pull_one(pull_proj, exp))
        fig.add("pull", s)
        if written < src_bytes:
            fig.notes.append(f"rep {rep}: pull wrote {written} B of {src_bytes} B")
        rmtree(pull_proj.config.root)

        dest = root / f"raw-download-{rep}.zip"
        s, _ = timed(lambda: be.raw_download(handle, dest))
        fig.add("raw_download", s)
        if dest.stat().st_size != ref_info.size:
            fig.notes.append(f"rep {rep}: raw download has {dest.stat().st_size} B")
        dest.unlink()

        ext = root / f"extract-{rep}"
        ext.mkdir()
        s, _ = timed(lambda: extract_archive(ref_zip, ext))
        fig.add("extract", s)
        rmtree(ext)

        # free the server's memory and the local disk (untimed)
        project.remote.delete(project.remote.require(name))
        be.raw_delete(handle)
        be.cleanup()
        project.workspace.remove(name)
        os.sync()
        log(f"  rep {rep + 1}/{args.repeat}: push {fig.samples['push'][-1]:.2f} s "
            f"(archive {fig.samples['archive'][-1]:.2f}) / raw upload "
            f"{fig.samples['raw_upload'][-1]:.2f} s; pull {fig.samples['pull'][-1]:.2f} s "
            f"(extract {fig.samples['extract'][-1]:.2f}) / raw download "
            f"{fig.samples['raw_download'][-1]:.2f} s")

    if prof_dir is not None:
        profile_transfers(be, project, src, root, prof_dir)

    # ---- list
    if args.list_count > 0:
        list_cfg = be.new_remote()
        t = time.perf_counter()
        be.seed(list_cfg, list_entries(args.list_count))
        fig.info["list_seed_s"] = round(time.perf_counter() - t, 2)
        list_dir = write_project(root / "list", be.name, list_cfg)
        lproj = load_project(list_dir)
        lproj.remote.experiments()  # warm: token and folder ids
        be.raw_begin(lproj)
        for rep in range(args.repeat):
            s, found = timed(lambda: Remote(lproj.storage, PROJECT).experiments())
            fig.add("list", s)
            if len(found) != args.list_count:
                fig.notes.append(f"list rep {rep}: resutil found {len(found)} experiments")
            s, n = timed(lambda: be.raw_list(lproj))
            fig.add("raw_list", s)
            if n != args.list_count:
                fig.notes.append(f"list rep {rep}: raw listing returned {n} entries")
            s, found = timed(lambda: load_project(list_dir).remote.experiments())
            fig.add("list_cold", s)
        log(f"  list of {args.list_count}: resutil {fig.med('list'):.3f} s, raw "
            f"{fig.med('raw_list'):.3f} s, cold {fig.med('list_cold'):.3f} s "
            f"(seeding took {fig.info['list_seed_s']} s)")
        if prof_dir is not None:
            profile_call(prof_dir / f"{be.name}-list.prof",
                         lambda: Remote(lproj.storage, PROJECT).experiments())
    return fig


# ======================================================================= profiling
def profile_call(out: Path, fn: Callable[[], Any], top: int = 14) -> None:
    import cProfile
    import pstats

    prof = cProfile.Profile()
    os.sync()
    prof.enable()
    try:
        fn()
    finally:
        prof.disable()
    prof.dump_stats(str(out))
    s = io.StringIO()
    pstats.Stats(prof, stream=s).sort_stats("tottime").print_stats(top)
    lines = [ln for ln in s.getvalue().splitlines() if ln.strip()]
    log(f"  --- cProfile {out.name} (by own time; main thread only)")
    for ln in lines[3:3 + top + 2]:
        log("    " + ln[:150])


def profile_transfers(be: Backend, project, src: Path, root: Path, prof_dir: Path) -> None:
    from resutil.sync import pull_one

    folder = new_experiment(project, src, "profile")
    profile_call(prof_dir / f"{be.name}-push.prof", lambda: project.remote.push(folder))
    pull_proj = load_project(write_project(root / "pull-profile", be.name,
                                           dict(project.config.storage_config)))
    exp = pull_proj.remote.require(folder.name)
    profile_call(prof_dir / f"{be.name}-pull.prof", lambda: pull_one(pull_proj, exp))
    rmtree(pull_proj.config.root)
    project.remote.delete(project.remote.require(folder.name))
    project.workspace.remove(folder.name)


# ======================================================================= report
def pct(x: float | None) -> str:
    return "-" if x is None else f"{x * 100:+.1f} %"


def sec(x: float | None) -> str:
    return "-" if x is None else f"{x:.2f} s"


def summarise(name: str, fig: Figures, args: argparse.Namespace) -> dict:
    m = fig.med
    out: dict[str, Any] = {"medians_s": {k: m(k) for k in fig.samples},
                           "samples_s": fig.samples, "info": fig.info, "notes": fig.notes}
    mb = fig.info.get("archive_bytes", 0) / MiB
    rows = []

    def transfer(label: str, ours: str, raw: str, part: str, part_label: str) -> None:
        if m(ours) is None or m(raw) is None:
            return
        over = m(ours) / m(raw) - 1
        out[f"{ours}_overhead"] = over
        out[f"{ours}_pass"] = over <= OVERHEAD_TARGET
        rows.append((label, sec(m(ours)), sec(m(raw)), pct(over),
                     "PASS" if over <= OVERHEAD_TARGET else "FAIL",
                     f"{part_label} {sec(m(part))}; {mb / m(ours):.0f} vs {mb / m(raw):.0f} MiB/s"))

    transfer("push (archive + upload)", "push", "raw_upload", "archive", "archive only")
    transfer("pull (download + extract)", "pull", "raw_download", "extract", "extract only")
    if m("list") is not None:
        ratio = m("list") / m("raw_list")
        out["list_ratio"] = ratio
        out["list_pass"] = m("list") < LIST_TARGET_S
        out["list_cold_pass"] = m("list_cold") < LIST_TARGET_S
        rows.append((f"list {args.list_count}", sec(m("list")), sec(m("raw_list")),
                     f"x{ratio:.2f}", "PASS" if m("list") < LIST_TARGET_S else "FAIL",
                     f"cold (new Project) {sec(m('list_cold'))}"
                     f" {'PASS' if m('list_cold') < LIST_TARGET_S else 'FAIL'}"))
    out["rows"] = rows
    head = ("", "resutil", "raw SDK", "overhead", "target", "detail")
    widths = [max(len(str(r[i])) for r in rows + [head]) for i in range(5)]
    log(f"\n{name}: median of {args.repeat}; {fig.info.get('chunks', '')}")
    log("  " + "  ".join(str(h).ljust(w) for h, w in zip(head, widths)) + "  " + head[5])
    for r in rows:
        log("  " + "  ".join(str(c).ljust(w) for c, w in zip(r, widths)) + "  " + r[5])
    for n in fig.notes:
        log(f"  note: {n}")
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--mb", type=int, default=300, help="experiment size in MiB (default 300)")
    ap.add_argument("--list-count", type=int, default=5000,
                    help="remote experiments to list (default 5000; 0 skips)")
    ap.add_argument("--repeat", type=int, default=3, help="repetitions, median reported")
    ap.add_argument("--backends", default=",".join(ALL_BACKENDS),
                    help="comma-separated subset of gcs,gdrive,box")
    ap.add_argument("--json", type=Path, help="write all figures to this file")
    ap.add_argument("--profile", type=Path, metavar="DIR",
                    help="also run one push, pull and list under cProfile; .prof files go here")
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
        "args": {"mb": args.mb, "list_count": args.list_count, "repeat": args.repeat},
        "backends": {},
    }
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

    log("\n== summary (targets: overhead <= 10 % on push and pull; list < 2 s)")
    for name, r in results["backends"].items():
        if "error" in r:
            log(f"  {name:7s} ERROR {r['error']}")
            continue
        parts = []
        if "push_overhead" in r:
            parts.append(f"push {pct(r['push_overhead'])} {'PASS' if r['push_pass'] else 'FAIL'}")
        if "pull_overhead" in r:
            parts.append(f"pull {pct(r['pull_overhead'])} {'PASS' if r['pull_pass'] else 'FAIL'}")
        if "list_ratio" in r:
            parts.append(f"list {sec(r['medians_s']['list'])} (x{r['list_ratio']:.2f} raw) "
                         f"{'PASS' if r['list_pass'] else 'FAIL'}")
        log(f"  {name:7s} " + "; ".join(parts))
    log(f"  total wall time {results['wall_s']:.0f} s")
    if args.json:
        for r in results["backends"].values():
            r.pop("rows", None)
        args.json.write_text(json.dumps(results, indent=2, default=str))
        log(f"figures written to {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
