"""Google Cloud Storage against gcp-storage-emulator, started in-process on 127.0.0.1.

The real google-cloud-storage SDK talks HTTP to the emulator; nothing is mocked. Each test
gets a fresh bucket, so tests never see each other's objects. The emulator's upload handlers
are wrapped to honour ``ifGenerationMatch`` as Cloud Storage does (it ignores it; see
tests/servers/gcs_emulator.py).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

import pytest

from resutil.storage import StorageSettings


@dataclass
class EmulatorInfo:
    url: str
    server: object


def _require_gcs() -> None:
    pytest.importorskip("google.cloud.storage", reason="google-cloud-storage is not installed")
    pytest.importorskip("gcp_storage_emulator.server",
                        reason="gcp-storage-emulator is not installed")


@pytest.fixture(scope="session")
def gcs_emulator():
    """One in-memory emulator for the session, on an ephemeral port."""
    _require_gcs()
    from gcp_storage_emulator.server import create_server

    from tests.servers.gcs_emulator import honour_preconditions

    honour_preconditions()
    server = create_server("127.0.0.1", 0, in_memory=True)
    server.start()
    httpd = server._api._httpd  # the emulator has no public accessor
    # It serves one request at a time with http.server's listen backlog of 5: more clients
    # connecting at once (threads in a test) lose SYNs and wait out a 1 s retransmit.
    httpd.socket.listen(64)
    port = httpd.server_address[1]
    try:
        yield EmulatorInfo(url=f"http://127.0.0.1:{port}", server=server)
    finally:
        server.stop()


@pytest.fixture(scope="session")
def gcs_admin(gcs_emulator):
    """A raw SDK client on the emulator, for creating buckets and inspecting objects."""
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import storage

    return storage.Client(
        project="resutil-test", credentials=AnonymousCredentials(),
        client_options={"api_endpoint": gcs_emulator.url},
    )


@pytest.fixture
def gcs_bucket(gcs_admin) -> str:
    """A fresh, empty bucket name on the emulator."""
    name = f"resutil-test-{uuid.uuid4().hex[:12]}"
    gcs_admin.create_bucket(name)
    return name


@pytest.fixture
def gcs_settings(tmp_path, gcs_emulator, gcs_bucket) -> StorageSettings:
    return StorageSettings(
        values={"bucket_name": gcs_bucket, "endpoint": gcs_emulator.url},
        storage_type="gcs", scratch_dir=tmp_path / "scratch", retry_wait=0.01,
    )
