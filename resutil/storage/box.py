"""Box as storage: a folder in a Box account, reached with the Box SDK (``boxsdk`` 10.x,
whose only package is ``box_sdk_gen``).

``storage_config.folder_id`` names the Box folder acting as the root; each resutil folder
(``<project>``, ``<project>.resutil``) is a subfolder of it, created on demand. Files below
20 MiB go up in one request; larger ones through a chunked upload session (8 MiB parts,
SHA-1 checked per part and for the whole file). Replacing a file uploads a new *version* of
the same Box file, so the old content stays current until the new one is committed. A
file's version is its SHA-1; an exclusive create uploads a new file, which Box refuses
(409) when the name is in use.

Authentication, in this order:
  1. ``storage_config.key_file_path``: a Box JWT ``config.json`` (server authentication).
  2. ``BOX_CLIENT_ID`` + ``BOX_CLIENT_SECRET`` + ``BOX_ENTERPRISE_ID`` (or ``BOX_USER_ID``):
     server authentication with the client credentials grant (CCG).
  3. ``BOX_DEVELOPER_TOKEN``: a 60-minute developer token, for trying things out.

``storage_config.endpoint`` (optional) points the SDK at another API server (tests, proxies):
API calls go to ``<endpoint>/2.0/...``, uploads to ``<endpoint>/api/2.0/...``.
"""

from __future__ import annotations

import base64
import hashlib
import importlib.util
import io
import json
import os
import queue
import re
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, TypeVar
from urllib.parse import urlsplit

import requests
from box_sdk_gen import (
    BaseUrls,
    BoxAPIError,
    BoxCCGAuth,
    BoxClient,
    BoxDeveloperTokenAuth,
    BoxJWTAuth,
    BoxRetryStrategy,
    BoxSDKError,
    CCGConfig,
    CreateFolderParent,
    JWTConfig,
    NetworkSession,
    TimeoutConfig,
    UploadFileAttributes,
    UploadFileAttributesParentField,
    UploadFileVersionAttributes,
    UploadPart,
    UploadPartPlan,
)

from ..errors import (
    ConfigError,
    MissingExtra,
    ResutilError,
    StorageError,
    StorageNotFound,
    StoragePermission,
    StorageUnavailable,
)
from ..progress import NO_PROGRESS, Callback, HighWater, ProgressReader
from .base import ObjectInfo, Storage, StorageSettings, Transient, not_found

T = TypeVar("T")

CHUNKED_MIN = 20 * 1024 * 1024  # Box: upload sessions need >= 20 MB; simple uploads <= 50 MB
PAGE_SIZE = 1000  # the most items Box returns per page
READ_SIZE = 64 * 1024  # download read size (the SDK's stream buffers 1 KiB pieces)
CONNECT_TIMEOUT_MS = 5_000
READ_TIMEOUT_MS = 60_000
ITEM_FIELDS = ["type", "id", "name", "size", "modified_at", "sha1"]
JWT_KEYS = [
    ("boxAppSettings", "clientID"),
    ("boxAppSettings", "clientSecret"),
    ("boxAppSettings", "appAuth", "publicKeyID"),
    ("boxAppSettings", "appAuth", "privateKey"),
    ("boxAppSettings", "appAuth", "passphrase"),
    ("enterpriseID",),
]


@dataclass(frozen=True)
class _Entry:
    """A file as last seen in a folder listing or an answer about it."""

    id: str
    name: str
    size: int
    mtime: float | None
    sha1: str | None  # hex; the file's version for resutil (Box checks it on upload)

    @classmethod
    def of(cls, item: Any) -> _Entry:
        """From the SDK's File/FileFull/FileMini (an item of a listing or an answer)."""
        mtime = item.modified_at.timestamp() if getattr(item, "modified_at", None) else None
        sha1 = getattr(item, "sha_1", None)
        return cls(str(item.id), item.name, int(getattr(item, "size", None) or 0), mtime,
                   sha1.lower() if sha1 else None)

    def info(self) -> ObjectInfo:
        return ObjectInfo(self.name, self.size, self.mtime, self.sha1)


class _RetryStrategy(BoxRetryStrategy):
    """The SDK's strategy with few attempts (resutil retries with backoff on top), except
    that a ``202 + Retry-After`` (a commit still being processed) is polled patiently."""

    def should_retry(self, fetch_options, fetch_response, attempt_number: int) -> bool:
        if fetch_response.status == 202 and "Retry-After" in (fetch_response.headers or {}):
            return attempt_number < 60
        return super().should_retry(fetch_options, fetch_response, attempt_number)


class _PartReader:
    """Reads a file part by part in a thread of its own, ahead of the sends, with each
    part's SHA-1 (and SHA-512 when asked) and the SHA-1 of the whole file.

    hashlib releases the GIL on large buffers, so the digests of part k+1 (and the whole-file
    digest of part k) are computed while part k is on the wire instead of between the sends.
    At most ``ahead`` parts wait in the queue. ``next()`` returns ``(offset, data, sha1,
    sha512)`` (SHA-1 base64 as the Digest header wants it, SHA-512 hex or None), or None after
    the last part, when ``file_sha1`` (base64) is set; it re-raises an error of the thread.
    """

    _END = object()

    def __init__(self, path: Path, size: int, part_size: int, sha512: bool, ahead: int = 1):
        self.file_sha1: str | None = None
        self._queue: queue.Queue = queue.Queue(maxsize=ahead)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(path, size, part_size, sha512),
                                        name="resutil-box-parts", daemon=True)
        self._thread.start()

    def _run(self, path: Path, size: int, part_size: int, sha512: bool) -> None:
        try:
            whole = hashlib.sha1()
            with open(path, "rb", buffering=0) as f:
                offset = 0
                while offset < size and not self._stop.is_set():
                    n = min(part_size, size - offset)
                    data = f.read(n)
                    while len(data) < n:  # a short read; at the end of the file: it shrank
                        more = f.read(n - len(data))
                        if not more:
                            raise _SizeChanged(offset + len(data))
                        data += more
                    digest = base64.b64encode(hashlib.sha1(data).digest()).decode()
                    big = hashlib.sha512(data).hexdigest() if sha512 else None
                    self._put((offset, data, digest, big))
                    whole.update(data)  # while the part just queued is being sent
                    offset += n
                if self._stop.is_set():
                    return
                if f.read(1):
                    raise _SizeChanged(None)
            self.file_sha1 = base64.b64encode(whole.digest()).decode()
            self._put(self._END)
        except BaseException as e:  # noqa: BLE001 - handed to next()
            self._put(e)

    def _put(self, item: Any) -> None:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return
            except queue.Full:
                continue

    def next(self) -> tuple[int, bytes, str, str | None] | None:
        item = self._queue.get()
        if item is self._END:
            self._thread.join()
            return None
        if isinstance(item, BaseException):
            raise item
        return item

    def close(self) -> None:
        """Stop the thread (after the last part or on failure) and drop queued parts."""
        self._stop.set()
        while True:
            try:
                self._queue.get_nowait()
            except queue.Empty:
                break
        self._thread.join()


class _SizeChanged(Exception):
    """The file being uploaded is not the size it had when the upload started."""

    def __init__(self, at: int | None) -> None:
        super().__init__("shrank" if at is not None else "grew")
        self.at = at


def _status(exc: BaseException) -> int:
    return exc.response_info.status_code if isinstance(exc, BoxAPIError) else 0


def _conflict_id(exc: BoxAPIError, kind: str) -> str | None:
    """The id of the item a 409 ``item_name_in_use`` names, if it is a ``kind``."""
    conflicts = (exc.response_info.context_info or {}).get("conflicts")
    items = conflicts if isinstance(conflicts, list) else [conflicts] if conflicts else []
    for item in items:
        if isinstance(item, dict) and item.get("type") == kind and item.get("id"):
            return str(item["id"])
    return None


def _conflict_entry(exc: BoxAPIError, name: str) -> _Entry | None:
    """The file a 409 names, as far as the answer describes it: id, name and SHA-1, not
    its size (a reader then needs no listing, which may lag behind)."""
    conflicts = (exc.response_info.context_info or {}).get("conflicts")
    for item in conflicts if isinstance(conflicts, list) else [conflicts]:
        if isinstance(item, dict) and item.get("type") == "file" and item.get("id"):
            sha1 = str(item.get("sha1") or "").lower() or None
            return _Entry(str(item["id"]), str(item.get("name") or name), 0, None, sha1)
    return None


def _raised_in_sdk(exc: BaseException) -> bool:
    tb = exc.__traceback__
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    return tb is not None and "box_sdk_gen" in tb.tb_frame.f_code.co_filename


def _kind(entry: Any) -> str:
    return str(getattr(entry.type, "value", entry.type))


def _network_reason(exc: BaseException) -> str:
    text = str(exc)
    if isinstance(exc, requests.Timeout) or "timed out" in text.lower():
        return "timed out"
    for needle, reason in [
        ("Connection refused", "connection refused"),
        ("Name or service not known", "host name not found"),
        ("nodename nor servname", "host name not found"),
        ("getaddrinfo failed", "host name not found"),
        ("Temporary failure in name resolution", "host name not found"),
        ("Network is unreachable", "network unreachable"),
        ("No route to host", "no route to host"),
        ("Connection reset", "connection reset"),
        ("Broken pipe", "connection dropped"),
        ("RemoteDisconnected", "connection dropped"),
        ("Connection aborted", "connection dropped"),
        ("IncompleteRead", "connection dropped mid-transfer"),
        ("CERTIFICATE_VERIFY_FAILED", "TLS certificate not trusted"),
        ("ProxyError", "proxy error"),
    ]:
        if needle in text:
            return reason
    return type(exc).__name__


class BoxStorage(Storage):
    """Files in subfolders of the Box folder ``storage_config.folder_id``."""

    type_name = "box"
    extra = "box"
    max_workers = 4

    def __init__(self, settings: StorageSettings) -> None:
        super().__init__(settings)
        raw = str(settings.require("folder_id")).strip()
        m = re.fullmatch(r"(?:https?://\S*?/folder/)?(\d+)/?", raw)
        if not m:
            raise ConfigError(
                f"{settings.config_path or 'the config'}: storage_config.folder_id must be the "
                f"number at the end of the Box folder's URL (https://app.box.com/folder/<id>), "
                f"not '{raw}'"
            )
        self.folder_id = m.group(1)
        self.key_file = settings.path("key_file_path", required=False)
        endpoint = settings.get("endpoint")
        self.endpoint = str(endpoint).rstrip("/") if endpoint else None
        if self.endpoint and not re.match(r"https?://[^/]", self.endpoint):
            raise ConfigError(
                f"{settings.config_path or 'the config'}: storage_config.endpoint must be an "
                f"http(s) URL, not '{endpoint}'"
            )
        self._lock = threading.RLock()
        self._resolve_lock = threading.Lock()
        self._client_obj: BoxClient | None = None
        self._auth_kind = ""  # "jwt" | "ccg" | "token", set when the client is built
        self._auth_desc = "the Box app"
        self._folders: dict[str, str] = {}  # resutil folder -> Box folder id
        self._files: dict[str, dict[str, _Entry]] = {}  # Box folder id -> name -> entry
        self._login: str | None = None
        self._login_known = False

    def describe(self) -> str:
        return f"Box folder {self.folder_id}"

    # -- the SDK client, built on first use ----------------------------------------------
    def _client(self) -> BoxClient:
        client = self._client_obj
        if client is None:
            with self._lock:
                if self._client_obj is None:
                    self._client_obj = self._build_client()
                client = self._client_obj
        return client

    def _build_client(self) -> BoxClient:
        if self.endpoint:
            urls = BaseUrls(base_url=self.endpoint, upload_url=f"{self.endpoint}/api",
                            oauth_2_url=f"{self.endpoint}/oauth2")
        else:
            urls = BaseUrls()
        session = NetworkSession(
            base_urls=urls,
            retry_strategy=_RetryStrategy(
                max_attempts=2,  # one SDK retry (also what a 401 token refresh needs)
                max_retries_on_exception=1,  # e.g. a dropped upload part is re-sent once
                retry_base_interval=min(1.0, max(0.0, self.settings.retry_wait)),
            ),
            timeout_config=TimeoutConfig(connection_timeout_ms=CONNECT_TIMEOUT_MS,
                                         read_timeout_ms=READ_TIMEOUT_MS),
        )
        return BoxClient(auth=self._auth(), network_session=session)

    def _auth(self):
        env = os.environ
        if self.key_file is not None:
            self._auth_kind = "jwt"
            return BoxJWTAuth(config=self._jwt_config(self.key_file))
        if env.get("BOX_CLIENT_ID") or env.get("BOX_CLIENT_SECRET"):
            missing = [k for k in ("BOX_CLIENT_ID", "BOX_CLIENT_SECRET") if not env.get(k)]
            if not (env.get("BOX_ENTERPRISE_ID") or env.get("BOX_USER_ID")):
                missing.append("BOX_ENTERPRISE_ID (or BOX_USER_ID)")
            if missing:
                raise ConfigError(
                    f"Box client-credentials sign-in needs the environment variable(s) "
                    f"{', '.join(missing)}"
                )
            self._auth_kind = "ccg"
            self._auth_desc = f"client-credentials app {env['BOX_CLIENT_ID']} (BOX_CLIENT_ID)"
            return BoxCCGAuth(config=CCGConfig(
                client_id=env["BOX_CLIENT_ID"], client_secret=env["BOX_CLIENT_SECRET"],
                enterprise_id=env.get("BOX_ENTERPRISE_ID") or None,
                user_id=None if env.get("BOX_ENTERPRISE_ID") else env.get("BOX_USER_ID"),
            ))
        if env.get("BOX_DEVELOPER_TOKEN"):
            self._auth_kind = "token"
            self._auth_desc = "the developer token in BOX_DEVELOPER_TOKEN"
            return BoxDeveloperTokenAuth(token=env["BOX_DEVELOPER_TOKEN"])
        raise ConfigError(
            f"{self.settings.config_path or 'the config'}: storage_type box needs "
            "storage_config.key_file_path (the app's JWT config.json), or the environment "
            "variables BOX_CLIENT_ID, BOX_CLIENT_SECRET and BOX_ENTERPRISE_ID (client "
            "credentials), or BOX_DEVELOPER_TOKEN"
        )

    def _jwt_config(self, path: Path) -> JWTConfig:
        """Read and check a JWT config.json ourselves: the SDK's errors are a TypeError or a
        ValueError at the first request."""
        if not (importlib.util.find_spec("jwt") and importlib.util.find_spec("cryptography")):
            raise MissingExtra("Box JWT authentication", "box")
        where = f"Box key file {path} (storage_config.key_file_path)"
        redo = "download the app's config.json again from the Box Developer Console"
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ConfigError(f"{where} does not exist; {redo}") from None
        except (UnicodeDecodeError, IsADirectoryError, PermissionError) as e:
            raise ConfigError(f"{where} cannot be read ({e.__class__.__name__}); {redo}") from None
        except json.JSONDecodeError as e:
            raise ConfigError(f"{where} is not valid JSON (line {e.lineno}); {redo}") from None
        missing = []
        for keys in JWT_KEYS:
            value: Any = data
            for k in keys:
                value = value.get(k) if isinstance(value, dict) else None
            if not isinstance(value, (str, int)) or value == "":
                missing.append(".".join(keys))
        if missing:
            raise ConfigError(
                f"{where} is not a Box JWT config.json (missing: {', '.join(missing)}); {redo} "
                "(Configuration > Add and Manage Public Keys > Generate a Public/Private Keypair)"
            )
        settings, app = data["boxAppSettings"], data["boxAppSettings"]["appAuth"]
        try:
            from cryptography.hazmat.primitives import serialization

            serialization.load_pem_private_key(
                str(app["privateKey"]).encode(), password=str(app["passphrase"]).encode()
            )
        except (ValueError, TypeError):
            raise ConfigError(
                f"{where}: cannot decrypt boxAppSettings.appAuth.privateKey: the passphrase is "
                f"wrong or the key is damaged; {redo}"
            ) from None
        self._auth_desc = f"JWT app {settings['clientID']} ({path})"
        return JWTConfig(
            client_id=str(settings["clientID"]), client_secret=str(settings["clientSecret"]),
            jwt_key_id=str(app["publicKeyID"]), private_key=str(app["privateKey"]),
            private_key_passphrase=str(app["passphrase"]),
            enterprise_id=str(data["enterpriseID"]),
        )

    def _service_login(self) -> str | None:
        """The login of the account we act as (for messages); None when it cannot be read."""
        if not self._login_known:
            try:
                self._login = self._client().users.get_user_me(fields=["login"]).login
            except Exception:  # noqa: BLE001 - only used to word a message
                self._login = None
            self._login_known = True
        return self._login

    def _host(self) -> str:
        return urlsplit(self.endpoint or "https://api.box.com").netloc

    def _root_missing(self) -> StorageNotFound:
        login = self._service_login()
        who = f" ({login})" if login else ""
        return StorageNotFound(
            f"Box folder {self.folder_id} not found or not shared with the app's service "
            f"account{who}; check storage_config.folder_id and invite the service account "
            "as Editor on the folder"
        )

    # -- folders ----------------------------------------------------------------------------
    def _items(self, folder_id: str, root: bool = False) -> Iterator[Any]:
        """Every item in a Box folder, page by page (marker pagination)."""
        client = self._client()
        marker = None
        while True:
            try:
                page = client.folders.get_folder_items(
                    folder_id, fields=ITEM_FIELDS, usemarker=True, marker=marker, limit=PAGE_SIZE
                )
            except BoxAPIError as e:
                if root and _status(e) == 404:
                    raise self._root_missing() from None
                raise
            yield from page.entries or []
            marker = page.next_marker
            if not marker:
                return

    def _subfolder(self, folder: str, create: bool) -> str | None:
        """The Box id of a resutil folder (a subfolder of the root), or None if absent."""
        if not folder or "/" in folder or "\\" in folder or folder in (".", ".."):
            raise StorageError(f"{self.describe()}: invalid folder name {folder!r}")
        with self._lock:
            if folder in self._folders:
                return self._folders[folder]
        with self._resolve_lock:  # threads of this process resolve a folder once
            with self._lock:
                if folder in self._folders:
                    return self._folders[folder]
            want = folder.casefold()  # Box names are case-insensitive
            fid = next((str(e.id) for e in self._items(self.folder_id, root=True)
                        if _kind(e) == "folder" and e.name.casefold() == want), None)
            if fid is None and create:
                fid = self._create_subfolder(folder)
            if fid is not None:
                with self._lock:
                    self._folders[folder] = fid
            return fid

    def _create_subfolder(self, folder: str) -> str:
        try:
            return str(self._client().folders.create_folder(
                folder, CreateFolderParent(id=self.folder_id), fields=["id"]).id)
        except BoxAPIError as e:
            if _status(e) == 409:  # created meanwhile by another process or thread
                fid = _conflict_id(e, "folder")
                if fid:
                    return fid
                raise StorageError(
                    f"{self.describe()}: cannot create folder {folder}: a file with that name "
                    "is in the way; rename or remove it in Box"
                ) from None
            if _status(e) == 404:
                raise self._root_missing() from None
            raise

    def _in_folder(self, folder: str, create: bool, fn: Callable[[str | None], T]) -> T:
        """Run ``fn(folder id)``; if the folder vanished meanwhile, look it up again once."""
        for attempt in (0, 1):
            fid = self._subfolder(folder, create)
            if fid is None:
                return fn(None)
            try:
                return fn(fid)
            except BoxAPIError as e:
                if attempt or _status(e) != 404 or self._folder_exists(fid):
                    raise
                with self._lock:
                    self._folders.pop(folder, None)
                    self._files.pop(fid, None)
        raise AssertionError("unreachable")

    def _folder_exists(self, fid: str) -> bool:
        try:
            self._client().folders.get_folder_by_id(fid, fields=["id"])
            return True
        except BoxAPIError as e:
            if _status(e) == 404:
                return False
            raise

    # -- files ------------------------------------------------------------------------------
    def _scan(self, fid: str) -> dict[str, _Entry]:
        """List a Box folder's files afresh and remember them."""
        entries = {}
        for e in self._items(fid):
            if _kind(e) == "file":
                entries[e.name] = _Entry.of(e)
        with self._lock:
            self._files[fid] = entries
        return entries

    def _find(self, fid: str, name: str, fresh: bool = False) -> tuple[_Entry | None, bool]:
        """``(entry, from_cache)``: a remembered entry, else one from a fresh listing."""
        if not fresh:
            with self._lock:
                entry = self._files.get(fid, {}).get(name)
            if entry is not None:
                return entry, True
        return self._scan(fid).get(name), False

    def _remember(self, fid: str, name: str, entry: _Entry | None) -> None:
        with self._lock:
            files = self._files.get(fid)
            if files is None:
                return
            files.pop(name, None)
            if entry is not None:
                files[entry.name] = entry

    def _with_file(self, folder: str, name: str, fn: Callable[[str, _Entry], T]) -> T:
        """Run ``fn(folder id, entry)`` for an existing file; retry once if the remembered
        entry turns out stale (404)."""
        def in_folder(fid: str | None) -> T:
            if fid is None:
                raise not_found(self, folder, name)
            entry, cached = self._find(fid, name)
            if entry is None:
                raise not_found(self, folder, name)
            try:
                return fn(fid, entry)
            except BoxAPIError as e:
                if not cached or _status(e) != 404:
                    raise
            entry, _ = self._find(fid, name, fresh=True)
            if entry is None:
                raise not_found(self, folder, name)
            return fn(fid, entry)

        return self._in_folder(folder, False, in_folder)

    # -- primitives ---------------------------------------------------------------------------
    def _list(self, folder: str) -> list[ObjectInfo]:
        entries = self._in_folder(folder, False, lambda fid: self._scan(fid) if fid else {})
        return [e.info() for e in entries.values()
                if not e.name.startswith(".")]  # like the local backend: hide dot files

    def _upload(self, src: Path, folder: str, name: str, callback: Callback) -> ObjectInfo:
        size = src.stat().st_size
        callback.set_total(size)
        progress = HighWater(callback)
        sha1 = _file_sha1(src) if size < CHUNKED_MIN else None

        def in_folder(fid: str | None) -> ObjectInfo:
            assert fid is not None
            with self._lock:
                known = self._files.get(fid)
                entry = known.get(name) if known is not None else None
            if known is None:  # never listed: look; else trust the listing (409 if stale)
                entry = self._scan(fid).get(name)
            target = f"{folder}/{name}"
            try:
                info = self._put(fid, name, entry.id if entry else None, src, size, sha1,
                                 progress, target)
            except BoxAPIError as e:
                if _status(e) == 409 and entry is None:  # appeared meanwhile: version it
                    file_id = _conflict_id(e, "file")
                    if file_id is None:
                        raise StorageError(
                            f"{self.describe()}: cannot upload {folder}/{name}: a folder "
                            "with that name is in the way; rename or remove it in Box"
                        ) from None
                elif _status(e) == 404 and entry is not None:  # deleted meanwhile
                    file_id = None
                else:
                    raise
                info = self._put(fid, name, file_id, src, size, sha1, progress, target)
            self._remember(fid, name, info)
            return info.info()

        return self._in_folder(folder, True, in_folder)

    def _create_exclusive(self, folder: str, name: str, data: bytes) -> bool:
        # An upload as a new file (never as a new version): Box refuses a name that is in
        # use in the folder with 409 item_name_in_use, as one step on its side.
        def in_folder(fid: str | None) -> bool:
            assert fid is not None
            with self._scratch_file(name) as src:
                src.write_bytes(data)
                try:
                    entry = self._put(fid, name, None, src, len(data),
                                      hashlib.sha1(data).hexdigest(), HighWater(NO_PROGRESS),
                                      f"{folder}/{name}")
                except BoxAPIError as e:
                    if _status(e) != 409:
                        raise
                    if _conflict_id(e, "file") is None:
                        raise StorageError(
                            f"{self.describe()}: cannot create {folder}/{name}: a folder "
                            "with that name is in the way; rename or remove it in Box"
                        ) from None
                    self._remember(fid, name, _conflict_entry(e, name))
                    return False
            self._remember(fid, name, entry)
            return True

        return self._in_folder(folder, True, in_folder)

    def _put(self, fid: str, name: str, file_id: str | None, src: Path, size: int,
             sha1: str | None, progress: HighWater, target: str) -> _Entry:
        """One upload: a new file or a new version of ``file_id``; returns the stored file."""
        client = self._client()
        if size >= CHUNKED_MIN:
            return self._put_chunked(fid, name, file_id, src, size, progress, target)
        with open(src, "rb") as f:
            stream = ProgressReader(f, progress)
            if file_id is None:
                parent = UploadFileAttributesParentField(id=fid)
                attrs = UploadFileAttributes(name=name, parent=parent)
                files = client.uploads.upload_file(attrs, stream, content_md_5=sha1)
            else:
                files = client.uploads.upload_file_version(
                    file_id, UploadFileVersionAttributes(name=name), stream, content_md_5=sha1)
        return _Entry.of(files.entries[0])

    def _put_chunked(self, fid: str, name: str, file_id: str | None, src: Path, size: int,
                     progress: HighWater, target: str) -> _Entry:
        """An upload session, as the SDK's ``upload_big_file(_version)`` runs it (parts in
        order, each checked against Box's answer; for a new version, parts equal to the
        current one's are planned instead of sent), except that a thread reads and hashes
        the parts ahead of the sends (see _PartReader) and that the session's parts are not
        listed again before the commit (the commit names them and Box checks them, and the
        whole-file SHA-1). A session that fails is aborted, so nothing of it lingers."""
        chunked = self._client().chunked_uploads
        if file_id is None:
            session = chunked.create_file_upload_session(fid, size, name)
        else:
            session = chunked.create_file_upload_session_for_existing_file(
                file_id, size, file_name=name)
        urls = session.session_endpoints
        plan = urls.plan if file_id is not None else None
        reader = _PartReader(src, size, int(session.part_size), sha512=plan is not None)
        try:
            parts: list[UploadPart] = []
            while (item := reader.next()) is not None:
                offset, data, digest, sha512 = item
                end = offset + len(data)
                part = None
                if plan is not None:  # the same bytes as the current version's part?
                    hits = chunked.create_file_upload_session_plan_by_url(
                        plan, [UploadPartPlan(offset=offset, size=len(data), sha_512=sha512)]
                    ).hits
                    if hits:
                        part = UploadPart(part_id=hits[0].part_id, offset=hits[0].offset,
                                          size=hits[0].size)
                if part is None:
                    part = chunked.upload_file_part_by_url(
                        urls.upload_part, io.BytesIO(data), f"sha={digest}",
                        f"bytes {offset}-{end - 1}/{size}").part
                    if (part.offset != offset or part.size != len(data)
                            or (part.sha_1 and _b64(part.sha_1) != digest)):
                        raise Transient(StorageUnavailable(
                            f"{self.describe()}: cannot upload {target}: Box acknowledged an "
                            "upload part that differs from the one sent"))
                parts.append(part)
                del data, item
                progress.reached(end)
            files = chunked.create_file_upload_session_commit_by_url(
                urls.commit, parts, f"sha={reader.file_sha1}")
        except Exception as e:
            reader.close()
            self._abort(urls.abort, e)
            if isinstance(e, _SizeChanged):
                raise StorageError(f"{self.describe()}: cannot upload {target}: {src} changed "
                                   f"while it was being uploaded (it was {size} bytes)") from None
            raise
        finally:
            reader.close()
        if files is None:  # 202 without Retry-After: Box is still processing the commit
            if file_id is not None:
                # The SDK's reading: the new version is the current one. Box accepted the
                # whole file's SHA-1 with the commit, so that is what it holds.
                assert reader.file_sha1 is not None
                sha1 = base64.b64decode(reader.file_sha1).hex()
                return _Entry(file_id, name, size, None, sha1)
            raise Transient(StorageUnavailable(
                f"{self.describe()}: Box did not confirm the upload of {name}; retrying"))
        return _Entry.of(files.entries[0])

    def _abort(self, url: str | None, exc: BaseException | None) -> None:
        """Best effort: abort a failed upload session (Box would expire it in 7 days). Not
        tried when the network failed, which would most likely fail the abort too."""
        if not url or (isinstance(exc, BoxSDKError) and not isinstance(exc, BoxAPIError)
                       and isinstance(exc.error, requests.RequestException)):
            return
        try:
            self._client().chunked_uploads.delete_file_upload_session_by_url(url)
        except Exception:  # noqa: BLE001, S110 - the upload's own error is the one to report
            pass

    def _download(self, folder: str, name: str, out: BinaryIO, callback: Callback,
                  checked: bool = False) -> None:
        def fetch(fid: str, entry: _Entry) -> None:
            callback.set_total(entry.size)
            stream = self._client().downloads.download_file(entry.id)
            if stream is None:  # 202: Box is not ready to serve the file yet
                raise Transient(StorageUnavailable(
                    f"{self.describe()}: {folder}/{name} is not ready for download yet"))
            # Box's SHA-1 runs at ~1.7 GB/s: skipped when the caller checks a hash of its own.
            digest = None if checked or not entry.sha1 else hashlib.sha1()
            while chunk := stream.read(READ_SIZE):
                out.write(chunk)
                if digest is not None:
                    digest.update(chunk)
                callback.advance(len(chunk))
            if digest is not None and digest.hexdigest() != entry.sha1:
                fresh, _ = self._find(fid, name, fresh=True)  # replaced since we listed it?
                if fresh is None or fresh.sha1 != digest.hexdigest():
                    raise Transient(StorageUnavailable(
                        f"{self.describe()}: {folder}/{name} arrived damaged (SHA-1 mismatch)"))

        self._with_file(folder, name, fetch)

    def _download_range(self, folder: str, name: str, start: int, length: int, out: BinaryIO,
                        version: str | None = None) -> None:
        # GET /files/{id}/content with a Range header (Box redirects to its download
        # server, which answers 206 with those bytes). Box's version ids are not its SHA-1,
        # so a file replaced since the listing is caught by the caller's checks.
        def fetch(fid: str, entry: _Entry) -> None:
            try:
                stream = self._client().downloads.download_file(
                    entry.id, range=f"bytes={start}-{start + length - 1}")
            except BoxAPIError as e:
                if _status(e) == 416:
                    return  # starts at or past its end: nothing there
                raise
            if stream is None:  # 202: Box is not ready to serve the file yet
                raise Transient(StorageUnavailable(
                    f"{self.describe()}: {folder}/{name} is not ready for download yet"))
            while chunk := stream.read(READ_SIZE):
                out.write(chunk)

        self._with_file(folder, name, fetch)

    def _delete(self, folder: str, name: str) -> None:
        def delete(fid: str, entry: _Entry) -> None:
            self._client().files.delete_file_by_id(entry.id)  # Box moves it to the trash
            self._remember(fid, name, None)

        self._with_file(folder, name, delete)

    def _rename(self, folder: str, name: str, new_name: str) -> ObjectInfo:
        """Rename in place; an existing ``new_name`` is deleted (to the Box trash) first."""
        def rename(fid: str, entry: _Entry) -> ObjectInfo:
            if new_name == name:
                return entry.info()
            client = self._client()
            target, _ = self._find(fid, new_name)
            if target is not None and target.id != entry.id:
                client.files.get_file_by_id(entry.id, fields=["id"])  # 404 before deleting
            for attempt in (0, 1):
                if target is not None and target.id != entry.id:
                    try:
                        client.files.delete_file_by_id(target.id)
                    except BoxAPIError as e:
                        if _status(e) != 404:
                            raise
                try:
                    info = client.files.update_file_by_id(entry.id, name=new_name,
                                                          fields=ITEM_FIELDS)
                    break
                except BoxAPIError as e:
                    conflict = _conflict_id(e, "file") if _status(e) == 409 else None
                    if attempt or conflict is None:
                        raise
                    target = _Entry(conflict, new_name, 0, None, None)  # appeared meanwhile
            renamed = _Entry.of(info)
            self._remember(fid, name, None)
            self._remember(fid, new_name, renamed)
            return renamed.info()  # same content, same SHA-1: the version stays

        return self._with_file(folder, name, rename)

    # -- errors ------------------------------------------------------------------------------
    def _translate(self, exc: BaseException, action: str, target: str) -> ResutilError | None:
        if isinstance(exc, ResutilError):  # ours, incl. ConfigError from the key-file check
            return exc
        head = f"{self.describe()}: cannot {action} {target}"
        if isinstance(exc, BoxAPIError):
            return self._api_error(exc, head)
        if isinstance(exc, BoxSDKError):
            if isinstance(exc.error, requests.RequestException):
                raise Transient(self._network_error(exc.error, head))
            message = (exc.message or "").strip().splitlines()[0] if exc.message else ""
            if "Developer token has expired" in message:
                return StoragePermission(
                    f"{head}: the Box developer token (BOX_DEVELOPER_TOKEN) has expired; "
                    "developer tokens last 60 minutes: create a new one, or use JWT or "
                    "client-credentials authentication"
                )
            return StorageError(f"{head}: {message or 'Box SDK error'}")
        if isinstance(exc, requests.RequestException):  # e.g. mid-download, outside the SDK
            raise Transient(self._network_error(exc, head))
        if isinstance(exc, AssertionError) and _raised_in_sdk(exc):
            # the SDK asserts that Box's answer for each upload part (offset, size, SHA-1)
            # matches what it sent: a part was damaged or mangled on the way
            raise Transient(StorageUnavailable(
                f"{head}: Box acknowledged an upload part that differs from the one sent"))
        return super()._translate(exc, action, target)

    def _network_error(self, exc: BaseException, head: str) -> StorageUnavailable:
        return StorageUnavailable(
            f"{head}: cannot reach {self._host()} ({_network_reason(exc)}); "
            "check the network connection or proxy"
        )

    def _api_error(self, exc: BoxAPIError, head: str) -> StorageError:
        info = exc.response_info
        status, body = info.status_code, info.body if isinstance(info.body, dict) else {}
        code = str(info.code or body.get("error") or "")
        text = str(body.get("message") or body.get("error_description") or "").strip()
        detail = ": ".join(x for x in (code, text) if x)
        detail = f" ({detail})" if detail else ""
        url = getattr(exc.request_info, "url", "") or ""
        if url.endswith("/oauth2/token") or "error" in body:  # signing in
            if status == 429 or status >= 500:
                raise Transient(StorageUnavailable(
                    f"{head}: the Box sign-in service answered {status}; try again later"))
            if code == "invalid_client":
                return StoragePermission(
                    f"{head}: Box rejected {self._auth_desc}: wrong client id/secret or the app "
                    "is not authorised by the enterprise admin (Box Admin Console, "
                    "Platform Apps)"
                )
            if code == "invalid_grant" and self._auth_kind == "jwt":
                return StoragePermission(
                    f"{head}: Box sign-in failed, JWT rejected: check the key id and the "
                    f"machine clock (publicKeyID in {self.key_file} must be a key of the app; "
                    f"the clock must be right to a few seconds){detail}"
                )
            if code == "invalid_grant":
                return StoragePermission(
                    f"{head}: Box rejected {self._auth_desc}: check BOX_ENTERPRISE_ID / "
                    f"BOX_USER_ID and that the app is authorised by the enterprise admin{detail}"
                )
            return StoragePermission(f"{head}: Box sign-in failed{detail}")
        if status == 401:
            return StoragePermission(
                f"{head}: Box rejected the access token of {self._auth_desc} even after "
                "renewing it; check the app's authorisation in the Box Admin Console"
            )
        if status == 403:
            if code == "storage_limit_exceeded":
                return StorageError(f"{head}: the Box account is out of storage space")
            login = self._service_login()
            who = f"the service account {login}" if login else "the app's service account"
            return StoragePermission(
                f"{head}: {who} is not a collaborator (Editor) on folder {self.folder_id}; "
                f"invite it as Editor on the folder in the Box web app{detail}"
            )
        if status == 404:
            return StorageNotFound(f"{head}: it does not exist on Box")
        if status == 429 or status >= 500:
            later = "" if "try again" in detail else "; try again later"
            raise Transient(StorageUnavailable(f"{head}: Box answered {status}{detail}{later}"))
        return StorageError(f"{head}: Box answered {status}{detail}")


def _b64(hex_digest: str) -> str:
    return base64.b64encode(bytes.fromhex(hex_digest)).decode()


def _file_sha1(path: Path) -> str:
    digest = hashlib.sha1()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()
