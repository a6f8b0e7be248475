"""An in-memory Box API server for tests, speaking the HTTP API that ``box_sdk_gen`` uses.

Standard library only, except PyJWT (imported when a JWT assertion arrives) to verify
JWT sign-ins against the app's public key. One service account, one tree of folders and
files (with versions), chunked upload sessions with Box's rules (minimum file size, fixed
part size, ``Content-Range``, SHA-1 ``Digest`` per part and for the whole file, plan/dedup
for new versions, commit possibly answering ``202 + Retry-After``), downloads through a
``302`` to a download URL (which honours ``Range`` as Box's does: 206, or 416 past the
end), and Box-shaped error bodies.

    box = FakeBox(); url = box.start()     # http://127.0.0.1:<port>; upload API at url + "/api"
    ...
    box.stop()

Fault injection for tests: ``fail_next`` (answer the next N matching requests with a status),
``drop_next`` (cut the connection mid-request/mid-response), ``lose_next`` (carry out the
request, then cut the connection instead of answering), ``corrupt_next`` (flip a byte of the
next downloads of a file on the way: the stored file and its SHA-1 stay intact), ``expire_tokens``,
``commit_202_once``, ``listing_lag`` (folder listings briefly miss items), ``read_only``
(folders where the service account is only a Viewer, so writes get 403) and
``ignore_ranges`` (downloads answered whole, as by a proxy that drops ``Range``).
"""

from __future__ import annotations

import base64
import hashlib
import itertools
import json
import re
import secrets
import threading
import time
import urllib.parse
from dataclasses import dataclass, field
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler

from .httpserver import Server

JWT_AUDIENCE = "https://api.box.com/oauth2/token"
MIN_CHUNKED = 20_000_000  # Box: upload sessions need files of at least 20 MB
PART_SIZE = 8 * 1024 * 1024
SERVICE_LOGIN = "AutomationUser_1234_resutil@boxdevedition.com"


class BoxError(Exception):
    """Answered as a Box error body: ``{"type": "error", "status", "code", "message", ...}``."""

    def __init__(self, status: int, code: str, message: str = "", **context) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.context = status, code, message or code, context


class OAuthError(Exception):
    """Answered as an OAuth error body: ``{"error", "error_description"}`` with status 400."""

    def __init__(self, error: str, description: str) -> None:
        super().__init__(description)
        self.error, self.description = error, description


def _iso(t: float) -> str:
    return datetime.fromtimestamp(int(t), timezone.utc).isoformat()


def _sha1(data: bytes) -> str:
    return hashlib.sha1(data).hexdigest()


def _digest(data: bytes) -> str:
    """The ``Digest`` header Box expects: base64 of the SHA-1."""
    return "sha=" + base64.b64encode(hashlib.sha1(data).digest()).decode()


def _part_id(session_id: str, offset: int) -> str:
    return hashlib.sha1(f"{session_id}:{offset}".encode()).hexdigest()[:8].upper()


@dataclass
class Folder:
    id: str
    name: str
    parent: str | None
    modified: float = field(default_factory=time.time)


@dataclass
class File:
    id: str
    name: str
    parent: str
    versions: list[bytes] = field(default_factory=list)  # oldest first; the last is current
    modified: float = field(default_factory=time.time)

    @property
    def content(self) -> bytes:
        return self.versions[-1]


@dataclass
class Session:
    id: str
    folder_id: str
    file_id: str | None
    name: str
    size: int
    parts: dict[int, tuple[str, bytes]] = field(default_factory=dict)  # offset -> (part id, data)


class FakeBox:
    """The server state plus the control API tests use."""

    def __init__(self, *, part_size: int = PART_SIZE, min_chunked: int = MIN_CHUNKED) -> None:
        self.part_size, self.min_chunked = part_size, min_chunked
        self.lock = threading.RLock()
        self.folders: dict[str, Folder] = {"0": Folder("0", "All Files", None)}
        self.files: dict[str, File] = {}
        self.trash: dict[str, File] = {}
        self.sessions: dict[str, Session] = {}
        # client_id -> {"secret", "keys": {kid: public pem}, "enterprise_id"}
        self.apps: dict[str, dict] = {}
        self.tokens: set[str] = set()
        self.developer_tokens: set[str] = set()
        self.read_only: set[str] = set()  # folder ids where writes answer 403
        self.faults: list[dict] = []
        self.drops: list[dict] = []
        self.losses: list[dict] = []
        self.corruptions: dict[str, int] = {}  # file name -> downloads left to damage
        self.ignore_ranges = False  # answer ranged downloads whole (a proxy that drops Range)
        self.commit_202_once = False
        self.lag = 0  # next N folder listings return no entries
        self.log: list[tuple[str, str]] = []  # (method, path) of every request
        self.downloads: dict[str, tuple[str, int]] = {}  # download token -> (file id, version)
        self._ids = itertools.count(100_000)
        self.url = ""
        self._server: Server | None = None

    # -- lifecycle ----------------------------------------------------------------------
    def start(self) -> str:
        server = Server(("127.0.0.1", 0), _Handler)
        server.daemon_threads = True
        server.box = self  # type: ignore[attr-defined]
        self._server = server
        self.url = f"http://127.0.0.1:{server.server_address[1]}"
        threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
        return self.url

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    # -- control API for tests ----------------------------------------------------------
    def add_jwt_app(self, client_id, secret, key_id, public_pem, enterprise_id) -> None:
        self.apps[client_id] = {"secret": secret, "keys": {key_id: public_pem},
                                "enterprise_id": str(enterprise_id)}

    def add_ccg_app(self, client_id, secret, enterprise_id) -> None:
        self.apps[client_id] = {"secret": secret, "keys": {}, "enterprise_id": str(enterprise_id)}

    def add_developer_token(self, token: str) -> None:
        self.developer_tokens.add(token)

    def new_id(self) -> str:
        return str(next(self._ids))

    def create_folder(self, name: str, parent: str = "0") -> str:
        with self.lock:
            fid = self.new_id()
            self.folders[fid] = Folder(fid, name, parent)
            return fid

    def put_file(self, parent: str, name: str, data: bytes) -> str:
        with self.lock:
            f = File(self.new_id(), name, parent, [data])
            self.files[f.id] = f
            return f.id

    def children(self, parent: str) -> list:
        with self.lock:
            items = [f for f in self.folders.values() if f.parent == parent]
            items += sorted((f for f in self.files.values() if f.parent == parent),
                            key=lambda f: f.name.lower())
            return items

    def find(self, parent: str, name: str):
        for item in self.children(parent):
            if item.name.lower() == name.lower():  # Box names are case-insensitive
                return item
        return None

    def fail_next(self, status: int, count: int = 1, match: str = "/2.0/", code: str = "",
                  message: str = "", headers: dict | None = None) -> None:
        """Answer the next ``count`` requests whose path contains ``match`` with ``status``."""
        self.faults.append({"status": status, "count": count, "match": match, "code": code,
                            "message": message, "headers": headers or {}})

    def drop_next(self, match: str, count: int = 1) -> None:
        """Cut the connection of the next ``count`` matching requests halfway through."""
        self.drops.append({"match": match, "count": count})

    def lose_next(self, match: str, count: int = 1) -> None:
        """Carry out the next ``count`` matching requests, then cut the connection instead
        of answering: done, but the client cannot tell."""
        self.losses.append({"match": match, "count": count})

    def corrupt_next(self, name: str, count: int = 1) -> None:
        """Damage the next ``count`` downloads of files named ``name`` in transit (one byte
        in the middle flipped)."""
        self.corruptions[name] = count

    def clear_faults(self) -> None:
        self.faults.clear()
        self.drops.clear()
        self.losses.clear()
        self.corruptions.clear()
        self.ignore_ranges = False
        self.commit_202_once = False
        self.lag = 0

    def expire_tokens(self) -> None:
        self.tokens.clear()

    def listing_lag(self, count: int = 1) -> None:
        self.lag = count

    def count(self, method: str, pattern: str) -> int:
        return sum(1 for m, p in list(self.log) if m == method and re.search(pattern, p))

    # -- rendering ----------------------------------------------------------------------
    def folder_json(self, f: Folder) -> dict:
        return {"type": "folder", "id": f.id, "etag": "0", "sequence_id": "0", "name": f.name,
                "modified_at": _iso(f.modified), "created_at": _iso(f.modified),
                "parent": {"type": "folder", "id": f.parent} if f.parent else None,
                "item_status": "active"}

    def file_json(self, f: File) -> dict:
        version = f"{f.id}{len(f.versions):04d}"
        return {"type": "file", "id": f.id, "etag": str(len(f.versions) - 1),
                "sequence_id": str(len(f.versions) - 1), "name": f.name, "size": len(f.content),
                "sha1": _sha1(f.content), "modified_at": _iso(f.modified),
                "created_at": _iso(f.modified), "item_status": "active",
                "parent": {"type": "folder", "id": f.parent},
                "file_version": {"type": "file_version", "id": version, "sha1": _sha1(f.content)}}

    def item_json(self, item, fields: list[str] | None = None) -> dict:
        data = self.file_json(item) if isinstance(item, File) else self.folder_json(item)
        if fields:
            keep = {"type", "id", "etag", *fields}
            data = {k: v for k, v in data.items() if k in keep}
        return data

    def session_json(self, s: Session) -> dict:
        base = f"{self.url}/api/2.0/files/upload_sessions/{s.id}"
        return {"type": "upload_session", "id": s.id,
                "session_expires_at": _iso(time.time() + 7 * 86400),
                "part_size": self.part_size, "total_parts": -(-s.size // self.part_size),
                "num_parts_processed": len(s.parts),
                "session_endpoints": {"upload_part": base, "commit": f"{base}/commit",
                                      "abort": base, "list_parts": f"{base}/parts",
                                      "status": base, "log_event": f"{base}/log",
                                      "plan": f"{base}/plan"}}

    # -- checks -------------------------------------------------------------------------
    def folder(self, fid: str) -> Folder:
        if fid not in self.folders:
            raise BoxError(404, "not_found", "Not Found", errors=[{"name": "folder", "id": fid}])
        return self.folders[fid]

    def file(self, fid: str) -> File:
        if fid not in self.files:
            raise BoxError(404, "not_found", "Not Found")
        return self.files[fid]

    def writable(self, folder_id: str) -> None:
        fid: str | None = folder_id
        while fid is not None:
            if fid in self.read_only:
                raise BoxError(403, "access_denied_insufficient_permissions",
                               "Access denied - insufficient permission")
            fid = self.folders[fid].parent if fid in self.folders else None

    def free_name(self, parent: str, name: str, ignore: str | None = None) -> None:
        if not name or "/" in name or "\\" in name or name in (".", ".."):
            raise BoxError(400, "item_name_invalid", "Item name invalid")
        other = self.find(parent, name)
        if other is not None and other.id != ignore:
            # Box describes a file in the way as a "File (Conflict)": its mini form plus
            # sha1 and file_version (no size), as one object; a folder as a list of one.
            if isinstance(other, Folder):
                conflicts: list | dict = [self.item_json(other)]
            else:
                full = self.file_json(other)
                conflicts = {k: full[k] for k in ("type", "id", "etag", "sequence_id", "name",
                                                  "sha1", "file_version")}
            raise BoxError(409, "item_name_in_use", "Item with the same name already exists",
                           conflicts=conflicts)

    def store(self, parent: str, name: str, data: bytes, file_id: str | None) -> File:
        """A new file, or a new version of ``file_id`` (all-or-nothing, under the lock)."""
        if file_id is None:
            self.free_name(parent, name)
            f = File(self.new_id(), name, parent, [data])
            self.files[f.id] = f
        else:
            f = self.file(file_id)
            self.free_name(f.parent, name, ignore=f.id)
            f.name, f.modified = name, time.time()
            f.versions.append(data)
        return f


def _multipart(body: bytes, ctype: str) -> list[tuple[str, bytes]]:
    m = re.search(r'boundary="?([^";]+)"?', ctype)
    if not m:
        raise BoxError(400, "bad_request", "multipart body without boundary")
    out = []
    for chunk in body.split(b"--" + m.group(1).encode())[1:]:
        if chunk.startswith(b"--"):
            break
        head, _, content = chunk[2:].partition(b"\r\n\r\n")
        name = re.search(rb'name="([^"]*)"', head)
        out.append((name.group(1).decode() if name else "", content[:-2]))
    return out


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # without it every keep-alive request stalls ~40 ms

    ROUTES = [(m, re.compile(p), h) for m, p, h in [
        ("POST", r"/oauth2/token", "token"),
        ("GET", r"/2\.0/users/me", "users_me"),
        ("GET", r"/2\.0/folders/(\w+)", "get_folder"),
        ("DELETE", r"/2\.0/folders/(\w+)", "delete_folder"),
        ("GET", r"/2\.0/folders/(\w+)/items", "folder_items"),
        ("POST", r"/2\.0/folders", "create_folder"),
        ("GET", r"/2\.0/files/(\w+)", "get_file"),
        ("PUT", r"/2\.0/files/(\w+)", "update_file"),
        ("DELETE", r"/2\.0/files/(\w+)", "delete_file"),
        ("GET", r"/2\.0/files/(\w+)/content", "download"),
        ("GET", r"/dl/(\w+)", "dl"),
        ("POST", r"/api/2\.0/files/content", "upload"),
        ("POST", r"/api/2\.0/files/(\w+)/content", "upload_version"),
        ("POST", r"/api/2\.0/files/upload_sessions", "create_session"),
        ("POST", r"/api/2\.0/files/(\w+)/upload_sessions", "create_session"),
        ("PUT", r"/api/2\.0/files/upload_sessions/(\w+)", "upload_part"),
        ("GET", r"/api/2\.0/files/upload_sessions/(\w+)", "get_session"),
        ("DELETE", r"/api/2\.0/files/upload_sessions/(\w+)", "abort_session"),
        ("GET", r"/api/2\.0/files/upload_sessions/(\w+)/parts", "list_parts"),
        ("POST", r"/api/2\.0/files/upload_sessions/(\w+)/plan", "plan"),
        ("POST", r"/api/2\.0/files/upload_sessions/(\w+)/commit", "commit"),
    ]]

    def log_message(self, *args) -> None:  # quiet
        pass

    do_GET = do_POST = do_PUT = do_DELETE = lambda self: self._serve()  # noqa: E731

    @property
    def box(self) -> FakeBox:
        return self.server.box  # type: ignore[attr-defined]

    # -- plumbing -----------------------------------------------------------------------
    def _serve(self) -> None:
        url = urllib.parse.urlsplit(self.path)
        path = url.path
        self.query = {k: v[-1] for k, v in urllib.parse.parse_qs(url.query).items()}
        box = self.box
        box.log.append((self.command, path))
        if self._take(box.drops, path):
            return self._drop()
        self.body = self._read_body()
        fault = self._take(box.faults, path)
        self.lose_answer = self._take(box.losses, path) is not None
        try:
            if fault:
                if fault["status"] == 401:
                    return self._unauthorized()
                raise BoxError(fault["status"], fault["code"] or "internal_server_error",
                               fault["message"] or "Injected failure", _headers=fault["headers"])
            for method, pattern, name in self.ROUTES:
                m = pattern.fullmatch(path)
                if m and method == self.command:
                    if name not in ("token", "dl") and not self._authorized():
                        return self._unauthorized()
                    with box.lock:
                        result = getattr(self, "h_" + name)(*m.groups())
                    return self._send(*result)
            raise BoxError(404, "not_found", f"no route {self.command} {path}")
        except BoxError as e:
            extra = e.context.pop("_headers", {})
            self._send(e.status, {"type": "error", "status": e.status, "code": e.code,
                                  "message": e.message, "context_info": e.context,
                                  "help_url": "http://developers.box.com/docs/#errors",
                                  "request_id": secrets.token_hex(6)}, extra)
        except OAuthError as e:
            self._send(400, {"error": e.error, "error_description": e.description})

    @staticmethod
    def _take(faults: list[dict], path: str) -> dict | None:
        for f in faults:
            if f["match"] in path and f["count"] > 0:
                f["count"] -= 1
                return f
        return None

    def _read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            out = bytearray()
            while True:
                n = int(self.rfile.readline().split(b";")[0], 16)
                out += self.rfile.read(n)
                self.rfile.readline()
                if n == 0:
                    return bytes(out)
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def _drop(self) -> None:
        """Read half the request body (or send half a download), then cut the connection."""
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(length // 2)
        elif self.path.startswith("/dl/"):
            fid, version = self.box.downloads.get(self.path[4:], ("", 0))
            data = self.box.files[fid].versions[version] if fid in self.box.files else b"x" * 64
            self.send_response(200)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data[: len(data) // 2])
            self.wfile.flush()
        self.close_connection = True
        self.connection.close()

    def _authorized(self) -> bool:
        auth = self.headers.get("Authorization", "")
        token = auth[7:] if auth.startswith("Bearer ") else ""
        return token in self.box.tokens or token in self.box.developer_tokens

    def _unauthorized(self) -> None:
        self._send(401, None, {"WWW-Authenticate": (
            'Bearer realm="Service", error="invalid_token", '
            'error_description="The access token provided is invalid."')})

    def _send(self, status: int, body=None, headers: dict | None = None) -> None:
        if getattr(self, "lose_answer", False):  # done, but the answer never arrives
            self.close_connection = True
            self.connection.close()
            return
        if body is None or isinstance(body, bytes):
            data = body or b""
        else:
            data = json.dumps(body).encode()
        self.send_response(status)
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        if body is not None and not isinstance(body, bytes):
            self.send_header("Content-Type", "application/json")
        elif isinstance(body, bytes):
            self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _json(self) -> dict:
        try:
            return json.loads(self.body or b"{}")
        except ValueError:
            raise BoxError(400, "bad_request", "body is not JSON") from None

    def _fields(self) -> list[str] | None:
        return self.query["fields"].split(",") if self.query.get("fields") else None

    # -- auth ---------------------------------------------------------------------------
    def h_token(self):
        form = {k: v[-1] for k, v in urllib.parse.parse_qs(self.body.decode()).items()}
        app = self.box.apps.get(form.get("client_id", ""))
        if app is None or app["secret"] != form.get("client_secret"):
            raise OAuthError("invalid_client", "The client credentials are invalid")
        grant = form.get("grant_type", "")
        if grant == "client_credentials":
            if (form.get("box_subject_type") == "enterprise"
                    and form.get("box_subject_id") != app["enterprise_id"]):
                raise OAuthError("invalid_grant", "Grant credentials are invalid")
        elif grant == "urn:ietf:params:oauth:grant-type:jwt-bearer":
            self._verify_jwt(form.get("assertion", ""), form["client_id"], app)
        else:
            raise OAuthError("unsupported_grant_type", f"Grant type '{grant}' is not supported")
        token = secrets.token_urlsafe(24)
        self.box.tokens.add(token)
        return 200, {"access_token": token, "expires_in": 3600, "token_type": "bearer",
                     "restricted_to": [],
                     "issued_token_type": "urn:ietf:params:oauth:token-type:access_token"}

    @staticmethod
    def _verify_jwt(assertion: str, client_id: str, app: dict) -> None:
        import jwt  # PyJWT

        try:
            kid = jwt.get_unverified_header(assertion).get("kid")
        except jwt.InvalidTokenError:
            raise OAuthError("invalid_grant", "Invalid JWT assertion") from None
        if kid not in app["keys"]:
            raise OAuthError("invalid_grant", "Please check the 'kid' value (public key id)")
        try:
            claims = jwt.decode(assertion, app["keys"][kid],
                                algorithms=["RS256", "RS384", "RS512"], audience=JWT_AUDIENCE,
                                options={"require": ["exp", "iss", "sub", "jti"]})
        except jwt.ExpiredSignatureError:
            raise OAuthError("invalid_grant", "Current date/time MUST be before the expiration "
                                              "date/time listed in the 'exp' claim") from None
        except jwt.InvalidTokenError as e:
            raise OAuthError("invalid_grant", f"Signature verification error: {e}") from None
        if claims["iss"] != client_id or (claims.get("box_sub_type") == "enterprise"
                                          and str(claims["sub"]) != app["enterprise_id"]):
            raise OAuthError("invalid_grant", "Please check the 'sub' claim")

    def h_users_me(self):
        return 200, {"type": "user", "id": "1234", "name": "resutil-test", "login": SERVICE_LOGIN}

    # -- folders --------------------------------------------------------------------------
    def h_get_folder(self, fid):
        return 200, self.box.item_json(self.box.folder(fid), self._fields())

    def h_delete_folder(self, fid):
        box = self.box
        box.folder(fid)
        box.writable(fid)
        if box.children(fid) and self.query.get("recursive", "").lower() != "true":
            raise BoxError(400, "folder_not_empty", "Cannot delete - folder not empty")
        doomed = [fid]
        while doomed:
            cur = doomed.pop()
            doomed += [c.id for c in box.children(cur) if isinstance(c, Folder)]
            for c in box.children(cur):
                if isinstance(c, File):
                    box.trash[c.id] = box.files.pop(c.id)
            box.folders.pop(cur)
        return 204, None

    def h_folder_items(self, fid):
        box = self.box
        box.folder(fid)
        items = box.children(fid)
        if box.lag > 0:
            box.lag -= 1
            items = []
        limit = min(int(self.query.get("limit", 100)), 1000)
        usemarker = self.query.get("usemarker", "").lower() == "true"  # the SDK sends "True"
        if usemarker:
            marker = self.query.get("marker")
            start = int(base64.urlsafe_b64decode(marker).decode()) if marker else 0
        else:
            start = int(self.query.get("offset", 0))
        page = [box.item_json(i, self._fields()) for i in items[start:start + limit]]
        body = {"entries": page, "limit": limit}
        if usemarker:
            more = start + limit < len(items)
            nxt = base64.urlsafe_b64encode(str(start + limit).encode()).decode()
            body["next_marker"] = nxt if more else None
        else:
            body.update(total_count=len(items), offset=start)
        return 200, body

    def h_create_folder(self):
        req = self._json()
        box = self.box
        parent = str((req.get("parent") or {}).get("id", ""))
        box.folder(parent)
        box.writable(parent)
        box.free_name(parent, req.get("name", ""))
        fid = box.create_folder(req["name"], parent)
        return 201, box.item_json(box.folders[fid], self._fields())

    # -- files ----------------------------------------------------------------------------
    def h_get_file(self, fid):
        return 200, self.box.item_json(self.box.file(fid), self._fields())

    def h_update_file(self, fid):
        box, req = self.box, self._json()
        f = box.file(fid)
        box.writable(f.parent)
        parent = str((req.get("parent") or {}).get("id") or f.parent)
        box.folder(parent)
        box.writable(parent)
        name = req.get("name") or f.name
        if parent != f.parent or name.lower() != f.name.lower():
            box.free_name(parent, name)
        f.name, f.parent = name, parent
        return 200, box.item_json(f, self._fields())

    def h_delete_file(self, fid):
        box = self.box
        f = box.file(fid)
        box.writable(f.parent)
        box.trash[fid] = box.files.pop(fid)
        return 204, None

    def h_download(self, fid):
        f = self.box.file(fid)
        token = secrets.token_hex(8)
        self.box.downloads[token] = (fid, len(f.versions) - 1)
        return 302, None, {"Location": f"{self.box.url}/dl/{token}"}

    def h_dl(self, token):
        fid, version = self.box.downloads.get(token, ("", 0))
        if fid not in self.box.files:
            raise BoxError(404, "not_found", "Not Found")
        f = self.box.files[fid]
        data = f.versions[version]
        if self.box.corruptions.get(f.name, 0) > 0 and data:
            self.box.corruptions[f.name] -= 1
            damaged = bytearray(data)
            damaged[len(data) // 2] ^= 0xFF
            data = bytes(damaged)
        return _ranged(None if self.box.ignore_ranges else self.headers.get("Range"), data)

    # -- simple uploads -------------------------------------------------------------------
    def _upload_parts(self) -> tuple[dict, bytes]:
        parts = _multipart(self.body, self.headers.get("Content-Type", ""))
        names = [n for n, _ in parts]
        if "attributes" not in names or "file" not in names:
            raise BoxError(400, "bad_request", "attributes and file parts are required")
        if names.index("attributes") > names.index("file"):
            raise BoxError(400, "metadata_after_file_contents", "attributes must come before file")
        attrs = json.loads(dict(parts)["attributes"])
        data = dict(parts)["file"]
        digest = self.headers.get("Content-MD5")  # Box: the SHA-1 of the file, hex
        if digest and digest.lower() != _sha1(data):
            raise BoxError(400, "sha1_mismatch", "The content's SHA-1 does not match Content-MD5")
        return attrs, data

    def h_upload(self):
        box = self.box
        attrs, data = self._upload_parts()
        parent = str((attrs.get("parent") or {}).get("id", ""))
        box.folder(parent)
        box.writable(parent)
        f = box.store(parent, attrs.get("name", ""), data, None)
        return 201, {"total_count": 1, "entries": [box.file_json(f)]}

    def h_upload_version(self, fid):
        box = self.box
        attrs, data = self._upload_parts()
        f = box.file(fid)
        box.writable(f.parent)
        f = box.store(f.parent, attrs.get("name") or f.name, data, fid)
        return 201, {"total_count": 1, "entries": [box.file_json(f)]}

    # -- upload sessions ------------------------------------------------------------------
    def h_create_session(self, file_id=None):
        box, req = self.box, self._json()
        size = int(req.get("file_size", 0))
        if file_id is not None:
            f = box.file(file_id)
            parent, name = f.parent, req.get("file_name") or f.name
            box.free_name(parent, name, ignore=file_id)
        else:
            parent, name = str(req.get("folder_id", "")), req.get("file_name", "")
            box.folder(parent)
            box.free_name(parent, name)
        box.writable(parent)
        if size < box.min_chunked:
            raise BoxError(400, "file_size_too_small",
                           "File size is less than minimum allowed for this API")
        s = Session(secrets.token_hex(8).upper(), parent, file_id, name, size)
        box.sessions[s.id] = s
        return 201, box.session_json(s)

    def _session(self, sid) -> Session:
        if sid not in self.box.sessions:
            raise BoxError(404, "session_not_found", "The upload session was not found")
        return self.box.sessions[sid]

    def h_get_session(self, sid):
        return 200, self.box.session_json(self._session(sid))

    def h_abort_session(self, sid):
        self._session(sid)
        self.box.sessions.pop(sid)
        return 204, None

    @staticmethod
    def _part_json(s: Session, offset: int) -> dict:
        pid, data = s.parts[offset]
        return {"part_id": pid, "offset": offset, "size": len(data), "sha1": _sha1(data)}

    def h_upload_part(self, sid):
        box, s, data = self.box, self._session(sid), self.body
        m = re.fullmatch(r"bytes (\d+)-(\d+)/(\d+)", self.headers.get("Content-Range", ""))
        if not m:
            raise BoxError(400, "bad_request", "Content-Range is required")
        start, end, total = map(int, m.groups())
        last = end + 1 == s.size
        if (total != s.size or start % box.part_size or end - start + 1 != len(data)
                or (len(data) != box.part_size and not last) or end >= s.size):
            raise BoxError(416, "range_mismatch", "The part's range is invalid for this session")
        if self.headers.get("Digest", "") != _digest(data):
            raise BoxError(412, "sha1_mismatch", "The Digest does not match the part")
        s.parts[start] = (_part_id(sid, start), data)
        return 200, {"part": self._part_json(s, start)}

    def h_list_parts(self, sid):
        s = self._session(sid)
        entries = [self._part_json(s, o) for o in sorted(s.parts)]
        return 200, {"entries": entries, "total_count": len(entries), "limit": 1000, "offset": 0}

    def h_plan(self, sid):
        box, s = self.box, self._session(sid)
        old = box.files[s.file_id].content if s.file_id in box.files else b""
        hits, misses = [], []
        for p in self._json().get("parts", []):
            chunk = old[p["offset"]:p["offset"] + p["size"]]
            if len(chunk) == p["size"] and hashlib.sha512(chunk).hexdigest() == p["sha512"]:
                s.parts[p["offset"]] = (_part_id(sid, p["offset"]), chunk)
                hits.append({**p, "part_id": s.parts[p["offset"]][0]})
            else:
                misses.append(p)
        return 200, {"upload_session_id": sid, "hits": hits, "misses": misses}

    def h_commit(self, sid):
        box, s = self.box, self._session(sid)
        if box.commit_202_once:
            box.commit_202_once = False
            return 202, None, {"Retry-After": "0"}
        pos, data = 0, bytearray()
        for p in sorted(self._json().get("parts", []), key=lambda p: p["offset"]):
            have = s.parts.get(p["offset"])
            if have is None or have[0] != p["part_id"] or p["offset"] != pos:
                raise BoxError(400, "invalid_parts",
                               f"part {p.get('part_id')} does not match the session")
            data += have[1]
            pos += len(have[1])
        if pos != s.size:
            raise BoxError(400, "invalid_parts", "the parts do not cover the whole file")
        if self.headers.get("Digest") != _digest(bytes(data)):
            raise BoxError(422, "sha1_mismatch", "The Digest does not match the committed file")
        f = box.store(s.folder_id, s.name, bytes(data), s.file_id)
        box.sessions.pop(sid)
        return 201, {"total_count": 1, "entries": [box.file_json(f)]}


def _ranged(header: str | None, data: bytes) -> tuple:
    """A download's answer to a ``Range: bytes=a-b`` header as Box's download server gives
    it: 206 with those bytes (clipped at the end), 416 for a start past the end, the whole
    file (200) without a header or with one it cannot read."""
    m = re.fullmatch(r"bytes=(\d+)-(\d*)", (header or "").strip())
    if not m:
        return 200, data
    start = int(m.group(1))
    end = min(int(m.group(2)) if m.group(2) else len(data) - 1, len(data) - 1)
    if start >= len(data):
        raise BoxError(416, "requested_range_not_satisfiable", "The range is not satisfiable",
                       _headers={"Content-Range": f"bytes */{len(data)}"})
    return 206, data[start:end + 1], {"Content-Range": f"bytes {start}-{end}/{len(data)}"}
