"""The service against a gallery that other processes change underneath it: damaged templates, CLI changes
(enrol, remove, rename) seen before every answer."""

from __future__ import annotations

import sqlite3

import pytest
from fastapi.testclient import TestClient

from marginface.serve import create_app

from .conftest import upload

COLIN, BLAIR = "Colin_Powell", "Tony_Blair"


@pytest.fixture
def client(gallery_path, recognizer):
    with TestClient(create_app(gallery_path, recognizer=recognizer), base_url="http://127.0.0.1:8000") as test_client:
        yield test_client


def test_a_damaged_template_is_a_503_naming_it_never_a_decision(client, gallery_path, lfw):
    assert client.post("/v1/identities", data={"name": "Colin"},
                       files=[("images", upload(lfw(COLIN, 1)))]).status_code == 201
    db = sqlite3.connect(gallery_path, isolation_level=None)  # another process writes a flipped bit
    blob = bytearray(db.execute("SELECT embedding FROM templates WHERE id = 1").fetchone()[0])
    blob[0] ^= 1
    db.execute("UPDATE templates SET embedding = ? WHERE id = 1", (bytes(blob),))
    db.close()
    answer = client.post("/v1/identify", files={"image": upload(lfw(BLAIR, 1))})
    assert answer.status_code == 503, answer.text
    assert "template 1 of 'Colin': checksum mismatch" in answer.json()["detail"]
    assert str(gallery_path) in answer.json()["detail"]


def test_changes_a_cli_committed_are_seen_before_every_answer(client, gallery_path, lfw, capsys):
    """The probe: after a CLI enroll, DELETE answered 404 for a listed person; after a CLI rename, 500."""
    from marginface.cli import main

    assert client.get("/v1/identities").json()["count"] == 0  # the service has loaded the (empty) gallery
    assert main(["enroll", str(gallery_path), "--name", "Colin", str(lfw(COLIN, 1))]) == 0
    assert [p["name"] for p in client.get("/v1/identities").json()["identities"]] == ["Colin"]
    answer = client.delete("/v1/identities/Colin")
    assert answer.status_code == 200, answer.text
    assert main(["enroll", str(gallery_path), "--name", "Tony", str(lfw(BLAIR, 1))]) == 0
    assert client.post("/v1/identify", files={"image": upload(lfw(BLAIR, 2))}).json()["faces"][0]["name"] == "Tony"
    assert main(["gallery", "rename", str(gallery_path), "Tony", "Tony Blair"]) == 0
    gone = client.delete("/v1/identities/Tony")
    assert gone.status_code == 404 and "no identity named 'Tony'" in gone.json()["detail"]
    assert client.post("/v1/identify",
                       files={"image": upload(lfw(BLAIR, 2))}).json()["faces"][0]["name"] == "Tony Blair"
    assert main(["gallery", "remove", str(gallery_path), "Tony Blair"]) == 0
    assert client.delete("/v1/identities/Tony%20Blair").status_code == 404
    assert client.post("/v1/identities", data={"name": "Tony Blair"},
                       files=[("images", upload(lfw(BLAIR, 1)))]).json() == {"name": "Tony Blair", "added": 1,
                                                                            "duplicates": 0, "skipped": []}
    assert client.get("/healthz").json()["templates"] == 1


@pytest.mark.parametrize("removed", ["people.db-wal", "people.db"])
def test_a_removed_gallery_file_or_log_is_a_503_never_an_acknowledged_change(client, gallery_path, lfw, removed):
    """The probes: after the -wal (or the gallery file) was deleted, enrol answered 201 and delete 200, and
    kill -9 then lost both (the deleted person came back)."""
    assert client.post("/v1/identities", data={"name": "Colin"},
                       files=[("images", upload(lfw(COLIN, 1)))]).status_code == 201
    (gallery_path.parent / removed).unlink()
    enrol = client.post("/v1/identities", data={"name": "Tony"}, files=[("images", upload(lfw(BLAIR, 1)))])
    assert enrol.status_code == 503 and f"{gallery_path.parent / removed} was removed" in enrol.json()["detail"]
    delete = client.delete("/v1/identities/Colin")
    assert delete.status_code == 503 and "changes made now would be lost" in delete.json()["detail"]
    health = client.get("/healthz")
    assert health.status_code == 503 and "was removed" in health.json()["detail"]
