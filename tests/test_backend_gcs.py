"""GCS-specific behaviour: the service-account auth path and every failure a user can meet.

Everything runs the real google-cloud-storage / google-auth code over HTTP on 127.0.0.1:
- ``gcs_emulator`` (tests/backend_gcs.py) stores the objects;
- ``TokenServer`` is Google's OAuth token endpoint in miniature: it checks the signed JWT
  a service-account key produces and answers with an access token (or ``invalid_grant``);
- ``FaultProxy`` sits between the SDK and the emulator and, on request, answers with an
  error status or drops the connection half-way through a request body.
No SDK method is mocked. The one patched internal is google-auth's regional-access-boundary
lookup (see ``_no_regional_access_boundary``).
"""

from __future__ import annotations

import http.client
import io
import json
import os
import re
import threading
import time
from dataclasses import dataclass
from functools import partial
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Callable
from urllib.parse import parse_qs, urlparse

import pytest

pytest.importorskip("google.cloud.storage", reason="google-cloud-storage is not installed")
pytest.importorskip("gcp_storage_emulator", reason="gcp-storage-emulator is not installed")

from resutil.errors import (  # noqa: E402
    ConfigError,
    StorageNotFound,
    StoragePermission,
    StorageUnavailable,
)
from resutil.storage import StorageSettings, backend_class  # noqa: E402
from tests.helpers import Recorder, assert_one_line, at_once, big_file, closed_port
from tests.servers.httpserver import Server, hang_up  # noqa: E402

CLIENT_EMAIL = "resutil-ci@resutil-test.iam.gserviceaccount.com"
GOOGLE_TOKEN_AUDIENCE = "https://oauth2.googleapis.com/token"  # google-auth always uses it


# -- local servers -----------------------------------------------------------------------
class _Handler(BaseHTTPRequestHandler):
    disable_nagle_algorithm = True  # otherwise every keep-alive request stalls ~40 ms

    def __init__(self, owner, *args, **kwargs):
        self.owner = owner
        super().__init__(*args, **kwargs)

    def log_message(self, *args):
        pass

    def _reply(self, status: int, body: bytes, content_type="application/json", headers=()):
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        for k, v in headers:
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            out = b""
            while True:
                size = int(self.rfile.readline().strip() or b"0", 16)
                if not size:
                    self.rfile.readline()
                    return out
                out += self.rfile.read(size)
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""


class _Server:
    def __init__(self, handler_cls):
        self.httpd = Server(("127.0.0.1", 0), partial(handler_cls, self))
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self._thread = threading.Thread(target=self.httpd.serve_forever, args=(0.05,), daemon=True)
        self._thread.start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


class _TokenHandler(_Handler):
    def do_POST(self):
        form = parse_qs(self._body().decode())
        self.owner.handle(self, form)


class TokenServer(_Server):
    """The OAuth2 token endpoint a service-account key's ``token_uri`` points at."""

    def __init__(self, public_key_pem: bytes):
        super().__init__(_TokenHandler)
        self.public_key = public_key_pem
        self.mode = "ok"  # or "invalid_grant"
        self.grants: list[dict] = []
        self.tokens_issued = 0

    def handle(self, h: _TokenHandler, form: dict) -> None:
        import jwt  # PyJWT, checked by the token_server fixture

        assert form.get("grant_type") == ["urn:ietf:params:oauth:grant-type:jwt-bearer"], form
        claims = jwt.decode(form["assertion"][0], self.public_key, algorithms=["RS256"],
                            audience=GOOGLE_TOKEN_AUDIENCE)  # the real signature check
        self.grants.append(claims)
        if self.mode == "invalid_grant":
            body = {"error": "invalid_grant", "error_description": "Invalid JWT Signature."}
            h._reply(400, json.dumps(body).encode())
            return
        self.tokens_issued += 1
        body = {"access_token": f"tok-{self.tokens_issued}", "expires_in": 3600,
                "token_type": "Bearer"}
        h._reply(200, json.dumps(body).encode())


@dataclass
class Fault:
    # "fail": answer with status/body; "drop": close mid-body, no answer; "lose": pass the
    # request on, then close instead of answering (done, but the client cannot know);
    # "call": run ``fn`` (another client acting at that moment), then pass the request on
    kind: str
    times: int
    method: str | None = None
    path: str | None = None  # regex searched in the request path + query
    skip: int = 0  # let this many matching requests through first
    status: int = 503
    body: dict | None = None
    after_bytes: int = 64 * 1024
    fn: Callable[[], object] | None = None
    hits: int = 0


_HOP_HEADERS = {"connection", "keep-alive", "transfer-encoding", "content-length",
                "proxy-connection", "te", "upgrade"}


class _ProxyHandler(_Handler):
    def _handle(self):
        proxy: FaultProxy = self.owner
        proxy.requests.append((self.command, self.path, self.headers.get("Authorization")))
        fault = proxy.take(self.command, self.path)
        if fault is not None and fault.kind == "call":
            fault.fn()
        if fault is not None and fault.kind == "drop":
            # Read part of the body, then vanish: what a dropped Wi-Fi or a reset NAT does.
            self.rfile.read(min(int(self.headers.get("Content-Length") or 0), fault.after_bytes))
            hang_up(self)
            return
        body = self._body()
        if fault is not None and fault.kind == "fail":
            payload = fault.body or {"error": {"code": fault.status, "message": "Backend Error",
                                               "errors": [{"reason": "backendError"}]}}
            self._reply(fault.status, json.dumps(payload).encode())
            return
        up = urlparse(proxy.upstream)
        conn = http.client.HTTPConnection(up.hostname, up.port, timeout=60)
        # Host is passed through, so the emulator's resumable-session URLs point back here.
        headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP_HEADERS}
        conn.request(self.command, self.path, body=body, headers=headers)
        resp = conn.getresponse()
        data = resp.read()
        conn.close()
        if fault is not None and fault.kind == "lose":
            hang_up(self)
            return
        if proxy.page_size and self.command == "GET" and resp.status == 200 and re.search(
                r"/b/[^/]+/o(\?|$)", self.path):
            data = proxy.paginate(self.path, data)
        self.send_response(resp.status, resp.reason)
        for k, v in resp.getheaders():
            if k.lower() not in _HOP_HEADERS | {"date", "server"}:
                self.send_header(k, v)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _handle


class FaultProxy(_Server):
    """An HTTP proxy in front of the emulator that injects faults on request."""

    def __init__(self, upstream: str):
        super().__init__(_ProxyHandler)
        self.upstream = upstream
        self.faults: list[Fault] = []
        self.requests: list[tuple[str, str, str | None]] = []
        self.page_size = 0  # > 0: split object listings into pages, as GCS does at 1000
        self._lock = threading.Lock()

    def paginate(self, path: str, data: bytes) -> bytes:
        """The emulator ignores pageToken; serve its full listing page by page."""
        doc = json.loads(data)
        start = int(parse_qs(urlparse(path).query).get("pageToken", ["0"])[0])
        items = doc.get("items") or []
        doc["items"] = items[start:start + self.page_size]
        if start + self.page_size < len(items):
            doc["nextPageToken"] = str(start + self.page_size)
        if start:
            doc["prefixes"] = []
        return json.dumps(doc).encode()

    def add(self, kind: str, times: int, **kw) -> Fault:
        fault = Fault(kind, times, **kw)
        self.faults.append(fault)
        return fault

    def take(self, method: str, path: str) -> Fault | None:
        with self._lock:
            for f in self.faults:
                if f.times <= 0 or (f.method and f.method != method):
                    continue
                if f.path and not re.search(f.path, path):
                    continue
                if f.skip > 0:
                    f.skip -= 1
                    continue
                f.times -= 1
                f.hits += 1
                return f
        return None


# -- fixtures ----------------------------------------------------------------------------
@pytest.fixture(autouse=True)
def _no_regional_access_boundary(monkeypatch):
    """google-auth >= 2.4x starts a background GET to iamcredentials.googleapis.com after a
    service-account token refresh ("regional access boundary"). Offline it only logs
    warnings, but it is a real outbound request to Google that no test may make, and no
    public setting turns it off for a custom token_uri. Patching this one internal
    predicate is the accepted seam; everything else on the auth path runs for real."""
    from google.auth import credentials

    cls = getattr(credentials, "CredentialsWithRegionalAccessBoundary", None)
    if cls is not None and hasattr(cls, "_is_regional_access_boundary_lookup_required"):
        monkeypatch.setattr(cls, "_is_regional_access_boundary_lookup_required",
                            lambda self: False)


@pytest.fixture(scope="module")
def rsa_key():
    """A throw-away RSA key: (private PEM, public PEM)."""
    pytest.importorskip("cryptography")
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    public = key.public_key().public_bytes(serialization.Encoding.PEM,
                                           serialization.PublicFormat.SubjectPublicKeyInfo)
    return private, public


@pytest.fixture
def token_server(rsa_key):
    pytest.importorskip("jwt", reason="PyJWT is not installed")
    server = TokenServer(rsa_key[1])
    yield server
    server.close()


@pytest.fixture
def proxy(gcs_emulator):
    server = FaultProxy(gcs_emulator.url)
    yield server
    server.close()


def write_sa_key(path: Path, private_pem: bytes, token_uri: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({
        "type": "service_account",
        "project_id": "resutil-test",
        "private_key_id": "0123456789abcdef",
        "private_key": private_pem.decode(),
        "client_email": CLIENT_EMAIL,
        "client_id": "100000000000000000001",
        "auth_uri": "https://accounts.google.com/o/oauth2/auth",
        "token_uri": token_uri,
    }))
    return path


@pytest.fixture
def sa_key(tmp_path, rsa_key, token_server) -> Path:
    """A service-account key whose token_uri is the local token endpoint."""
    return write_sa_key(tmp_path / "keys" / "sa.json", rsa_key[0], f"{token_server.url}/token")


def make_storage(tmp_path, bucket: str, endpoint: str | None, config_dir: Path | None = None,
                 **values):
    vals = {"bucket_name": bucket, **values}
    if endpoint:
        vals["endpoint"] = endpoint
    settings = StorageSettings(
        values=vals, storage_type="gcs",
        config_path=(config_dir / "resutil-conf.yaml") if config_dir else None,
        scratch_dir=tmp_path / "scratch", retry_wait=0.01,
    )
    return backend_class("gcs")(settings)


# -- the real service-account path -------------------------------------------------------
def test_service_account_key_round_trip(tmp_path, gcs_bucket, proxy, token_server, sa_key):
    """key_file_path + endpoint: key parsed, JWT signed, token exchanged, Bearer sent."""
    storage = make_storage(tmp_path, gcs_bucket, proxy.url, config_dir=tmp_path,
                           key_file_path="keys/sa.json")  # relative to the config file
    storage.check("Proj.resutil")
    storage.write_bytes("Proj", "a.zip", b"payload")
    assert [o.name for o in storage.list("Proj")] == ["a.zip"]
    assert storage.read_bytes("Proj", "a.zip") == b"payload"
    storage.rename("Proj", "a.zip", "b.zip")
    storage.delete("Proj", "b.zip")
    assert storage.list("Proj") == []

    assert len(token_server.grants) == 1  # one token, reused for every request
    claims = token_server.grants[0]
    assert claims["iss"] == CLIENT_EMAIL
    assert "devstorage" in claims["scope"]
    auths = {a for _, _, a in proxy.requests}
    assert auths == {"Bearer tok-1"}


def test_constructor_touches_nothing(tmp_path):
    """Opening the storage reads settings only: no key file, no network."""
    storage = make_storage(tmp_path, "b", f"http://127.0.0.1:{closed_port()}",
                           key_file_path=str(tmp_path / "missing.json"))
    assert storage.describe() == "gs://b"


def test_legacy_backet_name_and_gs_prefix(tmp_path, gcs_bucket, gcs_emulator):
    """0.1.x configs spell it ``backet_name``; a pasted ``gs://`` URL is accepted too."""
    legacy = backend_class("gcs")(StorageSettings(
        values={"backet_name": f"gs://{gcs_bucket}/", "endpoint": gcs_emulator.url},
        storage_type="gcs", scratch_dir=tmp_path / "s"))
    assert legacy.describe() == f"gs://{gcs_bucket}"
    legacy.write_bytes("Proj", "a.zip", b"x")
    assert [o.name for o in legacy.list("Proj")] == ["a.zip"]


def test_missing_bucket_name_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="bucket_name"):
        backend_class("gcs")(StorageSettings(values={}, storage_type="gcs",
                                             config_path=tmp_path / "resutil-conf.yaml"))


def test_storage_emulator_host_is_honoured(tmp_path, gcs_bucket, gcs_emulator, monkeypatch):
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", gcs_emulator.url)
    storage = make_storage(tmp_path, gcs_bucket, endpoint=None)
    storage.write_bytes("Proj", "a.zip", b"via env")
    assert storage.read_bytes("Proj", "a.zip") == b"via env"


def test_lazy_client_is_thread_safe(tmp_path, gcs_bucket, gcs_emulator):
    storage = make_storage(tmp_path, gcs_bucket, gcs_emulator.url)
    at_once(lambda i: storage.write_bytes("Proj", f"{i}.zip", str(i).encode()), range(8))
    assert sorted(o.name for o in storage.list("Proj")) == sorted(f"{i}.zip" for i in range(8))


# -- 0.1.x compatibility -----------------------------------------------------------------
def test_sidecar_folder_is_invisible_to_a_01x_listing(tmp_path, gcs_bucket, gcs_emulator,
                                                      gcs_admin):
    storage = make_storage(tmp_path, gcs_bucket, gcs_emulator.url)
    storage.write_bytes("Proj", "aaaaaa_20240101T000000.zip", b"zip")
    storage.write_bytes("Proj.resutil", "aaaaaa_20240101T000000.json", b"{}")
    names = [b.name for b in gcs_admin.list_blobs(gcs_bucket, prefix="Proj/")]
    assert names == ["Proj/aaaaaa_20240101T000000.zip"]


def test_objects_written_by_01x_are_listed_and_pulled(tmp_path, gcs_bucket, gcs_emulator,
                                                      gcs_admin):
    bucket = gcs_admin.bucket(gcs_bucket)
    bucket.blob("Proj/aaaaab_20240101T000100.zip").upload_from_string(b"old archive")
    bucket.blob("Proj/nested/deeper.zip").upload_from_string(b"not a direct child")
    bucket.blob("Proj/").upload_from_string(b"")  # a "folder" made in the console
    storage = make_storage(tmp_path, gcs_bucket, gcs_emulator.url)
    assert [o.name for o in storage.list("Proj")] == ["aaaaab_20240101T000100.zip"]
    info = storage.stat("Proj", "aaaaab_20240101T000100.zip")
    assert info.size == len(b"old archive") and info.mtime > 0
    dest = tmp_path / "pulled.zip"
    storage.download("Proj", "aaaaab_20240101T000100.zip", dest)
    assert dest.read_bytes() == b"old archive"


def test_listing_follows_every_page(tmp_path, gcs_bucket, proxy):
    storage = make_storage(tmp_path, gcs_bucket, proxy.url)
    names = [f"aaaaa{c}_20240101T000000.zip" for c in "abcdefg"]
    for n in names:
        storage.write_bytes("Proj", n, b"x")
    storage.write_bytes("Proj.resutil", "a.json", b"{}")
    proxy.page_size = 3
    proxy.requests.clear()
    assert sorted(o.name for o in storage.list("Proj")) == names
    assert len([p for m, p, _ in proxy.requests if m == "GET" and "/o?" in p]) == 3


# -- configuration and credential faults -------------------------------------------------
def test_missing_key_file(tmp_path, gcs_bucket, gcs_emulator):
    storage = make_storage(tmp_path, gcs_bucket, gcs_emulator.url, config_dir=tmp_path,
                           key_file_path="keys/nope.json")
    with pytest.raises(ConfigError) as e:
        storage.list("Proj")
    assert f"GCS key file not found: {tmp_path / 'keys' / 'nope.json'}" in assert_one_line(e.value)


def test_key_file_not_json(tmp_path, gcs_bucket, gcs_emulator):
    key = tmp_path / "sa.json"
    key.write_text('{"type": "service_account",\n oops')
    storage = make_storage(tmp_path, gcs_bucket, gcs_emulator.url, key_file_path=str(key))
    with pytest.raises(ConfigError) as e:
        storage.check("Proj.resutil")
    assert f"{key} is not valid JSON (line 2)" in assert_one_line(e.value)


@pytest.mark.parametrize("content, expected", [
    ({"type": "service_account", "client_email": CLIENT_EMAIL},
     r"not a usable service-account key: .*missing fields"),
    ({"installed": {"client_id": "x", "client_secret": "y"}},
     r"is not a service-account key \(type: None\)"),
    ({"type": "authorized_user", "client_id": "x", "refresh_token": "r"},
     r"holds user credentials, not a service-account key"),
    ([1, 2, 3], r"is not a service-account key"),
])
def test_key_file_not_a_service_account_key(tmp_path, gcs_bucket, gcs_emulator, content,
                                            expected):
    key = tmp_path / "sa.json"
    key.write_text(json.dumps(content))
    storage = make_storage(tmp_path, gcs_bucket, gcs_emulator.url, key_file_path=str(key))
    with pytest.raises(ConfigError, match=expected) as e:
        storage.list("Proj")
    assert_one_line(e.value)


def test_revoked_key(tmp_path, gcs_bucket, gcs_emulator, token_server, sa_key):
    token_server.mode = "invalid_grant"
    storage = make_storage(tmp_path, gcs_bucket, gcs_emulator.url, key_file_path=str(sa_key))
    with pytest.raises(StoragePermission) as e:
        storage.check("Proj.resutil")
    msg = assert_one_line(e.value)
    assert "invalid_grant" in msg and "key was revoked or the clock is wrong" in msg
    assert str(sa_key) in msg
    assert len(token_server.grants) == 1  # not retried: retrying cannot help


@pytest.mark.timeout(40)  # a hang guard: the SDKs' own defaults would wait minutes
def test_token_endpoint_unreachable(tmp_path, gcs_bucket, gcs_emulator, rsa_key):
    key = write_sa_key(tmp_path / "sa.json", rsa_key[0], f"http://127.0.0.1:{closed_port()}/t")
    storage = make_storage(tmp_path, gcs_bucket, gcs_emulator.url, key_file_path=str(key),
                           retry_timeout=0.5)
    with pytest.raises(StorageUnavailable, match="token endpoint") as e:
        storage.list("Proj")
    assert_one_line(e.value)


def test_adc_without_credentials(tmp_path, monkeypatch):
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(tmp_path / "no-adc.json"))
    monkeypatch.delenv("STORAGE_EMULATOR_HOST", raising=False)
    storage = make_storage(tmp_path, "some-bucket", endpoint=None)
    with pytest.raises(ConfigError) as e:
        storage.list("Proj")
    msg = assert_one_line(e.value)
    assert "no Google credentials found" in msg and "key_file_path" in msg
    assert "gcloud auth application-default login" in msg


def test_bucket_does_not_exist(tmp_path, gcs_emulator, sa_key):
    storage = make_storage(tmp_path, "no-such-bucket-for-resutil", gcs_emulator.url,
                           key_file_path=str(sa_key))
    expected = (f"bucket no-such-bucket-for-resutil does not exist or the service account "
                f"{CLIENT_EMAIL} cannot see it")
    for action in (lambda: storage.list("Proj"), lambda: storage.check("Proj.resutil"),
                   lambda: storage.download("Proj", "a.zip", tmp_path / "x"),
                   lambda: storage.delete("Proj", "a.zip")):
        with pytest.raises(StorageNotFound) as e:
            action()
        assert expected in assert_one_line(e.value)


def test_forbidden(tmp_path, gcs_bucket, proxy, sa_key):
    """A 403 shaped like the real one names the account, the permission and the fix."""
    message = (f"{CLIENT_EMAIL} does not have storage.objects.create access to the Google "
               "Cloud Storage object. Permission 'storage.objects.create' denied on resource "
               "(or it may not exist).")
    proxy.add("fail", times=100, method="POST", path=r"/upload/", status=403,
              body={"error": {"code": 403, "message": message,
                              "errors": [{"message": message, "domain": "global",
                                          "reason": "forbidden"}]}})
    storage = make_storage(tmp_path, gcs_bucket, proxy.url, key_file_path=str(sa_key))
    with pytest.raises(StoragePermission) as e:
        storage.check("Proj.resutil")
    assert (f"service account {CLIENT_EMAIL} lacks storage.objects.create on bucket "
            f"{gcs_bucket}; grant it roles/storage.objectAdmin") in assert_one_line(e.value)
    # the big-file (resumable) path reports the same way
    with pytest.raises(StoragePermission, match="lacks storage.objects.create"):
        storage.upload(big_file(tmp_path / "big.bin", 9), "Proj", "big.zip")


def test_retention_policy_blocks_delete(tmp_path, gcs_bucket, proxy):
    storage = make_storage(tmp_path, gcs_bucket, proxy.url)
    storage.write_bytes("Proj", "a.zip", b"kept")
    message = ("Object 'Proj/a.zip' is subject to bucket's retention policy or object "
               "retention and cannot be deleted or overwritten until 2027-01-01T00:00:00Z")
    proxy.add("fail", times=1, method="DELETE", status=403,
              body={"error": {"code": 403, "message": message,
                              "errors": [{"reason": "retentionPolicyNotMet"}]}})
    with pytest.raises(StoragePermission, match="protected by the bucket's retention policy"):
        storage.delete("Proj", "a.zip")


# -- network faults ----------------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.timeout(40)  # a hang guard: the SDKs' own defaults would wait minutes
def test_network_down_is_reported_quickly(tmp_path):
    url = f"http://127.0.0.1:{closed_port()}"
    storage = make_storage(tmp_path, "bucket", url, retry_timeout=1)
    for action in (lambda: storage.list("Proj"), lambda: storage.check("Proj.resutil"),
                   lambda: storage.upload(big_file(tmp_path / "f.bin", 0.1), "Proj", "a.zip")):
        with pytest.raises(StorageUnavailable) as e:
            action()
        msg = assert_one_line(e.value)
        assert f"cannot reach {url}: connection refused" in msg, msg
        assert "storage_config.endpoint" in msg


def test_5xx_then_success(tmp_path, gcs_bucket, proxy):
    storage = make_storage(tmp_path, gcs_bucket, proxy.url)
    fault = proxy.add("fail", times=2, status=503)
    rec = Recorder()
    src = tmp_path / "small.zip"
    src.write_bytes(b"small archive")
    storage.upload(src, "Proj", "a.zip", rec)
    assert fault.hits == 2
    assert sum("retrying" in m for m in rec.messages) == 2
    fault = proxy.add("fail", times=1, status=500, method="GET")
    assert [o.name for o in storage.list("Proj")] == ["a.zip"]
    fault2 = proxy.add("fail", times=1, status=429, method="GET", path=r"alt=media")
    assert storage.read_bytes("Proj", "a.zip") == b"small archive"
    assert fault.hits == 1 and fault2.hits == 1


def test_5xx_forever_gives_up_in_one_line(tmp_path, gcs_bucket, proxy):
    storage = make_storage(tmp_path, gcs_bucket, proxy.url, retry_timeout=0.5)
    proxy.add("fail", times=10_000, status=503)
    with pytest.raises(StorageUnavailable) as e:
        storage.list("Proj")
    msg = assert_one_line(e.value)
    assert f"gs://{gcs_bucket}: cannot list Proj: HTTP 503" in msg and "gave up after" in msg


def test_resumable_chunk_5xx_resumes(tmp_path, gcs_bucket, proxy, gcs_admin):
    storage = make_storage(tmp_path, gcs_bucket, proxy.url, chunk_size_mb=1)
    src = big_file(tmp_path / "big.bin", 9.5)  # > 8 MiB: the resumable path, 10 chunks
    fault = proxy.add("fail", times=1, method="PUT", path=r"upload_id=", skip=4, status=503)
    rec = Recorder()
    storage.upload(src, "Proj", "big.zip", rec)
    assert fault.hits == 1
    assert rec.total == rec.advanced == src.stat().st_size  # the resent chunk counted once
    assert gcs_admin.bucket(gcs_bucket).blob("Proj/big.zip").download_as_bytes() == \
        src.read_bytes()
    session_starts = [p for m, p, _ in proxy.requests if m == "POST" and "resumable" in p]
    assert len(session_starts) == 1  # resumed the session, did not start over


def test_connection_dropped_mid_upload_then_retried(tmp_path, gcs_bucket, proxy, gcs_admin):
    storage = make_storage(tmp_path, gcs_bucket, proxy.url, chunk_size_mb=1)
    src = big_file(tmp_path / "big.bin", 9.5)
    fault = proxy.add("drop", times=1, method="PUT", path=r"upload_id=", skip=2,
                      after_bytes=300_000)
    rec = Recorder()
    storage.upload(src, "Proj", "big.zip", rec)
    assert fault.hits == 1
    assert any("connection dropped" in m for m in rec.messages), rec.messages
    session_starts = [p for m, p, _ in proxy.requests if m == "POST" and "resumable" in p]
    assert len(session_starts) == 1  # the SDK resent the one chunk, not the whole file
    dest = tmp_path / "back.bin"
    storage.download("Proj", "big.zip", dest)
    assert dest.read_bytes() == src.read_bytes()
    assert [b.name for b in gcs_admin.list_blobs(gcs_bucket, prefix="Proj/")] == ["Proj/big.zip"]


def test_upload_that_never_completes_leaves_nothing(tmp_path, gcs_bucket, proxy, gcs_admin):
    storage = make_storage(tmp_path, gcs_bucket, proxy.url, chunk_size_mb=1, retry_timeout=0.5)
    src = big_file(tmp_path / "big.bin", 9.5)
    proxy.add("drop", times=10_000, method="PUT", path=r"upload_id=", skip=3,
              after_bytes=100_000)
    with pytest.raises(StorageUnavailable) as e:
        storage.upload(src, "Proj", "big.zip")
    assert "cannot upload Proj/big.zip" in assert_one_line(e.value)
    assert storage.list("Proj") == []
    assert storage.stat("Proj", "big.zip") is None
    assert list(gcs_admin.list_blobs(gcs_bucket, prefix="Proj/")) == []


def test_dropped_download_resumes(tmp_path, gcs_bucket, proxy):
    storage = make_storage(tmp_path, gcs_bucket, proxy.url)
    src = big_file(tmp_path / "big.bin", 2)
    storage.upload(src, "Proj", "a.zip")
    fault = proxy.add("fail", times=1, method="GET", path=r"alt=media", status=502)
    rec = Recorder()
    dest = tmp_path / "back.bin"
    storage.download("Proj", "a.zip", dest, rec)
    assert fault.hits == 1
    assert dest.read_bytes() == src.read_bytes()
    assert rec.total == rec.advanced == src.stat().st_size


def test_storage_pickles_for_process_pools(tmp_path, gcs_bucket, gcs_emulator):
    import pickle

    storage = make_storage(tmp_path, gcs_bucket, gcs_emulator.url)
    storage.write_bytes("Proj", "a.zip", b"before")  # the client exists now
    copy = pickle.loads(pickle.dumps(storage))
    assert copy.read_bytes("Proj", "a.zip") == b"before"


# -- uploading while the archive is written ----------------------------------------------------
def _write_slowly(path: Path, data: bytes, piece: int = 256 << 10) -> None:
    with open(path, "wb") as f:
        for k in range(0, len(data), piece):
            f.write(data[k:k + piece])
            f.flush()
            time.sleep(0.005)


def _chunk_puts(proxy) -> int:
    return sum(1 for m, p, _ in proxy.requests if m == "PUT" and "upload_id=" in p)


def test_staged_upload_sends_chunks_while_the_file_is_written(tmp_path, gcs_bucket, proxy, gcs_admin):
    """A push to GCS uploads the archive while it is being built: chunks leave before the
    last byte is written, in one session, and the object is exactly the file."""
    storage = make_storage(tmp_path, gcs_bucket, proxy.url, chunk_size_mb=1)
    data = os.urandom(3 * (1 << 20) + 12345)
    fault = proxy.add("drop", times=1, method="PUT", path=r"upload_id=", skip=1,
                      after_bytes=200_000)  # one chunk is cut: the SDK resends it
    with storage.staged_upload("Proj", "big.zip") as staged:
        _write_slowly(staged.path, data)
        sent_while_writing = _chunk_puts(proxy)
    assert sent_while_writing >= 2, "nothing was uploaded before the file was complete"
    assert fault.hits == 1
    generation = str(gcs_admin.bucket(gcs_bucket).get_blob("Proj/big.zip").generation)
    assert staged.stored.version == generation == storage.stat("Proj", "big.zip").version
    assert gcs_admin.bucket(gcs_bucket).blob("Proj/big.zip").download_as_bytes() == data
    session_starts = [p for m, p, _ in proxy.requests if m == "POST" and "resumable" in p]
    assert len(session_starts) == 1


def test_staged_upload_abandoned_midway_stores_nothing(tmp_path, gcs_bucket, proxy, gcs_admin):
    storage = make_storage(tmp_path, gcs_bucket, proxy.url, chunk_size_mb=1)
    with pytest.raises(RuntimeError, match="build failed"):
        with storage.staged_upload("Proj", "big.zip") as staged:
            _write_slowly(staged.path, os.urandom(5 << 19))
            assert _chunk_puts(proxy) >= 1
            raise RuntimeError("build failed")
    assert list(gcs_admin.list_blobs(gcs_bucket, prefix="Proj/")) == []
    assert storage.stat("Proj", "big.zip") is None


def test_a_small_staged_upload_is_one_request(tmp_path, gcs_bucket, proxy, gcs_admin):
    storage = make_storage(tmp_path, gcs_bucket, proxy.url, chunk_size_mb=1)
    with storage.staged_upload("Proj", "small.zip") as staged:
        staged.path.write_bytes(b"a small archive")
    uploads = [(m, p) for m, p, _ in proxy.requests if "upload" in p]
    assert len(uploads) == 1 and "uploadType=multipart" in uploads[0][1], uploads
    assert gcs_admin.bucket(gcs_bucket).blob("Proj/small.zip").download_as_bytes() == b"a small archive"


# -- exclusive create ----------------------------------------------------------------------------
def test_exclusive_create_whose_answer_was_lost_is_still_ours(tmp_path, gcs_bucket, proxy,
                                                              gcs_admin):
    """The upload is done but its answer is lost: the SDK sends it again (a conditional
    upload cannot create twice) and gets 412; the object holds this caller's data."""
    storage = make_storage(tmp_path, gcs_bucket, proxy.url)
    fault = proxy.add("lose", times=1, method="POST", path=r"ifGenerationMatch=0")
    assert storage.create_exclusive("Proj.resutil", "x.claim", b"run-A")
    assert fault.hits == 1
    sent = [p for m, p, _ in proxy.requests if m == "POST" and "ifGenerationMatch=0" in p]
    assert len(sent) == 2  # the lost one and the SDK's retry
    assert gcs_admin.bucket(gcs_bucket).blob("Proj.resutil/x.claim").download_as_bytes() \
        == b"run-A"
    assert not storage.create_exclusive("Proj.resutil", "x.claim", b"run-B")


def test_emulator_refuses_an_upload_whose_precondition_fails(gcs_bucket, gcs_admin):
    """The test harness's precondition check (tests/servers/gcs_emulator.py) answers as
    Cloud Storage does, for one-request and resumable uploads."""
    from google.api_core.exceptions import PreconditionFailed

    bucket = gcs_admin.bucket(gcs_bucket)
    bucket.blob("o").upload_from_string(b"one", if_generation_match=0)
    generation = bucket.get_blob("o").generation
    with pytest.raises(PreconditionFailed):
        bucket.blob("o").upload_from_string(b"two", if_generation_match=0)
    with pytest.raises(PreconditionFailed):
        bucket.blob("o", chunk_size=256 << 10).upload_from_file(
            io.BytesIO(os.urandom(600_000)), if_generation_match=0)
    with pytest.raises(PreconditionFailed):
        bucket.blob("o").upload_from_string(b"three", if_generation_not_match=generation)
    assert bucket.blob("o").download_as_bytes() == b"one"
    bucket.blob("o").upload_from_string(b"four", if_generation_match=generation)
    assert bucket.blob("o").download_as_bytes() == b"four"


# -- rename: copy, then delete, both conditional -----------------------------------------------
def test_rename_leaves_a_source_uploaded_anew_after_the_copy(tmp_path, gcs_bucket, proxy,
                                                             gcs_admin):
    """Another push replaces the source between the copy and the delete: the delete is
    refused (412) and that push's object stays; the renamed object is what was copied."""
    storage = make_storage(tmp_path, gcs_bucket, proxy.url)
    storage.write_bytes("Proj", "a.zip", b"old")
    bucket = gcs_admin.bucket(gcs_bucket)
    push = proxy.add("call", times=1, method="DELETE", path=r"/o/Proj%2Fa\.zip",
                     fn=lambda: bucket.blob("Proj/a.zip").upload_from_string(b"new push"))
    renamed = storage.rename("Proj", "a.zip", "b.zip")
    assert push.hits == 1
    assert bucket.blob("Proj/a.zip").download_as_bytes() == b"new push"
    assert bucket.blob("Proj/b.zip").download_as_bytes() == b"old"
    assert renamed.version == storage.stat("Proj", "b.zip").version


def test_rename_starts_over_when_the_source_is_replaced_before_the_copy(
        tmp_path, gcs_bucket, proxy, gcs_admin):
    storage = make_storage(tmp_path, gcs_bucket, proxy.url)
    storage.write_bytes("Proj", "a.zip", b"old")
    bucket = gcs_admin.bucket(gcs_bucket)
    push = proxy.add("call", times=1, method="POST", path=r"/rewriteTo/",
                     fn=lambda: bucket.blob("Proj/a.zip").upload_from_string(b"new push"))
    storage.rename("Proj", "a.zip", "b.zip")
    assert push.hits == 1
    assert [o.name for o in storage.list("Proj")] == ["b.zip"]
    assert bucket.blob("Proj/b.zip").download_as_bytes() == b"new push"
