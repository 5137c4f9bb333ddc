"""The service against a gallery that other processes change underneath it: damaged templates, CLI changes
(enrol, remove, rename) seen before every answer."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from marginface.serve import create_app

COLIN, BLAIR = "Colin_Powell", "Tony_Blair"


def _file(path: Path) -> tuple[str, bytes, str]:
    return path.name, path.read_bytes(), "image/jpeg"


@pytest.fixture
def client(gallery_path, recognizer):
    with TestClient(create_app(gallery_path, recognizer=recognizer), base_url="http://127.0.0.1:8000") as test_client:
        yield test_client


def test_a_damaged_template_is_a_503_naming_it_never_a_decision(client, gallery_path, lfw):
    assert client.post("/v1/identities", data={"name": "Colin"},
                       files=[("images", _file(lfw(COLIN, 1)))]).status_code == 201
    db = sqlite3.connect(gallery_path, isolation_level=None)  # another process writes a flipped bit
    blob = bytearray(db.execute("SELECT embedding FROM templates WHERE id = 1").fetchone()[0])
    blob[0] ^= 1
    db.execute("UPDATE templates SET embedding = ? WHERE id = 1", (bytes(blob),))
    db.close()
    answer = client.post("/v1/identify", files={"image": _file(lfw(BLAIR, 1))})
    assert answer.status_code == 503, answer.text
    assert "template 1 of 'Colin': checksum mismatch" in answer.json()["detail"]
    assert str(gallery_path) in answer.json()["detail"]
