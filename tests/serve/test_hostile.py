"""Issue 16's hostile probes against the HTTP service: each one ends in one clear status naming the problem,
never a 500 or a traceback."""

from __future__ import annotations

import contextlib
import io
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from PIL import Image

from marginface.serve import create_app

from ..conftest import remount_read_only, tmpfs
from .conftest import LOCAL, grey_png, upload

COLIN = "Colin_Powell"


@pytest.fixture
def client(gallery_path, recognizer):
    with TestClient(create_app(gallery_path, recognizer=recognizer), base_url=LOCAL,
                    raise_server_exceptions=False) as test_client:
        yield test_client


@pytest.mark.parametrize("size", [(1, 20_000), (20_000, 1)])
def test_an_elongated_image_is_400_naming_its_size_on_every_route(client, lfw, size):
    line = ("line.png", grey_png(*size), "image/png")
    face = upload(lfw(COLIN, 1))
    calls = [("/v1/detect", {"image": line}), ("/v1/embed", {"image": line}), ("/v1/identify", {"image": line}),
             ("/v1/verify", {"image1": face, "image2": line}), ("/v1/verify", {"image1": line, "image2": face})]
    for url, files in calls:
        answer = client.post(url, files=files)
        assert answer.status_code == 400, (url, answer.text)
        assert f"line.png: image of {size[0]}x{size[1]} pixels is too elongated" in answer.json()["detail"]
    enrol = client.post("/v1/identities", data={"name": "Line"}, files=[("images", face), ("images", line)])
    assert enrol.status_code == 400 and "too elongated" in enrol.json()["detail"]
    assert client.get("/v1/identities").json()["count"] == 0


def _fill(folder: Path) -> Path:
    filler = folder / "filler"
    with filler.open("wb") as out:
        with contextlib.suppress(OSError):
            while True:
                out.write(b"\0" * 65536)
                out.flush()
    return filler


def test_a_full_disk_is_507_with_the_reason_and_healthz_says_the_gallery_cannot_be_written(
        tmp_path, recognizer, shared_data, lfw):
    """The probe: with the disk full, 54 enrolments got 500 while /healthz said ok."""
    from marginface.infer.gallery import Gallery

    from .conftest import DETECTOR, MODEL

    with tmpfs(tmp_path / "disk", "4m") as disk:
        path = disk / "people.db"
        Gallery.create(path, recognizer.fingerprint, recognizer.threshold, model=str(shared_data / MODEL),
                       detector=str(shared_data / DETECTOR)).close()
        with TestClient(create_app(path, recognizer=recognizer), base_url=LOCAL,
                        raise_server_exceptions=False) as client:
            assert client.post("/v1/identities", data={"name": "Colin"},
                               files=[("images", upload(lfw(COLIN, 1)))]).status_code == 201
            assert client.get("/healthz").json()["status"] == "ok"
            filler = _fill(disk)
            photos = [("images", upload(lfw("George_W_Bush", i))) for i in range(1, 9)]
            refused = client.post("/v1/identities", data={"name": "Bush"}, files=photos)
            assert refused.status_code == 507, refused.text
            assert f"{path}: cannot write the gallery: the disk holding it is full" in refused.json()["detail"]
            health = client.get("/healthz").json()
            assert health["status"] == "degraded" and health["writable"] is False
            assert "full" in health["write_problem"]
            known = client.post("/v1/identify", files={"image": upload(lfw(COLIN, 2))})
            assert known.status_code == 200 and known.json()["faces"][0]["name"] == "Colin"  # reads still work
            filler.unlink()
            assert client.post("/v1/identities", data={"name": "Bush"}, files=photos).status_code == 201
            assert client.get("/healthz").json()["writable"] is True


def _raw_request(url: str, head: str, body: bytes, wait_s: float) -> tuple[bytes, float]:
    """Send `head` and a partial `body` over a raw socket; (everything answered until close or `wait_s`, seconds)."""
    import socket
    import time
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    start = time.monotonic()
    with socket.create_connection((parts.hostname, parts.port), timeout=wait_s) as sock:
        sock.sendall(head.encode("latin-1") + body)
        answer = b""
        with contextlib.suppress(TimeoutError, ConnectionResetError):
            while chunk := sock.recv(65536):
                answer += chunk
    return answer, time.monotonic() - start


def test_the_key_is_checked_before_the_body_and_a_body_that_never_arrives_times_out(gallery_path, recognizer):
    """The probes: an unauthenticated 10 MiB body was read in full before the 401, and a request declaring more
    body than it sends held the connection with no timeout."""
    from .conftest import running_server

    app = create_app(gallery_path, api_key="k3y", recognizer=recognizer, body_timeout_s=1.0)
    declared = 5 * 1024 * 1024
    head = ("POST /v1/identify HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: multipart/form-data; boundary=b\r\n"
            f"Content-Length: {declared}\r\n{{key}}\r\n")
    with running_server(app) as url:
        answer, seconds = _raw_request(url, head.format(key=""), b"--b\r\n", wait_s=10)
        assert answer.startswith(b"HTTP/1.1 401") and seconds < 5, (answer[:200], seconds)
        assert b"connection: close" in answer.lower()
        answer, seconds = _raw_request(url, head.format(key="X-API-Key: k3y\r\n"), b"--b\r\n", wait_s=20)
        assert answer.startswith(b"HTTP/1.1 408"), answer[:300]
        assert 0.9 < seconds < 10 and b"got 5 bytes of the 5242880 declared" in answer


def _multipart(name: bytes, photo: bytes) -> tuple[bytes, dict]:
    body = (b"--zz\r\nContent-Disposition: form-data; name=\"name\"\r\n\r\n" + name + b"\r\n"
            b"--zz\r\nContent-Disposition: form-data; name=\"images\"; filename=\"a.jpg\"\r\n"
            b"Content-Type: image/jpeg\r\n\r\n" + photo + b"\r\n--zz--\r\n")
    return body, {"content-type": "multipart/form-data; boundary=zz"}


def test_names_are_normalised_checked_and_invalid_utf8_is_422(client, lfw):
    """The probes: invalid UTF-8 in a name became Latin-1 mojibake; full-width or Cyrillic 'unknown', '.' and '..'
    were enrolled; 'Zoé' typed two ways was two people that neither spelling could delete."""
    photo = lfw(COLIN, 1).read_bytes()
    body, headers = _multipart(b"Caf\xe9", photo)  # Latin-1 bytes, not UTF-8
    broken = client.post("/v1/identities", content=body, headers=headers)
    assert broken.status_code == 422 and "text field 'name' is not valid utf-8" in broken.json()["detail"]
    for name in ("ｕｎｋｎｏｗｎ", "unkn\u043ewn", ".", ".."):
        refused = client.post("/v1/identities", data={"name": name}, files=[("images", upload(lfw(COLIN, 1)))])
        assert refused.status_code == 422, (name, refused.text)
    assert client.get("/v1/identities").json()["count"] == 0
    assert client.delete("/v1/identities/%FF").status_code == 422
    enrolled = client.post("/v1/identities", data={"name": " Zoe\u0301 "}, files=[("images", upload(lfw(COLIN, 1)))])
    assert enrolled.status_code == 201 and enrolled.json()["name"] == "Zo\u00e9"
    assert client.delete("/v1/identities/Zo%C3%A9").json() == {"removed": "Zo\u00e9"}
    assert client.get("/v1/identities").json()["count"] == 0


def test_the_same_photo_under_two_names_is_409_unless_allowed(client, lfw):
    """The probe: one photo enrolled as two people; identify then answered whichever came first."""
    assert client.post("/v1/identities", data={"name": "Colin"},
                       files=[("images", upload(lfw(COLIN, 1)))]).status_code == 201
    twice = client.post("/v1/identities", data={"name": "Mallory"},
                        files=[("images", upload(lfw(COLIN, 2))), ("images", upload(lfw(COLIN, 1)))])
    assert twice.status_code == 409
    assert "Colin_Powell_0001.jpg" in twice.json()["detail"] and "already enrolled as 'Colin'" in twice.json()["detail"]
    assert [p["name"] for p in client.get("/v1/identities").json()["identities"]] == ["Colin"]
    allowed = client.post("/v1/identities?allow_shared_photo=true", data={"name": "Mallory"},
                          files=[("images", upload(lfw(COLIN, 1)))])
    assert allowed.status_code == 201 and allowed.json()["added"] == 1


def test_a_damaged_header_is_400_as_documented_and_a_non_image_415(client):
    buffer = io.BytesIO()
    Image.new("RGB", (64, 64), (10, 200, 30)).save(buffer, format="PNG")
    png = buffer.getvalue()
    damaged = client.post("/v1/detect", files={"image": ("x.png", png[:16] + b"\xff" * 16 + png[32:], "image/png")})
    assert damaged.status_code == 400 and "x.png: damaged PNG image" in damaged.json()["detail"]
    text = client.post("/v1/detect", files={"image": ("notes.txt", b"plain words", "text/plain")})
    assert text.status_code == 415


def test_a_gallery_on_a_read_only_mount_is_listed_and_searched_and_changes_are_503(tmp_path, recognizer, shared_data,
                                                                                   lfw):
    """The probe: a gallery on a read-only mount could not even be listed ('cannot open gallery for writing')."""
    from marginface.infer.gallery import Gallery

    from .conftest import DETECTOR, MODEL

    with tmpfs(tmp_path / "disk", "4m") as disk:
        path = disk / "people.db"
        with Gallery.create(path, recognizer.fingerprint, recognizer.threshold, model=str(shared_data / MODEL),
                            detector=str(shared_data / DETECTOR)) as gallery:
            gallery.enroll("Colin", [(recognizer.main_face(lfw(COLIN, 1)), "c1")], recognizer.fingerprint)
        remount_read_only(disk)
        with TestClient(create_app(path, recognizer=recognizer), base_url=LOCAL,
                        raise_server_exceptions=False) as client:
            assert client.get("/v1/identities").json()["identities"][0]["name"] == "Colin"
            known = client.post("/v1/identify", files={"image": upload(lfw(COLIN, 2))}).json()
            assert known["faces"][0]["name"] == "Colin"
            refused = client.post("/v1/identities", data={"name": "Bush"},
                                  files=[("images", upload(lfw("George_W_Bush", 1)))])
            assert refused.status_code == 503 and "is open read-only" in refused.json()["detail"]
            assert "read-only mount" in refused.json()["detail"]
            assert client.delete("/v1/identities/Colin").status_code == 503
            health = client.get("/healthz").json()
            assert health["status"] == "degraded" and "read-only" in health["write_problem"]
