"""Google Drive as storage, through a service account (pydrive2 + the Drive v2 API).

Layout: ``<base folder>/<folder>/<name>``. ``<folder>`` is a subfolder, found by title, of
the configured base folder (``storage_config.base_folder_id``) and created on first upload,
so ``<base>/<project>/<name>.zip`` is exactly what resutil 0.1.x reads.

Drive allows several items with one title in a folder. This backend always picks the oldest
(earliest ``createdDate``, then smallest id), so every client sees the same one: ``list``
gives one entry per title, ``upload`` replaces the content of that file (``files.update``
with media: same id, the new content appears atomically when the upload completes) and
never adds a duplicate. A file's version is its ``md5Checksum``. Drive has no conditional
create, so an exclusive create creates, then checks which file of that title is the oldest
(see ``_create_exclusive``).

Auth and transport: pydrive2's ``GoogleAuth`` with a service-account settings dict and
``ServiceAuth()`` (oauth2client; the key's ``token_uri`` is honoured), optional domain-wide
delegation with ``client_user_email``. File operations use the Drive v2 service that
pydrive2 builds (``auth.service``) directly, because pydrive2's file helpers cannot report
upload progress, choose a chunk size or resume a broken upload. httplib2 is not
thread-safe, so every thread gets its own authorised ``Http`` (``Get_Http_Object``) and
passes it to each request; the service object itself is shared read-only. That makes
parallel transfers safe (``max_workers = 4``).

Setting ``storage_config.endpoint`` points the service at a Drive-API-compatible server
(a proxy, or the test fake): the v2 service is rebuilt from the discovery document bundled
with google-api-python-client with ``rootUrl``/``baseUrl`` rewritten (``client_options``
alone is not enough: media-upload URLs would keep ``https``).

Uploads over ``RESUMABLE_THRESHOLD`` use a resumable session in ``CHUNK_SIZE`` pieces; the
file appears only when the last piece is in, and a broken connection resumes the same
session (asking Drive how much arrived) instead of starting over. Deletes are permanent;
where only trashing is allowed (a Shared Drive's Content manager) the file is trashed,
which hides it from resutil and 0.1.x alike.

Errors become one-line ``StorageError``s naming Google Drive, the folder or file and what
to do; network failures, 5xx and rate limits are ``Transient`` so the base retries them.
Connections time out after ``CONNECT_TIMEOUT`` seconds and reads after ``READ_TIMEOUT``.
"""

from __future__ import annotations

import datetime as _dt
import errno
import hashlib
import http.client
import io
import json
import mimetypes
import os
import socket
import ssl
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO
from urllib.parse import urlsplit

import httplib2
from googleapiclient import discovery, discovery_cache
from googleapiclient.errors import HttpError
from googleapiclient.http import MediaIoBaseDownload, MediaIoBaseUpload
from oauth2client.client import AccessTokenRefreshError
from pydrive2.auth import GoogleAuth

from ..errors import (
    ConfigError,
    ResutilError,
    StorageError,
    StorageNotFound,
    StoragePermission,
    StorageUnavailable,
)
from ..progress import Callback
from .base import GrowingFile, ObjectInfo, Storage, StorageSettings, Transient, not_found

FOLDER_MIME = "application/vnd.google-apps.folder"
GOOGLE_APPS_MIME = "application/vnd.google-apps."
DRIVE_SCOPE = "https://www.googleapis.com/auth/drive"
DEFAULT_HOST = "www.googleapis.com"

CHUNK_SIZE = 16 << 20  # resumable chunk (a multiple of 256 KiB)
RESUMABLE_THRESHOLD = 8 << 20  # smaller files go in one multipart request
LISTING_FRESH = 60.0  # seconds a listing's file ids serve checked downloads
DOWNLOAD_CHUNK_SIZE = 16 << 20
CONNECT_TIMEOUT = 3.0  # a dead network is reported after ~4 attempts x 3 s
READ_TIMEOUT = 60.0
TOKEN_MARGIN = _dt.timedelta(minutes=5)  # refresh before a chunk if the token expires sooner

# md5Checksum is an object's version: Drive computes it from the content of every upload.
LIST_FIELDS = ("nextPageToken,"
               "items(id,title,mimeType,fileSize,createdDate,modifiedDate,md5Checksum)")
FILE_FIELDS = "id,title,mimeType,fileSize,createdDate,modifiedDate,md5Checksum"
# Reasons Google uses for "slow down" / "try again"; they come with 403, 429 or 5xx.
TRANSIENT_REASONS = {
    "rateLimitExceeded", "userRateLimitExceeded", "backendError", "internalError",
    "sharingRateLimitExceeded", "transientError",
}
PERMISSION_REASONS = {
    "insufficientFilePermissions", "forbidden", "insufficientPermissions",
    "appNotAuthorizedToFile", "cannotAddParent", "teamDriveMembershipRequired",
    "fileWriterTeamDriveMoveInDisabled",
}
NETWORK_ERRNOS = {
    errno.ENETUNREACH, errno.EHOSTUNREACH, errno.ENETDOWN, errno.EADDRNOTAVAIL,
    errno.ECONNABORTED, errno.ECONNREFUSED, errno.ECONNRESET, errno.ETIMEDOUT, errno.EPIPE,
}


# -- transport: httplib2 with a short connect timeout ------------------------------------
class _ConnectTimeout:
    """Connect (and TLS handshake) with CONNECT_TIMEOUT, then use the read timeout."""

    timeout: float | None
    sock: Any

    def connect(self) -> None:
        read_timeout = self.timeout
        self.timeout = CONNECT_TIMEOUT if read_timeout is None else min(
            CONNECT_TIMEOUT, read_timeout)
        try:
            super().connect()  # type: ignore[misc]
        finally:
            self.timeout = read_timeout
        if self.sock is not None:
            self.sock.settimeout(read_timeout)


class _HTTPConnection(_ConnectTimeout, httplib2.HTTPConnectionWithTimeout):
    pass


class _HTTPSConnection(_ConnectTimeout, httplib2.HTTPSConnectionWithTimeout):
    pass


class _Http(httplib2.Http):
    def request(self, uri, method="GET", body=None, headers=None,
                redirections=httplib2.DEFAULT_MAX_REDIRECTS, connection_type=None):
        if connection_type is None:
            connection_type = (_HTTPSConnection if uri.lower().startswith("https:")
                               else _HTTPConnection)
        return super().request(uri, method, body, headers, redirections, connection_type)


class _GoogleAuth(GoogleAuth):
    """pydrive2's GoogleAuth whose Http objects have connect/read timeouts."""

    def _build_http(self):
        http = _Http(timeout=self.http_timeout)
        http.redirect_codes = http.redirect_codes - {308}  # 308 = resumable "incomplete"
        return http


class _ChunkUpload(MediaIoBaseUpload):
    """Send each chunk as bytes, not as a stream slice: a request httplib2 or oauth2client
    resends (stale keep-alive connection, 401 and token refresh) then carries its body
    again instead of an exhausted stream."""

    def has_stream(self) -> bool:
        return False


class _GrowingUpload(_ChunkUpload):
    """Chunks of a file still being written (a GrowingFile). Before each chunk, ``size``
    waits until either the writer is done (then the chunk carries the total, even when
    the length is a multiple of the chunk size) or more than a chunk is left (the chunk
    goes as "bytes a-b/*")."""

    def __init__(self, fd: GrowingFile, **kw: Any) -> None:
        super().__init__(fd, **kw)
        self._next = 0

    def size(self) -> int | None:
        done = self._fd.wait_for_size(self._next + self._chunksize + 1)
        return os.path.getsize(self._fd.path) if done else None

    def getbytes(self, begin: int, length: int) -> bytes:
        data = super().getbytes(begin, length)
        self._next = begin + len(data)
        return data


def _mime(name: str) -> str:
    return mimetypes.guess_type(name)[0] or "application/octet-stream"


# -- helpers ---------------------------------------------------------------------------
def _quote(value: str) -> str:
    """A Drive query string literal."""
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _timestamp(rfc3339: str | None) -> float | None:
    if not rfc3339:
        return None
    try:
        return _dt.datetime.fromisoformat(rfc3339.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def _oldest_first(items: list[dict]) -> list[dict]:
    # RFC 3339 UTC strings of one format sort chronologically.
    return sorted(items, key=lambda f: (f.get("createdDate") or "", f.get("id") or ""))


def _http_error_details(exc: HttpError) -> tuple[int, str, str]:
    """(status, reason, message) of a Google API error response."""
    status = int(getattr(exc.resp, "status", 0) or 0)
    reason, message = "", ""
    try:
        body = json.loads(exc.content.decode("utf-8", "replace"))
        err = body.get("error", {}) if isinstance(body, dict) else {}
        if isinstance(err, dict):
            message = str(err.get("message") or "")
            errors = err.get("errors") or [{}]
            reason = str(errors[0].get("reason") or err.get("status") or "")
        else:  # {"error": "invalid_grant", "error_description": ...}
            reason = str(err)
            message = str(body.get("error_description") or "")
    except (ValueError, AttributeError, TypeError, IndexError):
        message = (exc.content or b"")[:200].decode("utf-8", "replace")
    return status, reason, message.strip().splitlines()[0] if message.strip() else ""


def _is_network_error(exc: BaseException) -> bool:
    if isinstance(exc, (ConnectionError, TimeoutError, socket.timeout, socket.gaierror,
                        httplib2.HttpLib2Error, http.client.HTTPException, ssl.SSLError)):
        return True
    return isinstance(exc, OSError) and exc.errno in NETWORK_ERRNOS


class GDriveStorage(Storage):
    """Files in subfolders of a Google Drive folder; see the module docstring."""

    type_name = "gdrive"
    extra = "gdrive"
    max_workers = 4  # one authorised httplib2.Http per thread
    uploads_while_written = True

    def __init__(self, settings: StorageSettings) -> None:
        super().__init__(settings)
        self.base_folder_id = str(settings.require("base_folder_id")).strip()
        self.key_file: Path = settings.path("key_file_path")  # type: ignore[assignment]
        self.user_email: str | None = settings.get("client_user_email")
        endpoint = settings.get("endpoint")
        self.endpoint: str | None = str(endpoint).rstrip("/") if endpoint else None
        if self.endpoint and urlsplit(self.endpoint).scheme not in ("http", "https"):
            raise ConfigError(
                f"{settings.config_path or 'the config'}: storage_config.endpoint must be an "
                f"http(s) URL, not {endpoint!r}"
            )
        self._lock = threading.RLock()
        self._local = threading.local()
        self._auth: GoogleAuth | None = None
        self._service: Any = None
        self._client_email = ""
        self._drive_id: str | None = None  # the Shared Drive holding the base folder
        self._base_checked = False
        self._folders: dict[str, str] = {}
        # folder -> (when, title -> file) from the last listing: a download whose content
        # the caller checks against its own hash uses the id from there (no look-up).
        self._listed: dict[str, tuple[float, dict[str, dict]]] = {}

    def describe(self) -> str:
        where = f"Google Drive folder {self.base_folder_id}"
        return f"{where} (via {self.endpoint})" if self.endpoint else where

    # -- session ---------------------------------------------------------------------------
    def _read_key(self) -> dict:
        """The service-account key, checked here so a wrong file gets a clear message."""
        key = self.key_file
        fix = "set storage_config.key_file_path to a service-account JSON key"
        try:
            text = key.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise ConfigError(f"Google Drive key file not found: {key}; {fix}") from None
        except (OSError, UnicodeDecodeError) as e:
            raise ConfigError(f"Google Drive key file {key} cannot be read ({e}); {fix}") from None
        try:
            info = json.loads(text)
        except ValueError as e:
            raise ConfigError(
                f"Google Drive key file {key} is not valid JSON ({e}); {fix}") from None
        if not isinstance(info, dict):
            raise ConfigError(f"Google Drive key file {key} is not a JSON object; {fix}")
        if info.get("type") != "service_account":
            if "installed" in info or "web" in info:
                raise ConfigError(
                    f"Google Drive key file {key} is an OAuth client secret, not a "
                    "service-account key; create a key for a service account (Google Cloud "
                    "console > IAM > Service accounts > Keys > Add key > JSON) and use that"
                )
            raise ConfigError(
                f"Google Drive key file {key} is not a service-account key "
                f"(type is {info.get('type')!r}, expected 'service_account'); {fix}"
            )
        missing = [k for k in ("client_email", "private_key", "token_uri") if not info.get(k)]
        if missing:
            raise ConfigError(
                f"Google Drive key file {key} lacks {', '.join(missing)}; download a new "
                "JSON key for the service account"
            )
        return info

    def _session(self) -> tuple[GoogleAuth, Any]:
        """pydrive2 auth and the Drive v2 service, made on first use (no network here:
        the token is fetched by the first request)."""
        with self._lock:
            if self._auth is None:
                info = self._read_key()
                settings = {
                    "client_config_backend": "service",
                    "service_config": {
                        "client_json_file_path": str(self.key_file),
                        "client_user_email": self.user_email,
                    },
                    "oauth_scope": [DRIVE_SCOPE],
                    "save_credentials": False,
                }
                auth = _GoogleAuth(settings=settings, http_timeout=READ_TIMEOUT)
                try:
                    auth.ServiceAuth()  # parses the key, builds the service; no request yet
                except Exception as e:  # noqa: BLE001 - all local: the key is unusable
                    what = e.args[0] if isinstance(e, ValueError) and e.args else e
                    raise ConfigError(
                        f"Google Drive key file {self.key_file} cannot be used as a "
                        f"service-account key ({what}); download a new JSON key for the "
                        "service account"
                    ) from None
                service = auth.service
                if self.endpoint:
                    doc = json.loads(discovery_cache.get_static_doc("drive", "v2"))
                    doc["rootUrl"] = self.endpoint + "/"
                    doc["baseUrl"] = doc["rootUrl"] + doc["servicePath"]
                    doc["batchPath"] = "batch/drive/v2"
                    service = discovery.build_from_document(doc, http=auth.http)
                    auth.service = service
                self._client_email = info["client_email"]
                self._service, self._auth = service, auth
            return self._auth, self._service

    def _http(self) -> httplib2.Http:
        """This thread's authorised Http (httplib2 objects must not be shared)."""
        http = getattr(self._local, "http", None)
        if http is None:
            auth, _ = self._session()
            http = self._local.http = auth.Get_Http_Object()
        return http

    def _files_api(self) -> Any:
        """This thread's ``service.files()`` (each call of it builds ~20 methods from the
        discovery document: ~6 ms, once per request before this was kept)."""
        files = getattr(self._local, "files", None)
        if files is None:
            _, service = self._session()
            files = self._local.files = service.files()
        return files

    def _execute(self, make: Callable[[Any], Any]) -> Any:
        return make(self._files_api()).execute(http=self._http())

    def _fresh_token(self) -> None:
        """Refresh the access token if it expires within TOKEN_MARGIN (a long upload would
        otherwise resend a whole chunk after a 401)."""
        auth, _ = self._session()
        creds = auth.credentials

        def expiring() -> bool:
            expiry = getattr(creds, "token_expiry", None)  # naive UTC in oauth2client
            now = _dt.datetime.now(_dt.timezone.utc).replace(tzinfo=None)
            return expiry is not None and expiry - now < TOKEN_MARGIN

        if expiring():
            with self._lock:
                if expiring():
                    creds.refresh(auth._build_http())

    @property
    def client_email(self) -> str:
        """The service account's address (from the key), for messages."""
        if not self._client_email:
            try:
                self._client_email = self._read_key()["client_email"]
            except ResutilError:
                return "the service account"
        return self._client_email

    @property
    def identity(self) -> str:
        """Who Drive sees: the delegated user, else the service account."""
        return self.user_email or self.client_email

    # -- folders -----------------------------------------------------------------------
    def _base(self) -> str:
        """The base folder id, after checking once that it exists and we can see it
        (listing a missing or unshared folder silently returns nothing)."""
        if self._base_checked:
            return self.base_folder_id
        with self._lock:
            if self._base_checked:
                return self.base_folder_id
            try:
                meta = self._execute(lambda f: f.get(
                    fileId=self.base_folder_id, supportsAllDrives=True,
                    fields="id,title,mimeType,labels,driveId"))
            except HttpError as e:
                status, _, _ = _http_error_details(e)
                if status != 404:
                    raise
                raise StorageNotFound(
                    f"Google Drive folder {self.base_folder_id} not found or not shared with "
                    f"{self.identity}; share it with that address (as Content manager of "
                    "its Shared Drive) or fix storage_config.base_folder_id"
                ) from None
            if meta.get("mimeType") != FOLDER_MIME:
                raise ConfigError(
                    f"storage_config.base_folder_id {self.base_folder_id} is a file "
                    f"({meta.get('title')!r}), not a Google Drive folder; use the id at the "
                    "end of the folder's URL"
                )
            if (meta.get("labels") or {}).get("trashed"):
                raise StorageNotFound(
                    f"Google Drive folder {self.base_folder_id} ({meta.get('title')!r}) is in "
                    "the trash; restore it or choose another storage_config.base_folder_id"
                )
            self._drive_id = meta.get("driveId") or None
            self._base_checked = True
            return self.base_folder_id

    def _query(self, q: str, fields: str = LIST_FIELDS) -> list[dict]:
        """Every item matching ``q``, across all pages."""
        self._base()
        params: dict[str, Any] = {
            "q": q, "maxResults": 1000, "fields": fields,
            "supportsAllDrives": True, "includeItemsFromAllDrives": True,
        }
        if self._drive_id:
            params.update(corpora="drive", driveId=self._drive_id)
        items: list[dict] = []
        while True:
            page = self._execute(lambda f: f.list(**params))
            items.extend(page.get("items") or [])
            params["pageToken"] = page.get("nextPageToken")
            if not params["pageToken"]:
                return items

    def _find_folders(self, folder: str) -> list[dict]:
        q = (f"{_quote(self._base())} in parents and title = {_quote(folder)} "
             f"and mimeType = {_quote(FOLDER_MIME)} and trashed = false")
        return _oldest_first(self._query(q))

    def _folder_id(self, folder: str, create: bool) -> str | None:
        """The id of subfolder ``folder`` of the base folder (the oldest of equal titles),
        created when missing and ``create``; None when missing otherwise."""
        if folder in self._folders:
            return self._folders[folder]
        with self._lock:
            if folder in self._folders:
                return self._folders[folder]
            found = self._find_folders(folder)
            if not found and create:
                made = self._execute(lambda f: f.insert(
                    body={"title": folder, "mimeType": FOLDER_MIME,
                          "parents": [{"id": self._base()}]},
                    supportsAllDrives=True, fields="id,createdDate"))
                # Another client may have created one at the same time: settle on the oldest
                # and remove our empty duplicate.
                found = self._find_folders(folder) or [made]
                if found[0]["id"] != made["id"]:
                    self._remove(made["id"])
            if not found:
                return None
            self._folders[folder] = found[0]["id"]
            return found[0]["id"]

    def _files(self, folder_id: str, title: str | None = None) -> list[dict]:
        """Files (not folders or Google Docs) in a folder, oldest first."""
        q = (f"{_quote(folder_id)} in parents and trashed = false "
             f"and mimeType != {_quote(FOLDER_MIME)}")
        if title is not None:
            q += f" and title = {_quote(title)}"
        items = self._query(q)
        return _oldest_first([f for f in items
                              if not str(f.get("mimeType", "")).startswith(GOOGLE_APPS_MIME)])

    def _file(self, folder: str, name: str) -> dict | None:
        folder_id = self._folder_id(folder, create=False)
        if folder_id is None:
            return None
        found = self._files(folder_id, name)
        return found[0] if found else None

    def _remove(self, file_id: str) -> None:
        """Delete permanently; a Shared Drive's Content manager may only trash, and a trashed
        file is invisible to resutil and 0.1.x alike."""
        try:
            self._execute(lambda f: f.delete(fileId=file_id, supportsAllDrives=True))
        except HttpError as e:
            status, reason, _ = _http_error_details(e)
            if status == 404:
                return
            if status != 403 or reason not in PERMISSION_REASONS:
                raise
            self._execute(lambda f: f.trash(fileId=file_id, supportsAllDrives=True,
                                            fields="id"))

    # -- primitives ----------------------------------------------------------------------
    def _list(self, folder: str) -> list[ObjectInfo]:
        folder_id = self._folder_id(folder, create=False)
        if folder_id is None:
            return []
        seen: dict[str, ObjectInfo] = {}
        ids: dict[str, dict] = {}
        for f in self._files(folder_id):  # oldest first: the first of each title wins
            title = f.get("title", "")
            if title not in seen:
                seen[title] = self._info(f)
                ids[title] = f
        with self._lock:
            self._listed[folder] = (time.monotonic(), ids)
        return list(seen.values())

    @staticmethod
    def _info(f: dict) -> ObjectInfo:
        return ObjectInfo(f.get("title", ""), int(f.get("fileSize") or 0),
                          _timestamp(f.get("modifiedDate")), f.get("md5Checksum") or None)

    def stat(self, folder: str, name: str) -> ObjectInfo | None:
        """One title query instead of listing the whole folder."""
        f = self._call(lambda: self._file(folder, name), "read", f"{folder}/{name}")
        return self._info(f) if f else None

    def _upload(self, src: Path, folder: str, name: str, callback: Callback) -> ObjectInfo:
        try:
            return self._upload_once(src, folder, name, callback)
        except HttpError as e:
            if _http_error_details(e)[0] not in (404, 410):
                raise
            # The folder or the file being replaced was removed since we looked it up (e.g.
            # in the web UI during a long pipeline run), or the upload session expired:
            # look everything up again and retry.
            raise self._start_over(folder, f"cannot upload {folder}/{name}: the folder "
                                   "changed or the upload session expired") from None

    def _start_over(self, folder: str, why: str) -> Transient:
        """Forget the looked-up folder ids, for a retry that looks them up again."""
        with self._lock:
            self._folders.pop(folder, None)
            self._base_checked = False
        return Transient(StorageUnavailable(f"{self.describe()}: {why}; starting over"))

    def _upload_once(self, src: Path, folder: str, name: str, callback: Callback) -> ObjectInfo:
        size = src.stat().st_size
        callback.set_total(size)
        resumable = size > RESUMABLE_THRESHOLD
        with open(src, "rb") as fd:
            media = _ChunkUpload(fd, mimetype=_mime(name), chunksize=CHUNK_SIZE, resumable=resumable)
            request = self._media_request(folder, name, media)
            if not resumable:
                stored = request.execute(http=self._http())
                callback.advance(size)
                return self._info(stored)
            _, stored = self._resumable(request, size, callback, f"{folder}/{name}")
            return self._info(stored)

    def _upload_growing(self, src: GrowingFile, folder: str, name: str, callback: Callback
                        ) -> ObjectInfo | None:
        # A resumable session of unknown length ("bytes a-b/*"), fed chunk by chunk as the
        # archive is written; the file appears only when the last (short) chunk is in.
        if src.wait(CHUNK_SIZE):  # complete before the first chunk filled: the usual way
            return super()._upload_growing(src, folder, name, callback)
        media = _GrowingUpload(src, mimetype=_mime(name), chunksize=CHUNK_SIZE, resumable=True)
        request = self._media_request(folder, name, media)
        sent, stored = self._resumable(request, None, callback, f"{folder}/{name}")
        callback.advance(os.path.getsize(src.path) - sent)
        return self._info(stored)

    def _just_listed(self, folder: str, name: str) -> dict | None:
        """``folder/name`` as the last listing saw it, if that was moments ago; used once
        (a retry looks it up). A file replaced since by another machine keeps its id (an
        update), and one removed answers 404; the caller's hash check catches the rest."""
        with self._lock:
            when, ids = self._listed.get(folder, (0.0, {}))
            if time.monotonic() - when > LISTING_FRESH:
                return None
            return ids.pop(name, None)

    def _listed_file(self, folder: str, name: str) -> dict | None:
        """``folder/name`` as a listing of the last LISTING_FRESH seconds saw it (kept for
        the next reads, unlike ``_just_listed``)."""
        with self._lock:
            when, ids = self._listed.get(folder, (0.0, {}))
            return ids.get(name) if time.monotonic() - when <= LISTING_FRESH else None

    def _forget(self, folder: str, *names: str) -> None:
        with self._lock:
            for name in names:
                self._listed.get(folder, (0.0, {}))[1].pop(name, None)

    def _media_request(self, folder: str, name: str, media: Any) -> Any:
        """An insert of ``folder/name``, or an update of the file of that name (same id)."""
        self._forget(folder, name)
        folder_id = self._folder_id(folder, create=True)
        assert folder_id is not None
        existing = self._files(folder_id, name)
        if existing:  # replace the content of the file everybody sees; same id
            return self._files_api().update(
                fileId=existing[0]["id"], body={}, media_body=media,
                supportsAllDrives=True, fields=FILE_FIELDS)
        return self._files_api().insert(
            body={"title": name, "mimeType": _mime(name), "parents": [{"id": folder_id}]},
            media_body=media, supportsAllDrives=True, fields=FILE_FIELDS)

    def _resumable(self, request: Any, size: int | None, callback: Callback, target: str
                   ) -> tuple[int, dict]:
        """Send the chunks; resume the same session after a network error or 5xx (the
        file only appears once the last chunk is in). Returns the bytes reported and the
        stored file (FILE_FIELDS)."""
        reported = 0
        failures = 0
        response = None
        while response is None:
            self._fresh_token()
            try:
                status, response = request.next_chunk(http=self._http())
            except Exception as exc:  # noqa: BLE001 - classified below
                if request.resumable_uri is None:  # no session yet: the caller retries
                    raise
                if isinstance(exc, HttpError) and _http_error_details(exc)[0] in (404, 410):
                    raise  # the session expired: _upload starts a new one
                self._retry_or_raise(exc, "upload", target, failures, callback)
                failures += 1
                request._in_error_state = True  # ask the server what it has
                continue
            done = (size or reported) if response is not None else \
                (status.resumable_progress if status else 0)
            if done > reported:
                callback.advance(done - reported)
                reported = done
                failures = 0
        return reported, response

    def _retry_or_raise(self, exc: Exception, action: str, target: str, failures: int,
                        callback: Callback) -> None:
        """Inside a transfer that made progress: return after a backoff if ``exc`` is worth
        retrying in place, else raise it as a StorageError. The final error is not
        ``Transient``: the transfer already had its retries, the base must not start over."""
        try:
            err = self._translate(exc, action, target)
        except Transient as t:
            if failures >= self.settings.retries:
                raise t.error from None
            wait = self.settings.retry_wait * 2**failures
            callback.message(f"{t.error} - resuming in {wait:.1f}s")
            time.sleep(wait)
            return
        if err is None:
            raise exc
        raise err from None

    def _download(self, folder: str, name: str, out: BinaryIO, callback: Callback,
                  checked: bool = False) -> None:
        f = self._just_listed(folder, name) if checked else None
        known = f is not None
        if f is None:
            f = self._file(folder, name)
        if f is None:
            raise not_found(self, folder, name)
        callback.set_total(int(f.get("fileSize") or 0))
        request = self._files_api().get_media(fileId=f["id"], supportsAllDrives=True)
        request.http = self._http()
        reported = 0
        failures = 0
        downloader = MediaIoBaseDownload(out, request, chunksize=DOWNLOAD_CHUNK_SIZE)
        done = False
        while not done:
            try:
                status, done = downloader.next_chunk()
            except Exception as exc:  # noqa: BLE001 - classified below
                if known and reported == 0 and isinstance(exc, HttpError) \
                        and _http_error_details(exc)[0] == 404:  # gone since it was listed
                    raise Transient(not_found(self, folder, name)) from None
                # A chunk is written only once complete, so the same downloader resumes.
                if reported == 0:  # nothing to keep yet: the caller retries
                    raise
                self._retry_or_raise(exc, "download", f"{folder}/{name}", failures,
                                     callback)
                failures += 1
                continue
            if status.resumable_progress > reported:
                callback.advance(status.resumable_progress - reported)
                reported = status.resumable_progress
                failures = 0

    def _download_range(self, folder: str, name: str, start: int, length: int, out: BinaryIO,
                        version: str | None = None) -> None:
        # files.get?alt=media with a Range header: Drive answers 206 with those bytes.
        # The file id comes from the listing when it was moments ago (one request then);
        # an update keeps the id, so a replaced file is caught by the caller's checks.
        f = self._listed_file(folder, name)
        known = f is not None
        for _ in range(2):
            if f is None:
                f = self._file(folder, name)
            if f is None:
                raise not_found(self, folder, name)
            request = self._files_api().get_media(fileId=f["id"], supportsAllDrives=True)
            request.headers["Range"] = f"bytes={start}-{start + length - 1}"
            try:
                out.write(request.execute(http=self._http()))
                return
            except HttpError as e:
                status = _http_error_details(e)[0]
                if status == 416:
                    return  # starts at or past its end: nothing there
                if status != 404 or not known:
                    raise
                self._forget(folder, name)  # removed since listed: look it up again
                f, known = None, False

    def _delete(self, folder: str, name: str) -> None:
        self._forget(folder, name)
        folder_id = self._folder_id(folder, create=False)
        found = self._files(folder_id, name) if folder_id else []
        if not found:
            raise not_found(self, folder, name)
        for f in found:  # duplicates too, so an older copy does not reappear
            self._remove(f["id"])

    def _rename(self, folder: str, name: str, new_name: str) -> ObjectInfo:
        self._forget(folder, name, new_name)
        folder_id = self._folder_id(folder, create=False)
        found = self._files(folder_id, name) if folder_id else []
        if not found:
            raise not_found(self, folder, name)
        if new_name == name:
            return self._info(found[0])
        assert folder_id is not None
        # Replace the target: remove it first, so the renamed file is the only one with
        # that title (a crash in between loses the old target, never the renamed file).
        for f in self._files(folder_id, new_name):
            self._remove(f["id"])
        keep, *shadowed = found
        renamed = self._execute(lambda f: f.patch(
            fileId=keep["id"], body={"title": new_name}, supportsAllDrives=True,
            fields=FILE_FIELDS))
        for f in shadowed:  # hidden duplicates of the old name must not resurface
            self._remove(f["id"])
        return self._info(renamed)  # same content, same md5Checksum: the version stays

    def _create_exclusive(self, folder: str, name: str, data: bytes) -> bool:
        """Drive has no conditional create: create, then check. The file is inserted, then
        every file of that title in the folder is listed; the earliest (createdDate, then
        id: the order every client reads in) wins, and a loser deletes its own file. This
        is exclusive as long as every writer of the name follows it and a listing shows
        every file created before it was asked for (see docs/backend-gdrive.md)."""
        self._forget(folder, name)
        folder_id = self._folder_id(folder, create=True)
        assert folder_id is not None
        mine = hashlib.md5(data).hexdigest()  # data is unique to the caller
        found = self._files(folder_id, name)
        made = None
        if not found:
            media = _ChunkUpload(io.BytesIO(data), mimetype=_mime(name), resumable=False)
            try:
                made = self._execute(lambda f: f.insert(
                    body={"title": name, "mimeType": _mime(name),
                          "parents": [{"id": folder_id}]},
                    media_body=media, supportsAllDrives=True, fields=FILE_FIELDS))
            except HttpError as e:
                if _http_error_details(e)[0] != 404:
                    raise
                raise self._start_over(  # the folder was removed since we looked it up
                    folder, f"cannot create {folder}/{name}: the folder changed") from None
            found = self._files(folder_id, name)
            if all(f["id"] != made["id"] for f in found):  # the listing lags behind
                found = _oldest_first([*found, made])
        # Later copies of our own data (this loss, or an earlier attempt whose answer was
        # lost or whose clean-up failed) go, so none resurfaces if the winner is removed.
        for f in found[1:]:
            if f.get("md5Checksum") == mine:
                self._remove(f["id"])
        return made is not None and found[0]["id"] == made["id"]

    # -- errors --------------------------------------------------------------------------
    def _host(self) -> str:
        return urlsplit(self.endpoint).netloc if self.endpoint else DEFAULT_HOST

    def _translate(self, exc: BaseException, action: str, target: str) -> ResutilError | None:
        if isinstance(exc, ResutilError):  # ConfigError from the key check, and our own
            return exc
        where = f"{self.describe()}: cannot {action} {target}"
        if isinstance(exc, AccessTokenRefreshError):
            email = self.client_email
            status = getattr(exc, "status", None) or 0
            text = str(exc.args[0] if exc.args else exc)
            if status >= 500 or status == 429:
                raise Transient(StorageUnavailable(
                    f"{where}: Google's token service is unavailable (HTTP {status}); "
                    "try again later"))
            if "unauthorized_client" in text and self.user_email:
                return StoragePermission(
                    f"Google Drive refused to let {email} act as {self.user_email} ({text}); "
                    "a Workspace admin must authorise the service account's client id for "
                    f"the scope {DRIVE_SCOPE} (Admin console > Security > API controls > "
                    "Domain-wide delegation), or remove storage_config.client_user_email"
                )
            if "invalid_grant" in text:
                return StoragePermission(
                    f"Google Drive rejected the service-account key {self.key_file} ({text}): "
                    f"the key was revoked or the clock is wrong; create a new key for {email} "
                    "or fix the system clock"
                )
            return StoragePermission(
                f"Google Drive rejected the service-account key {self.key_file} ({text}); "
                "check that the key and its service account still exist"
            )
        if isinstance(exc, HttpError):
            return self._http_error(exc, where, self.identity)
        if isinstance(exc, ValueError) and exc.args[:1] == ("Unexpected credentials type",):
            return ConfigError(
                f"Google Drive key file {self.key_file} is not a service-account key; create "
                "a JSON key for a service account and set storage_config.key_file_path to it")
        if _is_network_error(exc):
            lost = isinstance(exc, (ConnectionResetError, BrokenPipeError,
                                    ConnectionAbortedError, http.client.HTTPException))
            what = "lost the connection to" if lost else "cannot reach"
            raise Transient(StorageUnavailable(
                f"{where}: {what} {self._host()} ({type(exc).__name__}: {exc}); "
                "check the network connection"))
        if isinstance(exc, OSError):  # a local file (source or destination)
            return StorageError(f"{where}: {exc.strerror or exc}"
                                + (f": {exc.filename}" if exc.filename else ""))
        return super()._translate(exc, action, target)

    def _http_error(self, exc: HttpError, where: str, email: str) -> StorageError:
        status, reason, message = _http_error_details(exc)
        detail = f"HTTP {status} {reason}".strip() + (f": {message}" if message else "")
        if status == 403 and reason == "storageQuotaExceeded" and self.user_email:
            return StoragePermission(
                f"{where}: the Drive storage of {self.user_email} is full; free some space or "
                "move the base folder into a Shared Drive")
        if status == 403 and reason == "storageQuotaExceeded":
            return StoragePermission(
                f"{where}: service accounts have no Drive storage quota of their own, so "
                f"{email} cannot own files in My Drive; move the base folder into a Shared "
                "Drive and add the service account as Content manager (or use domain-wide "
                "delegation with storage_config.client_user_email)"
            )
        if status in (429, 500, 502, 503, 504) or reason in TRANSIENT_REASONS or status >= 500:
            raise Transient(StorageUnavailable(
                f"{where}: Google Drive is busy or unavailable ({detail}); try again later"))
        if status == 403 and reason in ("accessNotConfigured", "SERVICE_DISABLED"):
            return StoragePermission(
                f"{where}: the Google Drive API is not enabled for the service account's "
                "project; enable it in Google Cloud console > APIs & Services > Library")
        if status == 403 and reason in ("dailyLimitExceeded", "quotaExceeded"):
            return StorageUnavailable(f"{where}: the Drive API quota is used up ({detail}); "
                                      "try again tomorrow or raise the project's quota")
        if status == 403:  # insufficientFilePermissions, forbidden, ...
            return StoragePermission(
                f"{where}: permission denied ({detail}); share the folder "
                f"{self.base_folder_id} with {email} as Editor (Content manager in a Shared "
                "Drive)"
            )
        if status == 401:
            return StoragePermission(
                f"{where}: Google rejected the credentials of {email} ({detail}); check the "
                f"key file {self.key_file}")
        if status == 404:
            return StorageNotFound(f"{where}: it no longer exists ({detail})")
        return StorageError(f"{where}: {detail}")
