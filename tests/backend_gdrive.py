"""Google Drive against the in-process fake Drive v2 server (tests/servers/fake_drive.py).

The real pydrive2 + oauth2client + google-api-python-client code runs unmodified: a
throw-away service-account key (fresh RSA key, ``token_uri`` pointing at the fake) goes
through key parsing, JWT signing and the token exchange, and the backend reaches the fake
through its own ``endpoint`` setting. Nothing is monkeypatched.

Each test gets a fresh base folder inside a fresh Shared Drive where the service account is
Content manager, as the user documentation asks for.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest

from resutil.storage import StorageSettings

from .servers.fake_drive import FakeDrive


def _require_gdrive() -> None:
    pytest.importorskip("pydrive2", reason="PyDrive2 missing: pip install 'resutil[gdrive]'")
    pytest.importorskip("cryptography", reason="cryptography is needed to make test keys")


@dataclass
class ServiceAccountKey:
    """A generated service-account key: its JSON (as Google issues it) and public numbers."""

    info: dict
    n: int
    e: int

    @property
    def client_email(self) -> str:
        return self.info["client_email"]

    def write(self, path: Path) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.info, indent=2))
        return path


def make_service_account_key(token_uri: str, name: str = "resutil-test") -> ServiceAccountKey:
    """A fresh RSA key in Google's service-account JSON format."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()
    email = f"{name}-{uuid.uuid4().hex[:6]}@resutil-test.iam.gserviceaccount.com"
    info = {
        "type": "service_account",
        "project_id": "resutil-test",
        "private_key_id": uuid.uuid4().hex,
        "private_key": pem,
        "client_email": email,
        "client_id": str(uuid.uuid4().int)[:21],
        "auth_uri": "https://accounts.google.com/o/oauth2/auth",
        "token_uri": token_uri,
        "auth_provider_x509_cert_url": "https://www.googleapis.com/oauth2/v1/certs",
        "client_x509_cert_url": f"https://www.googleapis.com/robot/v1/metadata/x509/{email}",
        "universe_domain": "googleapis.com",
    }
    numbers = key.public_key().public_numbers()
    return ServiceAccountKey(info, numbers.n, numbers.e)


@pytest.fixture(scope="session")
def fake_drive():
    """One fake Drive for the session, on an ephemeral port of 127.0.0.1."""
    _require_gdrive()
    fake = FakeDrive()
    fake.start()
    try:
        yield fake
    finally:
        fake.stop()


@pytest.fixture(scope="session")
def gdrive_key(fake_drive) -> ServiceAccountKey:
    """The session's service-account key, registered with the fake's token endpoint."""
    key = make_service_account_key(fake_drive.token_url)
    fake_drive.register_key(key.client_email, key.n, key.e)
    return key


@pytest.fixture
def gdrive_base_folder(fake_drive) -> str:
    """A fresh base folder in a fresh Shared Drive (the service account: Content manager)."""
    drive_id = fake_drive.create_shared_drive(f"team-{uuid.uuid4().hex[:6]}",
                                              role="fileOrganizer")
    folder = fake_drive.create_folder("resutil", drive_id)
    yield folder
    fake_drive.clear_faults()


def gdrive_settings_for(url: str, key_path: Path, base_folder_id: str, tmp_path: Path,
                        **values) -> StorageSettings:
    """Settings for the Drive API at ``url`` (a fake Drive's, or a dead address)."""
    return StorageSettings(
        values={"base_folder_id": base_folder_id, "key_file_path": str(key_path),
                "endpoint": url, **values},
        storage_type="gdrive", scratch_dir=tmp_path / "scratch", retry_wait=0.01,
    )


@pytest.fixture
def gdrive_settings(tmp_path, fake_drive, gdrive_key, gdrive_base_folder) -> StorageSettings:
    """Settings for a fresh, empty Drive folder reached through the real auth path."""
    key_path = gdrive_key.write(tmp_path / "keys" / "service-account.json")
    return gdrive_settings_for(fake_drive.url, key_path, gdrive_base_folder, tmp_path)
