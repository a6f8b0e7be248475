"""The Box backend runs against tests/servers/fake_box.py on 127.0.0.1, through the real SDK
and the real JWT sign-in: a throw-away app whose config.json holds an encrypted private key.
"""

from __future__ import annotations

import json
import uuid

import pytest

from resutil.storage import StorageSettings

JWT_CLIENT_ID = "resutiltestjwtclient"
JWT_SECRET = "jwt-secret"
JWT_KEY_ID = "kid-1"
CCG_CLIENT_ID = "resutiltestccgclient"
CCG_SECRET = "ccg-secret"
ENTERPRISE_ID = "424242"
PASSPHRASE = "correct horse battery staple"
BOX_ENV = ["BOX_CLIENT_ID", "BOX_CLIENT_SECRET", "BOX_ENTERPRISE_ID", "BOX_USER_ID",
           "BOX_DEVELOPER_TOKEN"]


def _require_sdk() -> None:
    pytest.importorskip("box_sdk_gen", reason="boxsdk not installed: pip install 'resutil[box]'")
    pytest.importorskip("jwt", reason="PyJWT is not installed")
    pytest.importorskip("cryptography", reason="cryptography is not installed")


@pytest.fixture(scope="session")
def box_keypair():
    """(encrypted private key PEM, public key PEM) of the throw-away JWT app."""
    _require_sdk()
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(PASSPHRASE.encode()),
    ).decode()
    public = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ).decode()
    return private, public


@pytest.fixture(scope="session")
def box_server(box_keypair):
    """The fake Box API server (one per test session), with a JWT app and a CCG app."""
    from tests.servers.fake_box import FakeBox

    box = FakeBox()
    box.start()
    box.add_jwt_app(JWT_CLIENT_ID, JWT_SECRET, JWT_KEY_ID, box_keypair[1], ENTERPRISE_ID)
    box.add_ccg_app(CCG_CLIENT_ID, CCG_SECRET, ENTERPRISE_ID)
    yield box
    box.stop()


@pytest.fixture
def box_fake(box_server):
    """The fake server, with no faults left over from a previous test."""
    box_server.clear_faults()
    yield box_server
    box_server.clear_faults()
    box_server.read_only.clear()


def write_box_config(path, private_pem, **overrides):
    """A Box JWT config.json as the Developer Console writes it."""
    config = {
        "boxAppSettings": {
            "clientID": JWT_CLIENT_ID,
            "clientSecret": JWT_SECRET,
            "appAuth": {"publicKeyID": JWT_KEY_ID, "privateKey": private_pem,
                        "passphrase": PASSPHRASE},
        },
        "enterpriseID": ENTERPRISE_ID,
    }
    config["boxAppSettings"].update(overrides.pop("app", {}))
    config["boxAppSettings"]["appAuth"].update(overrides.pop("app_auth", {}))
    config.update(overrides)
    path.write_text(json.dumps(config, indent=2))
    return path


@pytest.fixture
def box_settings(box_fake, box_keypair, tmp_path, monkeypatch) -> StorageSettings:
    """A fresh, empty Box folder (the storage root) signed into with the JWT config.json."""
    for key in BOX_ENV:
        monkeypatch.delenv(key, raising=False)
    folder_id = box_fake.create_folder(f"resutil-test-{uuid.uuid4().hex[:8]}")
    key_file = write_box_config(tmp_path / "box_config.json", box_keypair[0])
    return StorageSettings(
        values={"folder_id": folder_id, "key_file_path": str(key_file), "endpoint": box_fake.url},
        storage_type="box", scratch_dir=tmp_path / "scratch", retry_wait=0.01,
    )
