"""A small in-memory Google Drive **v2** API server for tests (standard library only).

It speaks enough of the real HTTP API for pydrive2 / google-api-python-client / oauth2client
to run unmodified against it:

- ``POST /token``: the OAuth2 JWT-bearer grant a service-account key uses. The assertion's
  RS256 signature is verified (pure-Python RSA) when the key's public numbers were registered
  with :meth:`FakeDrive.register_key`; a revoked key gets ``400 invalid_grant``.
- ``/drive/v2/files``: list (with a recursive-descent parser for the query subset below and
  ``maxResults``/``pageToken`` paging), get (``alt=media`` with ``Range``/206), insert
  (metadata only), update/patch (``addParents``/``removeParents``), delete, trash, untrash,
  copy.
- ``/upload/drive/v2/files[/{id}]``: ``uploadType=media|multipart|resumable`` for insert
  (POST) and update (PUT); resumable sessions answer chunks with ``308`` + ``Range`` and
  status queries (``Content-Range: bytes */N``) with the persisted range.

Responses honour ``fields`` (Google's partial-response syntax: ``a,b``, ``a/b``,
``items(id,title)``, ``*``): like Drive, only the fields asked for come back, so a client
that forgets to ask for one (say ``md5Checksum`` in a listing) does not get it.

Query subset: ``'X' in parents``, ``title = '...'`` (``\\'`` and ``\\\\`` escapes),
``title contains '...'``, ``mimeType = / != '...'``, ``trashed = true/false``, ``and``,
``or``, ``not`` and parentheses.

Drive semantics that matter for resutil are simulated, not emulated: duplicate titles are
allowed; items in a Shared Drive are invisible unless the request passes
``supportsAllDrives`` (and ``includeItemsFromAllDrives`` for lists); a service account has
no storage quota, so uploading content outside a Shared Drive fails with ``403
storageQuotaExceeded``; permanent delete in a Shared Drive needs the ``organizer`` role
(a Content manager, ``fileOrganizer``, may only trash).

Fault injection: :meth:`FakeDrive.fail_next` answers the next N matching requests with a
Google-shaped error, :meth:`FakeDrive.drop_next_upload_chunk` cuts the connection in
the middle of the next resumable chunk (nothing of that chunk is persisted),
:meth:`FakeDrive.lose_next_answer` carries out the next matching request and then cuts the
connection instead of answering, and :meth:`FakeDrive.before_next` runs a function just
before the next matching request is served (another client acting at that moment).
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler
from typing import Any, Callable
from urllib.parse import parse_qs, urlsplit

from .httpserver import Server, hang_up

FOLDER_MIME = "application/vnd.google-apps.folder"
JWT_BEARER = "urn:ietf:params:oauth:grant-type:jwt-bearer"
DRIVE_SCOPE = "https://www.googleapis.com/auth/drive"
# DER prefix of DigestInfo(SHA-256) for EMSA-PKCS1-v1_5 (RFC 8017, section 9.2).
SHA256_DIGEST_INFO = bytes.fromhex("3031300d060960864801650304020105000420")


class DriveError(Exception):
    """A Google-shaped API error response."""

    def __init__(self, code: int, reason: str, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.code, self.reason, self.message, self.extra = code, reason, message, extra

    def body(self) -> dict:
        err = {"domain": "global", "reason": self.reason, "message": self.message, **self.extra}
        return {"error": {"code": self.code, "message": self.message, "errors": [err]}}


def not_found(file_id: str) -> DriveError:
    return DriveError(404, "notFound", f"File not found: {file_id}",
                      locationType="parameter", location="fileId")


# -- query language ------------------------------------------------------------------------
_TOKEN = re.compile(r"\s*(?:(?P<str>'(?:[^'\\]|\\.)*')|(?P<op>!=|<=|>=|=|<|>|\(|\))"
                    r"|(?P<word>[A-Za-z_][A-Za-z0-9_.]*))")


def _tokenize(q: str) -> list[tuple[str, str]]:
    pos, out = 0, []
    q = q.rstrip()
    while pos < len(q):
        m = _TOKEN.match(q, pos)
        if not m:
            raise DriveError(400, "invalid", f"Invalid query at offset {pos}: {q[pos:pos + 20]!r}",
                             locationType="parameter", location="q")
        pos = m.end()
        if m.group("str") is not None:
            raw = m.group("str")[1:-1]
            out.append(("str", re.sub(r"\\(.)", r"\1", raw)))
        elif m.group("op") is not None:
            out.append(("op", m.group("op")))
        else:
            out.append(("word", m.group("word")))
    return out


class _Parser:
    """expr := and ('or' and)*; and := not ('and' not)*; not := 'not' not | '(' expr ')' | term"""

    def __init__(self, q: str) -> None:
        self.q = q
        self.toks = _tokenize(q)
        self.i = 0

    def _err(self, what: str) -> DriveError:
        return DriveError(400, "invalid", f"Invalid query ({what}): {self.q}",
                          locationType="parameter", location="q")

    def _peek(self) -> tuple[str, str] | None:
        return self.toks[self.i] if self.i < len(self.toks) else None

    def _take(self) -> tuple[str, str]:
        tok = self._peek()
        if tok is None:
            raise self._err("unexpected end")
        self.i += 1
        return tok

    def _kw(self, word: str) -> bool:
        tok = self._peek()
        if tok and tok[0] == "word" and tok[1].lower() == word:
            self.i += 1
            return True
        return False

    def parse(self) -> Callable[[dict], bool]:
        fn = self._or()
        extra = self._peek()
        if extra is not None:
            raise self._err(f"unexpected {extra[1]!r}")
        return fn

    def _or(self):
        parts = [self._and()]
        while self._kw("or"):
            parts.append(self._and())
        return parts[0] if len(parts) == 1 else (lambda f: any(p(f) for p in parts))

    def _and(self):
        parts = [self._not()]
        while self._kw("and"):
            parts.append(self._not())
        return parts[0] if len(parts) == 1 else (lambda f: all(p(f) for p in parts))

    def _not(self):
        if self._kw("not"):
            inner = self._not()
            return lambda f: not inner(f)
        tok = self._peek()
        if tok == ("op", "("):
            self.i += 1
            inner = self._or()
            if self._take() != ("op", ")"):
                raise self._err("missing ')'")
            return inner
        return self._term()

    def _value(self):
        kind, val = self._take()
        if kind == "str":
            return val
        if kind == "word" and val.lower() in ("true", "false"):
            return val.lower() == "true"
        raise self._err(f"bad value {val!r}")

    def _term(self):
        kind, val = self._take()
        if kind == "str":  # 'X' in parents
            if not self._kw("in"):
                raise self._err("expected 'in'")
            fld = self._take()
            if fld != ("word", "parents"):
                raise self._err("only 'in parents' is supported")
            return lambda f: any(p["id"] == val for p in f["parents"])
        if kind != "word":
            raise self._err(f"unexpected {val!r}")
        name = val
        if self._kw("contains"):
            needle = self._value()
            if name not in ("title", "fullText"):
                raise self._err(f"'contains' on {name}")
            return lambda f: str(needle).lower() in f["title"].lower()
        op = self._take()
        if op[0] != "op" or op[1] not in ("=", "!=", "<", ">", "<=", ">="):
            raise self._err(f"bad operator {op[1]!r}")
        value = self._value()
        getters = {
            "title": lambda f: f["title"],
            "mimeType": lambda f: f["mimeType"],
            "trashed": lambda f: f["labels"]["trashed"],
            "modifiedDate": lambda f: f["modifiedDate"],
            "createdDate": lambda f: f["createdDate"],
        }
        if name not in getters:
            raise self._err(f"unsupported field {name}")
        get = getters[name]
        ops = {"=": lambda a, b: a == b, "!=": lambda a, b: a != b, "<": lambda a, b: a < b,
               ">": lambda a, b: a > b, "<=": lambda a, b: a <= b, ">=": lambda a, b: a >= b}
        cmp = ops[op[1]]
        return lambda f: cmp(get(f), value)


# -- partial responses ---------------------------------------------------------------------
def parse_fields(spec: str) -> dict[str, Any]:
    """Google's ``fields`` selector as a tree: name -> subtree (None: the whole value).
    ``list := path (',' path)*``, ``path := name ('/' path | '(' list ')')?``."""
    tokens = re.findall(r"[^,/()\s]+|[,/()]", spec)
    pos = 0

    def bad() -> DriveError:
        return DriveError(400, "invalidParameter", f"Invalid field selection {spec}",
                          locationType="parameter", location="fields")

    def path() -> dict[str, Any]:
        nonlocal pos
        if pos >= len(tokens) or tokens[pos] in ",/()":
            raise bad()
        name, sub = tokens[pos], None
        pos += 1
        if pos < len(tokens) and tokens[pos] == "/":
            pos += 1
            sub = path()
        elif pos < len(tokens) and tokens[pos] == "(":
            pos += 1
            sub = selection()
            if pos >= len(tokens) or tokens[pos] != ")":
                raise bad()
            pos += 1
        return {name: sub}

    def selection() -> dict[str, Any]:
        nonlocal pos
        out: dict[str, Any] = {}
        while True:
            for name, sub in path().items():
                prev = out.get(name, {})
                out[name] = None if sub is None or prev is None else {**prev, **sub}
            if pos < len(tokens) and tokens[pos] == ",":
                pos += 1
                continue
            return out

    tree = selection()
    if pos != len(tokens):
        raise bad()
    return tree


def select_fields(value: Any, tree: dict[str, Any] | None) -> Any:
    """``value`` reduced to the fields in ``tree`` (see parse_fields)."""
    if tree is None or "*" in tree and tree["*"] is None:
        return value
    if isinstance(value, list):
        return [select_fields(v, tree) for v in value]
    if not isinstance(value, dict):
        return value
    return {k: select_fields(value[k], sub) for k, sub in tree.items() if k in value}


def compile_query(q: str) -> Callable[[dict], bool]:
    """A predicate over v2 file resources for a Drive query string (raises DriveError)."""
    if not q.strip():
        return lambda f: True
    return _Parser(q).parse()


# -- token endpoint helpers -------------------------------------------------------------
def _b64url_decode(part: str) -> bytes:
    return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))


def verify_rs256(signing_input: bytes, signature: bytes, n: int, e: int) -> bool:
    """RSASSA-PKCS1-v1_5 with SHA-256, in pure Python."""
    k = (n.bit_length() + 7) // 8
    if len(signature) != k:
        return False
    em = pow(int.from_bytes(signature, "big"), e, n).to_bytes(k, "big")
    t = SHA256_DIGEST_INFO + hashlib.sha256(signing_input).digest()
    expected = b"\x00\x01" + b"\xff" * (k - len(t) - 3) + b"\x00" + t
    return em == expected


@dataclass
class Fault:
    status: int
    reason: str
    message: str
    remaining: int
    match: Callable[[str, str], bool]


@dataclass
class Upload:
    """A resumable upload session."""

    file_id: str | None  # None: insert; else: update of that file
    metadata: dict
    params: dict
    total: int | None
    data: bytearray = field(default_factory=bytearray)
    result: dict | None = None  # the resource, once complete


def _now_rfc3339(t: float) -> str:
    dt = datetime.fromtimestamp(t, tz=timezone.utc)
    return dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{dt.microsecond // 1000:03d}Z"


def _truthy(params: dict, key: str) -> bool:
    return str(params.get(key, "")).lower() == "true"


class FakeDrive:
    """The in-memory Drive plus its HTTP server; see the module docstring."""

    def __init__(self, *, no_service_account_quota: bool = True) -> None:
        self.lock = threading.RLock()
        self.files: dict[str, dict] = {}
        self.content: dict[str, bytes] = {}
        self.drives: dict[str, dict] = {}  # shared drive id -> {"name", "role"}
        self.uploads: dict[str, Upload] = {}
        self.keys: dict[str, tuple[int, int]] = {}  # client_email -> (n, e)
        self.revoked: set[str] = set()
        self.tokens: dict[str, dict] = {}
        self.faults: list[Fault] = []
        self.drop_chunks = 0
        self.lost_answers: list[list] = []  # [match, remaining]
        self.hooks: list[list] = []  # [match, function, remaining]
        self.requests: list[tuple[str, str]] = []  # (method, path?query) seen, in order
        self.no_service_account_quota = no_service_account_quota
        self.require_auth = True
        self._clock = 0.0
        self.server: Server | None = None
        self.thread: threading.Thread | None = None
        self.url = ""

    # -- lifecycle ----------------------------------------------------------------------
    def start(self) -> str:
        """Serve on an ephemeral port of 127.0.0.1; returns the base URL."""
        handler = type("Handler", (_Handler,), {"drive": self})
        self.server = Server(("127.0.0.1", 0), handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, name="fake-drive",
                                       daemon=True)
        self.thread.start()
        return self.url

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            self.server = None

    @property
    def token_url(self) -> str:
        return f"{self.url}/token"

    # -- test helpers -------------------------------------------------------------------
    def register_key(self, client_email: str, n: int, e: int) -> None:
        """Verify assertions signed for ``client_email`` with this RSA public key."""
        self.keys[client_email] = (n, e)

    def revoke_key(self, client_email: str) -> None:
        """The token endpoint answers ``invalid_grant`` for this account from now on."""
        self.revoked.add(client_email)

    def expire_tokens(self) -> None:
        """Every issued access token becomes invalid (API calls answer 401)."""
        with self.lock:
            self.tokens.clear()

    def fail_next(self, status: int, reason: str, message: str | None = None, *, times: int = 1,
                  match: str | Callable[[str, str], bool] | None = None) -> None:
        """Answer the next ``times`` matching requests with an error.

        ``match`` is a substring of ``"METHOD /path?query"`` or a predicate
        ``(method, path_and_query)``; by default every request except the token endpoint.
        """
        def pred(method: str, path: str) -> bool:
            if match is None:
                return not path.startswith("/token")
            if isinstance(match, str):
                return match in f"{method} {path}"
            return match(method, path)

        with self.lock:
            self.faults.append(Fault(status, reason, message or f"Injected {reason}", times, pred))

    def drop_next_upload_chunk(self, times: int = 1) -> None:
        """Cut the connection in the middle of the next resumable-upload chunk."""
        with self.lock:
            self.drop_chunks += times

    def lose_next_answer(self, match: str, times: int = 1) -> None:
        """Carry out the next ``times`` requests containing ``match`` (in ``"METHOD
        /path?query"``), then cut the connection instead of answering: the client cannot
        tell whether they happened."""
        with self.lock:
            self.lost_answers.append([match, times])

    def before_next(self, match: str, fn: Callable[[], Any], times: int = 1) -> None:
        """Call ``fn()`` just before the next ``times`` matching requests are served."""
        with self.lock:
            self.hooks.append([match, fn, times])

    def _take(self, entries: list[list], method: str, path: str) -> list | None:
        with self.lock:
            for entry in entries:
                if entry[0] in f"{method} {path}" and entry[-1] > 0:
                    entry[-1] -= 1
                    return entry
        return None

    def clear_faults(self) -> None:
        with self.lock:
            self.faults.clear()
            self.drop_chunks = 0
            self.lost_answers.clear()
            self.hooks.clear()

    def create_shared_drive(self, name: str = "Team", role: str = "fileOrganizer") -> str:
        """A Shared Drive where service accounts have ``role`` (organizer, fileOrganizer,
        writer, reader); its id is also its root folder's id."""
        with self.lock:
            drive_id = "0A" + uuid.uuid4().hex[:17]
            self.drives[drive_id] = {"name": name, "role": role}
            t = self._tick()
            self.files[drive_id] = self._resource(drive_id, name, FOLDER_MIME, [], t, t, drive_id)
            return drive_id

    def create_folder(self, title: str, parent: str | None = None,
                      created: float | None = None) -> str:
        """A folder (``parent`` None: a My Drive folder shared with the service account)."""
        return self.create_file(title, parent, None, mime_type=FOLDER_MIME, created=created)

    def create_file(self, title: str, parent: str | None, data: bytes | None,
                    mime_type: str = "application/zip", created: float | None = None) -> str:
        """A file made directly in the store (e.g. by another client, or a duplicate)."""
        with self.lock:
            t = self._tick() if created is None else created
            parents = [parent] if parent else []
            res = self._new_file({"title": title, "mimeType": mime_type,
                                  "parents": [{"id": p} for p in parents]}, data, t)
            return res["id"]

    def children(self, parent: str, include_trashed: bool = False) -> list[dict]:
        """The resources directly in ``parent`` (what a 0.1.x client's listing sees)."""
        with self.lock:
            return [dict(f) for f in self.files.values()
                    if any(p["id"] == parent for p in f["parents"])
                    and (include_trashed or not f["labels"]["trashed"])]

    def query(self, q: str) -> list[dict]:
        """Evaluate a Drive query over every file (ignoring Shared Drive visibility)."""
        pred = compile_query(q)
        with self.lock:
            return [dict(f) for f in self.files.values() if pred(f)]

    def remove(self, file_id: str) -> None:
        """Delete an item and its descendants as the drive's owner would (no role check)."""
        with self.lock:
            doomed = [file_id]
            while doomed:
                cur = doomed.pop()
                self.files.pop(cur, None)
                self.content.pop(cur, None)
                doomed += [c["id"] for c in self.files.values()
                           if any(p["id"] == cur for p in c["parents"])]

    def read(self, file_id: str) -> bytes:
        with self.lock:
            return self.content.get(file_id, b"")

    # -- model --------------------------------------------------------------------------
    def _tick(self) -> float:
        """A strictly increasing timestamp (distinct createdDate for every item)."""
        with self.lock:
            self._clock = max(time.time(), self._clock + 0.001)
            return self._clock

    def _resource(self, fid: str, title: str, mime: str, parents: list[dict], created: float,
                  modified: float, drive_id: str | None) -> dict:
        res: dict[str, Any] = {
            "kind": "drive#file", "id": fid, "title": title, "mimeType": mime,
            "parents": [{"kind": "drive#parentReference", "id": p["id"],
                         "isRoot": False} for p in parents],
            "labels": {"trashed": False, "starred": False, "hidden": False,
                       "restricted": False, "viewed": True},
            "createdDate": _now_rfc3339(created), "modifiedDate": _now_rfc3339(modified),
        }
        if drive_id:
            res["driveId"] = res["teamDriveId"] = drive_id
        return res

    def _drive_of(self, parents: list[dict]) -> str | None:
        for p in parents:
            f = self.files.get(p["id"])
            if f is None:
                raise not_found(p["id"])
            if p["id"] in self.drives:
                return p["id"]
            if f.get("driveId"):
                return f["driveId"]
        return None

    def _set_content(self, res: dict, data: bytes, t: float) -> None:
        self.content[res["id"]] = bytes(data)
        res["fileSize"] = str(len(data))
        res["quotaBytesUsed"] = "0" if res.get("driveId") else str(len(data))
        res["md5Checksum"] = hashlib.md5(data).hexdigest()
        res["modifiedDate"] = _now_rfc3339(t)
        res["downloadUrl"] = f"{self.url}/drive/v2/files/{res['id']}?alt=media"
        res["version"] = str(int(res.get("version", "0")) + 1)

    def _new_file(self, meta: dict, data: bytes | None, t: float | None = None) -> dict:
        parents = [{"id": p["id"]} for p in meta.get("parents") or []]
        drive_id = self._drive_of(parents)
        mime = meta.get("mimeType") or "application/octet-stream"
        t = self._tick() if t is None else t
        fid = "1" + uuid.uuid4().hex + uuid.uuid4().hex[:12]
        res = self._resource(fid, meta.get("title") or "Untitled", mime, parents, t, t, drive_id)
        if mime != FOLDER_MIME:
            self._set_content(res, data or b"", t)
        self.files[fid] = res
        return res

    def _visible(self, f: dict, params: dict, listing: bool = False) -> bool:
        if not f.get("driveId"):
            return True
        if not _truthy(params, "supportsAllDrives") and not _truthy(params, "supportsTeamDrives"):
            return False
        if listing and not (_truthy(params, "includeItemsFromAllDrives")
                            or _truthy(params, "includeTeamDriveItems")):
            return False
        return True

    def _get(self, fid: str, params: dict) -> dict:
        f = self.files.get(fid)
        if f is None or not self._visible(f, params):
            raise not_found(fid)
        return f

    def _role(self, f_or_parents) -> str:
        drive_id = (f_or_parents.get("driveId") if isinstance(f_or_parents, dict)
                    else self._drive_of(f_or_parents))
        return self.drives[drive_id]["role"] if drive_id else "writer"

    def _check_write(self, target) -> None:
        if self._role(target) == "reader":
            raise DriveError(403, "insufficientFilePermissions",
                             "The user does not have sufficient permissions for this file.")

    def _check_quota(self, parents: list[dict]) -> None:
        if self.no_service_account_quota and self._drive_of(parents) is None:
            raise DriveError(
                403, "storageQuotaExceeded",
                "Service Accounts do not have storage quota. Leverage shared drives "
                "(https://developers.google.com/workspace/drive/api/guides/about-shareddrives),"
                " or use OAuth delegation instead.")

    # -- API operations (called with the lock held) ---------------------------------------
    def api_list(self, params: dict) -> dict:
        pred = compile_query(params.get("q", ""))
        try:
            max_results = min(max(int(params.get("maxResults", 100)), 1), 1000)
        except ValueError:
            raise DriveError(400, "invalid", "Invalid value for maxResults") from None
        corpora = params.get("corpora", "default")
        drive_id = params.get("driveId") or params.get("teamDriveId")
        if corpora == "drive" and (not drive_id or drive_id not in self.drives):
            raise DriveError(404 if drive_id else 400, "notFound" if drive_id else "invalid",
                             f"Shared drive not found: {drive_id}")
        items = []
        for f in self.files.values():
            if f["id"] in self.drives:
                continue  # a shared drive's root is not a listable item
            if corpora == "drive" and f.get("driveId") != drive_id:
                continue
            if self._visible(f, params, listing=True) and pred(f):
                items.append(f)
        start = 0
        if params.get("pageToken"):
            try:
                start = int(_b64url_decode(params["pageToken"]).decode().split(":")[1])
            except (ValueError, IndexError):
                raise DriveError(400, "invalid", "Invalid page token") from None
        page = items[start:start + max_results]
        out: dict[str, Any] = {"kind": "drive#fileList", "items": [dict(f) for f in page]}
        if start + max_results < len(items):
            tok = base64.urlsafe_b64encode(f"p:{start + max_results}".encode()).decode()
            out["nextPageToken"] = tok.rstrip("=")
        return out

    def api_insert(self, meta: dict, data: bytes | None, params: dict) -> dict:
        parents = [{"id": p["id"]} for p in meta.get("parents") or []]
        for p in parents:
            self._get(p["id"], params)
        self._check_write(parents)
        if data is not None or meta.get("mimeType") != FOLDER_MIME:
            if data is not None:
                self._check_quota(parents)
        return dict(self._new_file(meta, data))

    def api_update(self, fid: str, meta: dict, data: bytes | None, params: dict) -> dict:
        f = self._get(fid, params)
        self._check_write(f)
        t = self._tick()
        if meta.get("title"):
            f["title"] = meta["title"]
        if meta.get("mimeType") and f["mimeType"] != FOLDER_MIME:
            f["mimeType"] = meta["mimeType"]
        if "labels" in meta and "trashed" in meta["labels"]:
            f["labels"]["trashed"] = bool(meta["labels"]["trashed"])
        if meta.get("parents") is not None:
            f["parents"] = [{"kind": "drive#parentReference", "id": p["id"], "isRoot": False}
                            for p in meta["parents"]]
        for pid in filter(None, params.get("removeParents", "").split(",")):
            f["parents"] = [p for p in f["parents"] if p["id"] != pid]
        for pid in filter(None, params.get("addParents", "").split(",")):
            self._get(pid, params)
            f["parents"].append({"kind": "drive#parentReference", "id": pid, "isRoot": False})
        if data is not None:
            if f["mimeType"] == FOLDER_MIME:
                raise DriveError(400, "invalid", "Folders cannot have content")
            self._set_content(f, data, t)
        else:
            f["modifiedDate"] = _now_rfc3339(t)
        return dict(f)

    def api_delete(self, fid: str, params: dict) -> None:
        f = self._get(fid, params)
        role = self._role(f)
        if role not in ("organizer", "writer") or (f.get("driveId") and role != "organizer"):
            raise DriveError(403, "insufficientFilePermissions",
                             "The user does not have sufficient permissions for this file.")
        self.remove(fid)

    def api_trash(self, fid: str, params: dict, trashed: bool) -> dict:
        f = self._get(fid, params)
        self._check_write(f)
        f["labels"]["trashed"] = trashed
        return dict(f)

    def api_copy(self, fid: str, meta: dict, params: dict) -> dict:
        src = self._get(fid, params)
        if src["mimeType"] == FOLDER_MIME:
            raise DriveError(403, "cannotCopyFile", "Folders cannot be copied")
        parents = meta.get("parents") or [{"id": p["id"]} for p in src["parents"]]
        self._check_write(parents)
        self._check_quota(parents)
        new = {"title": meta.get("title") or src["title"], "mimeType": src["mimeType"],
               "parents": parents}
        return dict(self._new_file(new, self.content.get(fid, b"")))


class _Handler(BaseHTTPRequestHandler):
    drive: FakeDrive
    fields: str | None = None
    lose_answer = False
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # else every keep-alive request stalls ~40 ms

    def log_message(self, format, *args):  # noqa: A002 - quiet
        pass

    # -- plumbing -------------------------------------------------------------------------
    def _body(self) -> bytes:
        n = int(self.headers.get("Content-Length") or 0)
        chunks, left = [], n
        while left > 0:
            chunk = self.rfile.read(min(left, 1 << 20))
            if not chunk:
                break
            chunks.append(chunk)
            left -= len(chunk)
        return b"".join(chunks)

    def _send(self, status: int, body: bytes | dict | None = None,
              headers: dict[str, str] | None = None) -> None:
        if isinstance(body, dict):
            if status == 200 and self.fields:  # a partial response, as asked
                body = select_fields(body, parse_fields(self.fields))
            payload = json.dumps(body).encode()
            ctype = "application/json; charset=UTF-8"
        else:
            payload = body or b""
            ctype = "application/octet-stream"
        if self.lose_answer:  # done, but the answer never arrives
            hang_up(self)
            return
        self.send_response(status)
        hdrs = {"Content-Type": ctype, **(headers or {})}
        for k, v in hdrs.items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(payload)

    def _error(self, err: DriveError, headers: dict[str, str] | None = None) -> None:
        self._send(err.code, err.body(), headers)

    def do_GET(self):  # noqa: N802
        self._dispatch()

    def do_POST(self):  # noqa: N802
        self._dispatch()

    def do_PUT(self):  # noqa: N802
        self._dispatch()

    def do_PATCH(self):  # noqa: N802
        self._dispatch()

    def do_DELETE(self):  # noqa: N802
        self._dispatch()

    def _dispatch(self) -> None:
        d = self.drive
        split = urlsplit(self.path)
        path = split.path
        params = {k: v[-1] for k, v in parse_qs(split.query, keep_blank_values=True).items()}
        self.fields = params.get("fields") or None
        hook = d._take(d.hooks, self.command, self.path)
        if hook is not None:
            hook[1]()
        self.lose_answer = d._take(d.lost_answers, self.command, self.path) is not None
        with d.lock:
            d.requests.append((self.command, self.path))
            fault = next((f for f in d.faults if f.match(self.command, self.path)), None)
            if fault is not None:
                fault.remaining -= 1
                if fault.remaining <= 0:
                    d.faults.remove(fault)
        if fault is not None:
            self._body()
            extra = {"Retry-After": "0"} if fault.status in (429, 503) else None
            if fault.status == 401:
                extra = {"WWW-Authenticate": 'Bearer realm="https://accounts.google.com/"'}
            return self._error(DriveError(fault.status, fault.reason, fault.message), extra)
        try:
            if path == "/token":
                return self._token()
            if self.drive.require_auth and not self._authorised():
                self._body()
                return self._error(DriveError(401, "authError", "Invalid Credentials",
                                              locationType="header", location="Authorization"))
            if path.startswith("/upload/drive/v2/files"):
                return self._upload(path[len("/upload/drive/v2/files"):], params)
            if path.startswith("/drive/v2/files"):
                return self._files(path[len("/drive/v2/files"):], params)
            self._body()
            self._error(DriveError(404, "notFound", f"Not Found: {path}"))
        except DriveError as e:
            self._error(e)

    def _authorised(self) -> bool:
        auth = self.headers.get("Authorization", "")
        if not auth.startswith("Bearer "):
            return False
        with self.drive.lock:
            return auth[7:] in self.drive.tokens

    # -- OAuth2 token endpoint -------------------------------------------------------------
    def _token(self) -> None:
        d = self.drive
        form = {k: v[-1] for k, v in parse_qs(self._body().decode()).items()}

        def refuse(status: int, error: str, desc: str) -> None:
            self._send(status, {"error": error, "error_description": desc})

        if form.get("grant_type") != JWT_BEARER:
            return refuse(400, "unsupported_grant_type", "Invalid grant_type.")
        try:
            h64, p64, s64 = form["assertion"].split(".")
            header = json.loads(_b64url_decode(h64))
            claims = json.loads(_b64url_decode(p64))
            signature = _b64url_decode(s64)
        except (KeyError, ValueError):
            return refuse(400, "invalid_grant", "Invalid JWT: malformed assertion.")
        iss = claims.get("iss", "")
        if header.get("alg") != "RS256":
            return refuse(400, "invalid_grant", "Invalid JWT: unsupported algorithm.")
        if iss in d.revoked:
            return refuse(400, "invalid_grant", "Invalid JWT Signature.")
        key = d.keys.get(iss)
        if key is not None and not verify_rs256(f"{h64}.{p64}".encode(), signature, *key):
            return refuse(400, "invalid_grant", "Invalid JWT Signature.")
        now = time.time()
        if not claims.get("iat", 0) - 300 <= now <= claims.get("exp", 0) + 300:
            return refuse(400, "invalid_grant",
                          "Invalid JWT: Token must be a short-lived token (60 minutes) and in a "
                          "reasonable timeframe. Check your iat and exp values in the JWT claim.")
        if DRIVE_SCOPE not in str(claims.get("scope", "")).split():
            return refuse(400, "invalid_scope", "Invalid OAuth scope or ID token audience.")
        token = "ya29.fake-" + uuid.uuid4().hex
        with d.lock:
            d.tokens[token] = {"email": iss, "sub": claims.get("sub")}
        self._send(200, {"access_token": token, "expires_in": 3599, "token_type": "Bearer"})

    # -- /drive/v2/files -----------------------------------------------------------------
    def _json_body(self) -> dict:
        raw = self._body()
        if not raw:
            return {}
        try:
            return json.loads(raw)
        except ValueError:
            raise DriveError(400, "parseError", "Parse Error") from None

    def _files(self, rest: str, params: dict) -> None:
        d = self.drive
        m = self.command
        parts = [p for p in rest.split("/") if p]
        if not parts:
            if m == "GET":
                self._body()
                with d.lock:
                    return self._send(200, d.api_list(params))
            if m == "POST":
                meta = self._json_body()
                with d.lock:
                    return self._send(200, d.api_insert(meta, None, params))
        elif len(parts) == 1:
            fid = parts[0]
            if m == "GET":
                self._body()
                if params.get("alt") == "media":
                    return self._media(fid, params)
                with d.lock:
                    return self._send(200, dict(d._get(fid, params)))
            if m in ("PATCH", "PUT"):
                meta = self._json_body()
                with d.lock:
                    return self._send(200, d.api_update(fid, meta, None, params))
            if m == "DELETE":
                self._body()
                with d.lock:
                    d.api_delete(fid, params)
                return self._send(204)
        elif len(parts) == 2 and m == "POST":
            fid, verb = parts
            meta = self._json_body()
            with d.lock:
                if verb == "trash":
                    return self._send(200, d.api_trash(fid, params, True))
                if verb == "untrash":
                    return self._send(200, d.api_trash(fid, params, False))
                if verb == "copy":
                    return self._send(200, d.api_copy(fid, meta, params))
        self._body()
        raise DriveError(404, "notFound", f"Not Found: {self.command} {self.path}")

    def _media(self, fid: str, params: dict) -> None:
        d = self.drive
        with d.lock:
            f = d._get(fid, params)
            if f["mimeType"].startswith("application/vnd.google-apps."):
                raise DriveError(403, "fileNotDownloadable",
                                 "Only files with binary content can be downloaded.")
            data = d.content.get(fid, b"")
        rng = self.headers.get("Range")
        if not rng:
            return self._send(200, data)
        m = re.fullmatch(r"bytes=(\d+)-(\d*)", rng.strip())
        if not m:
            return self._send(200, data)
        start = int(m.group(1))
        end = int(m.group(2)) if m.group(2) else len(data) - 1
        if start >= len(data):
            return self._send(416, b"", {"Content-Range": f"bytes */{len(data)}"})
        end = min(end, len(data) - 1)
        self._send(206, data[start:end + 1],
                   {"Content-Range": f"bytes {start}-{end}/{len(data)}"})

    # -- /upload/drive/v2/files ----------------------------------------------------------
    def _upload(self, rest: str, params: dict) -> None:
        d = self.drive
        fid = rest.strip("/") or None
        kind = params.get("uploadType", "media")
        if "upload_id" in params:
            return self._chunk(params["upload_id"])
        if (self.command, fid is None) not in (("POST", True), ("PUT", False)):
            self._body()
            raise DriveError(404, "notFound", f"Not Found: {self.command} {self.path}")
        if kind == "resumable":
            meta = self._json_body()
            total = self.headers.get("X-Upload-Content-Length")
            with d.lock:
                if fid is None:
                    parents = [{"id": p["id"]} for p in meta.get("parents") or []]
                    for p in parents:
                        d._get(p["id"], params)
                    d._check_write(parents)
                    d._check_quota(parents)
                else:
                    d._check_write(d._get(fid, params))
                upload_id = uuid.uuid4().hex
                d.uploads[upload_id] = Upload(fid, meta, params,
                                              int(total) if total else None)
            sep = "&" if "?" in self.path else "?"
            location = f"{d.url}{self.path}{sep}upload_id={upload_id}"
            return self._send(200, {}, {"Location": location})
        body = self._body()
        if kind == "multipart":
            meta, data = self._multipart(body)
        else:
            meta, data = {}, body
        with d.lock:
            if fid is None:
                return self._send(200, d.api_insert(meta, data, params))
            return self._send(200, d.api_update(fid, meta, data, params))

    def _multipart(self, body: bytes) -> tuple[dict, bytes]:
        m = re.search(r'boundary="?([^";]+)"?', self.headers.get("Content-Type", ""))
        if not m:
            raise DriveError(400, "badContent", "Missing multipart boundary")
        boundary = b"--" + m.group(1).encode()
        parts = []
        for chunk in body.split(boundary)[1:]:
            if chunk.startswith(b"--"):
                break
            nl = b"\r\n" if chunk.startswith(b"\r\n") else b"\n"  # the generator's linesep
            head, _, payload = chunk[len(nl):].partition(nl + nl)
            if payload.endswith(nl):
                payload = payload[:-len(nl)]
            parts.append((head, payload))
        if len(parts) != 2:
            raise DriveError(400, "badContent", "Expected metadata and media parts")
        try:
            meta = json.loads(parts[0][1] or b"{}")
        except ValueError:
            raise DriveError(400, "parseError", "Parse Error") from None
        return meta, parts[1][1]

    def _chunk(self, upload_id: str) -> None:
        d = self.drive
        with d.lock:
            up = d.uploads.get(upload_id)
        if up is None or self.command != "PUT":
            self._body()
            raise DriveError(404, "notFound", "Upload session not found or expired")
        length = int(self.headers.get("Content-Length") or 0)
        crange = self.headers.get("Content-Range", "")
        with d.lock:
            drop = d.drop_chunks > 0 and length > 0
            if drop:
                d.drop_chunks -= 1
        if drop:
            # Read part of the chunk, then cut the connection without answering.
            self.rfile.read(max(1, min(length // 2, 1 << 20)))
            hang_up(self, reset=True)
            return
        data = self._body()
        if up.result is not None:  # a finished session answers every PUT with its file
            return self._send(200, up.result)
        m_status = re.fullmatch(r"bytes \*/(\d+|\*)", crange.strip())
        m_chunk = re.fullmatch(r"bytes (\d+)-(\d+)/(\d+|\*)", crange.strip())
        with d.lock:
            if m_status:
                total = m_status.group(1)
                if total != "*":
                    up.total = int(total)
            elif m_chunk:
                start, end, total = int(m_chunk.group(1)), int(m_chunk.group(2)), m_chunk.group(3)
                if total != "*":
                    up.total = int(total)
                if start > len(up.data) or end - start + 1 != len(data):
                    raise DriveError(400, "badContent",
                                     f"Invalid Content-Range {crange} (have {len(up.data)} bytes)")
                up.data[start:] = data  # a resent overlap replaces what it covers
            elif not crange and length == 0 and up.total == 0:
                pass
            else:
                raise DriveError(400, "badContent", f"Invalid Content-Range {crange!r}")
            if up.total is not None and len(up.data) >= up.total:
                data_all = bytes(up.data[:up.total])
                if up.file_id is None:
                    res = d.api_insert(up.metadata, data_all, up.params)
                else:
                    res = d.api_update(up.file_id, up.metadata, data_all, up.params)
                up.result, up.data = res, bytearray(data_all)
                return self._send(200, res)
            headers = {}
            if up.data:
                headers["Range"] = f"bytes=0-{len(up.data) - 1}"
        self._send(308, b"", headers)


def start_fake_drive(**kwargs: Any) -> FakeDrive:
    """A started FakeDrive; ``.url`` is its base URL, ``.stop()`` ends it."""
    fake = FakeDrive(**kwargs)
    fake.start()
    return fake
