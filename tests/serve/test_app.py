"""The HTTP API with the real YuNet + MobileFaceNet against a fresh gallery: auth, limits, bad uploads, no face,
detect / embed / verify, enrol -> identify -> delete, concurrent enrol + identify, and a real uvicorn."""

from __future__ import annotations

import io
import struct
import tempfile
import zlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from marginface.serve import create_app

from .conftest import LOCAL, THRESHOLD, running_server, upload

KEY = "test-key-0123"
COLIN, BUSH, BLAIR = "Colin_Powell", "George_W_Bush", "Tony_Blair"


def _png(width: int, height: int, pixels: np.ndarray | None = None) -> bytes:
    buffer = io.BytesIO()
    image = Image.fromarray(pixels) if pixels is not None else Image.new("RGB", (width, height), (128, 128, 128))
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def _bomb_png(width: int = 30_000, height: int = 30_000) -> bytes:
    """A tiny PNG whose header claims width × height 1-bit pixels: a decompression bomb if decoded."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    rows = zlib.compress(b"\x00" * ((width + 7) // 8 + 1) * 64, 9)  # the first 64 rows; the rest never arrive
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0))
            + chunk(b"IDAT", rows) + chunk(b"IEND", b""))


@pytest.fixture
def client(gallery_path, recognizer):
    with TestClient(create_app(gallery_path, recognizer=recognizer), base_url=LOCAL) as test_client:
        yield test_client


def _enrol(client: TestClient, name: str, *paths: Path, **kwargs) -> httpx.Response:
    return client.post("/v1/identities", data={"name": name}, files=[("images", upload(p)) for p in paths], **kwargs)


def test_api_key_guards_every_route_in_either_header(gallery_path, recognizer, lfw):
    with TestClient(create_app(gallery_path, api_key=KEY, recognizer=recognizer)) as client:
        photo = {"image": upload(lfw(COLIN, 1))}
        calls = [("GET", "/healthz", {}), ("GET", "/v1/identities", {}), ("POST", "/v1/identify", {"files": photo}),
                 ("POST", "/v1/detect", {"files": photo}), ("POST", "/v1/embed", {"files": photo}),
                 ("POST", "/v1/verify", {"files": {"image1": upload(lfw(COLIN, 1)), "image2": upload(lfw(COLIN, 2))}}),
                 ("POST", "/v1/identities", {"data": {"name": "x"}, "files": [("images", upload(lfw(COLIN, 1)))]}),
                 ("DELETE", "/v1/identities/x", {})]
        for method, url, kwargs in calls:
            missing = client.request(method, url, **kwargs)
            assert missing.status_code == 401, (method, url, missing.text)
            assert "missing API key" in missing.json()["detail"]
            wrong = client.request(method, url, headers={"X-API-Key": "wrong"}, **kwargs)
            assert wrong.status_code == 401 and "wrong API key" in wrong.json()["detail"]
        assert client.get("/healthz", headers={"X-API-Key": KEY}).status_code == 200
        assert client.get("/healthz", headers={"Authorization": f"Bearer {KEY}"}).status_code == 200
        answer = client.post("/v1/identify", files={"image": upload(lfw(COLIN, 1))},
                             headers={"Authorization": f"Bearer {KEY}"})
        assert answer.status_code == 200, answer.text
        page = client.get("/")  # static page: no data in it; it asks for the key itself
        assert page.status_code == 200 and "api-key" in page.text


def test_upload_over_the_limit_is_413(gallery_path, recognizer):
    noise = np.random.default_rng(0).integers(0, 256, (400, 400, 3), dtype=np.uint8)
    big = _png(400, 400, noise)
    assert len(big) > 100 * 1024
    with TestClient(create_app(gallery_path, max_upload_mb=0.1, recognizer=recognizer), base_url=LOCAL) as client:
        response = client.post("/v1/detect", files={"image": ("noise.png", big, "image/png")})
        assert response.status_code == 413
        assert "limit" in response.json()["detail"]

        def stream():  # no Content-Length: the body is counted as it arrives
            for start in range(0, len(big), 16384):
                yield big[start:start + 16384]

        chunked = client.post("/v1/detect", content=stream(),
                              headers={"content-type": "multipart/form-data; boundary=xyz"})
        assert chunked.status_code == 413


def test_bad_uploads_name_the_problem(client, tmp_path):
    text = client.post("/v1/detect", files={"image": ("notes.txt", b"hello, not a photo", "text/plain")})
    assert text.status_code == 415
    assert "notes.txt" in text.json()["detail"] and "not an image" in text.json()["detail"]

    jpeg = io.BytesIO()
    Image.new("RGB", (200, 200), (90, 120, 30)).save(jpeg, format="JPEG")
    truncated = client.post("/v1/detect", files={"image": ("cut.jpg", jpeg.getvalue()[:200], "image/jpeg")})
    assert truncated.status_code == 400 and "cut.jpg" in truncated.json()["detail"]

    bomb = client.post("/v1/identify", files={"image": ("bomb.png", _bomb_png(), "image/png")})
    assert bomb.status_code == 400
    detail = bomb.json()["detail"]
    assert detail.startswith("bomb.png: decompression bomb refused") and "900000000 pixels" in detail

    empty = client.post("/v1/detect", files={"image": ("empty.jpg", b"", "image/jpeg")})
    assert empty.status_code == 400 and "empty" in empty.json()["detail"]

    missing = client.post("/v1/identify", files={"photo": ("x.jpg", jpeg.getvalue(), "image/jpeg")})
    assert missing.status_code == 422 and "'image'" in missing.json()["detail"]


def test_uploads_stay_in_memory(client, monkeypatch):
    """A 1.7 MB photo (beyond Starlette's 1 MiB spooling threshold) is parsed without any temporary file."""
    def no_disk(*args, **kwargs):
        raise AssertionError("an upload was about to be written to a temporary file")

    monkeypatch.setattr(tempfile, "TemporaryFile", no_disk)
    noise = np.random.default_rng(1).integers(0, 256, (700, 800, 3), dtype=np.uint8)
    photo = _png(800, 700, noise)
    assert len(photo) > 1024 * 1024
    response = client.post("/v1/detect", files={"image": ("noise.png", photo, "image/png")})
    assert response.status_code == 200, response.text
    assert response.json()["image"]["width"] == 800


def test_body_that_is_not_multipart(gallery_path, recognizer):
    with TestClient(create_app(gallery_path, api_key=KEY, recognizer=recognizer)) as client:
        assert client.post("/v1/identify", json={"image": "x"}).status_code == 401  # the key is checked first
        response = client.post("/v1/identify", json={"image": "x"}, headers={"X-API-Key": KEY})
        assert response.status_code == 415 and "multipart/form-data" in response.json()["detail"]
        broken = client.post("/v1/identify", content=b"--zz\r\nnot a part", headers={
            "X-API-Key": KEY, "content-type": "multipart/form-data; boundary=zz"})
        assert broken.status_code in (400, 422), broken.text


def test_photo_without_a_face_is_422(client):
    grey = _png(240, 240)
    for url in ("/v1/identify", "/v1/embed"):
        response = client.post(url, files={"image": ("wall.png", grey, "image/png")})
        assert response.status_code == 422, url
        assert "wall.png" in response.json()["detail"] and "no face" in response.json()["detail"]
    detected = client.post("/v1/detect", files={"image": ("wall.png", grey, "image/png")})
    assert detected.status_code == 200 and detected.json()["faces"] == []


def test_detect_embed_verify_on_lfw(client, lfw):
    detected = client.post("/v1/detect", files={"image": upload(lfw(COLIN, 1))}).json()
    assert detected["image"] == {"name": "Colin_Powell_0001.jpg", "width": 250, "height": 250}
    x, y, w, h = detected["faces"][0]["box"]
    assert 50 < x + w / 2 < 200 and 50 < y + h / 2 < 200 and w > 50  # LFW is centred on the face
    assert "embedding" not in detected["faces"][0]

    embedded = client.post("/v1/embed", files={"image": upload(lfw(COLIN, 1))}).json()
    vector = np.asarray(embedded["faces"][0]["embedding"])
    assert vector.shape == (128,) and abs(np.linalg.norm(vector) - 1) < 1e-4
    assert embedded["model"]

    same = client.post("/v1/verify", files={"image1": upload(lfw(COLIN, 1)), "image2": upload(lfw(COLIN, 2))}).json()
    other = client.post("/v1/verify", files={"image1": upload(lfw(COLIN, 1)), "image2": upload(lfw(BUSH, 1))}).json()
    assert same["same"] is True and other["same"] is False
    assert same["score"] > THRESHOLD > other["score"]
    assert same["threshold"] == {"value": THRESHOLD, "source": "fixed"}


def test_enrol_identify_delete(client, lfw):
    enrolled = _enrol(client, "Colin Powell", lfw(COLIN, 1), lfw(COLIN, 2))
    assert enrolled.status_code == 201, enrolled.text
    assert enrolled.json() == {"name": "Colin Powell", "added": 2, "duplicates": 0, "skipped": []}
    again = _enrol(client, "Colin Powell", lfw(COLIN, 2))
    # the same photo hash: no new template
    assert again.json() == {"name": "Colin Powell", "added": 0, "duplicates": 1, "skipped": []}

    listed = client.get("/v1/identities").json()
    assert listed["count"] == 1
    assert listed["identities"][0]["name"] == "Colin Powell" and listed["identities"][0]["templates"] == 2

    known = client.post("/v1/identify", files={"image": upload(lfw(COLIN, 3))}).json()["faces"][0]
    assert known["name"] == "Colin Powell" and known["score"] >= THRESHOLD
    assert known["threshold"] == {"value": THRESHOLD, "source": "fixed"}
    stranger = client.post("/v1/identify", files={"image": upload(lfw(BUSH, 1))}).json()["faces"][0]
    assert stranger["name"] == "unknown" and stranger["score"] < THRESHOLD

    health = client.get("/healthz").json()
    assert health["identities"] == 1 and health["templates"] == 2 and health["threshold"]["source"] == "fixed"

    assert client.delete("/v1/identities/Colin Powell").json() == {"removed": "Colin Powell"}
    assert client.get("/v1/identities").json()["count"] == 0
    gone = client.post("/v1/identify", files={"image": upload(lfw(COLIN, 3))}).json()["faces"][0]
    assert gone["name"] == "unknown"
    missing = client.delete("/v1/identities/Colin Powell")
    assert missing.status_code == 404 and "Colin Powell" in missing.json()["detail"]

    assert _enrol(client, "AC/DC", lfw(COLIN, 1)).status_code == 201  # a name with a slash can be deleted too
    assert client.delete("/v1/identities/AC%2FDC").json() == {"removed": "AC/DC"}


def test_enrolment_skips_a_faceless_photo_and_enrols_nothing_when_no_photo_has_a_face(client, lfw, tmp_path):
    """The enrolment policy (docs/recognition.md), the same as the CLI's: a photo without a face is skipped and
    listed; a person none of whose photos shows a face is not enrolled (422)."""
    wall = tmp_path / "wall.png"
    wall.write_bytes(_png(200, 200))
    only_wall = _enrol(client, "Colin", wall)
    assert only_wall.status_code == 422 and "wall.png: no face found" in only_wall.json()["detail"]
    assert client.get("/v1/identities").json()["count"] == 0
    response = _enrol(client, "Colin", lfw(COLIN, 1), wall)
    assert response.status_code == 201, response.text
    assert response.json() == {"name": "Colin", "added": 1, "duplicates": 0,
                               "skipped": [{"photo": "wall.png", "reason": "no face found"}]}
    assert [(p["name"], p["templates"]) for p in client.get("/v1/identities").json()["identities"]] == [("Colin", 1)]
    assert client.delete("/v1/identities/Colin").status_code == 200
    blank = client.post("/v1/identities", data={"name": "   "}, files=[("images", upload(lfw(COLIN, 1)))])
    assert blank.status_code == 422 and "must not be empty" in blank.json()["detail"]
    for bad, why in [("a\tb", "control characters"), ("Unknown", "matches nobody"), ("x" * 201, "at most 200")]:
        refused = client.post("/v1/identities", data={"name": bad}, files=[("images", upload(lfw(COLIN, 1)))])
        assert refused.status_code == 422 and why in refused.json()["detail"], (bad, refused.text)
    assert client.get("/v1/identities").json()["count"] == 0


def test_concurrent_enrol_and_identify(client, lfw):
    """Enrolments of new people and identifications of an enrolled one from 4 threads: every request succeeds,
    the enrolled person is always recognised, and every enrolment is in the gallery afterwards."""
    assert _enrol(client, "Colin", lfw(COLIN, 1)).status_code == 201
    people = ["George_W_Bush", "Tony_Blair", "Gerhard_Schroeder", "Ariel_Sharon", "Donald_Rumsfeld", "Hugo_Chavez"]

    def enrol(person: str) -> int:
        return _enrol(client, person, lfw(person, 1)).status_code

    photos = []  # three photos at three sizes, so detections with different input sizes overlap in time
    for index, side in zip((2, 3, 4), (250, 330, 410), strict=True):
        buffer = io.BytesIO()
        Image.open(lfw(COLIN, index)).resize((side, side)).save(buffer, format="JPEG", quality=95)
        photos.append((f"colin_{side}.jpg", buffer.getvalue(), "image/jpeg"))

    def identify(index: int) -> str:
        response = client.post("/v1/identify", files={"image": photos[index % 3]})
        assert response.status_code == 200, response.text
        return response.json()["faces"][0]["name"]

    with ThreadPoolExecutor(4) as pool:
        enrolments = [pool.submit(enrol, person) for person in people]
        identifications = [pool.submit(identify, i) for i in range(18)]
        assert [f.result() for f in enrolments] == [201] * len(people)
        assert [f.result() for f in identifications] == ["Colin"] * 18
    listed = {item["name"]: item["templates"] for item in client.get("/v1/identities").json()["identities"]}
    assert listed == {"Colin": 1, **{person: 1 for person in people}}
    blair = client.post("/v1/identify", files={"image": upload(lfw(BLAIR, 2))}).json()["faces"][0]
    assert blair["name"] == "Tony_Blair"


def test_real_uvicorn_on_a_free_loopback_port(gallery_path, recognizer, lfw):
    app = create_app(gallery_path, api_key=KEY, recognizer=recognizer)
    with running_server(app) as url, httpx.Client(base_url=url, timeout=30) as http:
        assert http.get("/healthz").status_code == 401
        headers = {"X-API-Key": KEY}
        assert http.get("/healthz", headers=headers).json()["status"] == "ok"
        with lfw(COLIN, 1).open("rb") as photo:
            enrolled = http.post("/v1/identities", data={"name": "Colin"}, files={"images": photo}, headers=headers)
        assert enrolled.status_code == 201
        with lfw(COLIN, 4).open("rb") as photo:
            answer = http.post("/v1/identify", files={"image": photo}, headers=headers).json()
        assert answer["faces"][0]["name"] == "Colin"
        assert http.get("/openapi.json").json()["paths"].keys() >= {"/v1/identify", "/v1/identities", "/healthz"}
        page = http.get("/static/app.js")
        assert page.status_code == 200 and "v1/identify" in page.text


def test_cross_site_writes_and_dns_rebinding_are_refused_without_a_key(client, lfw):
    """The probes: a CORS-simple multipart POST from http://evil.example enrolled a person (201), and any Host
    was served, so a DNS-rebinding page could read the gallery and embed photos."""
    evil = {"Origin": "http://evil.example"}
    forged = _enrol(client, "Mallory", lfw(COLIN, 1), headers=evil)
    assert forged.status_code == 403 and "cross-site request refused" in forged.json()["detail"]
    assert client.get("/v1/identities").json()["count"] == 0  # nothing enrolled
    assert _enrol(client, "Colin", lfw(COLIN, 1), headers={"Origin": LOCAL}).status_code == 201  # the page itself
    assert client.delete("/v1/identities/Colin", headers={"Origin": "null"}).status_code == 403
    assert client.delete("/v1/identities/Colin", headers={"Origin": "http://127.0.0.1:3000"}).status_code == 403
    rebound = {"Host": "evil.example:8000"}
    for method, url, kwargs in [("GET", "/v1/identities", {}), ("GET", "/healthz", {}),
                                ("POST", "/v1/embed", {"files": {"image": upload(lfw(COLIN, 2))}})]:
        answer = client.request(method, url, headers=rebound, **kwargs)
        assert answer.status_code == 400 and "is not served" in answer.json()["detail"], (method, url)
    for host in ("localhost:8000", "127.0.0.1", "[::1]:8000", "LOCALHOST"):
        assert client.get("/v1/identities", headers={"Host": host}).json()["count"] == 1
    assert client.delete("/v1/identities/Colin").status_code == 200  # no Origin (curl, scripts): admitted


def test_with_a_key_any_host_is_served_but_the_key_and_the_origin_rule_still_hold(gallery_path, recognizer, lfw):
    with TestClient(create_app(gallery_path, api_key=KEY, recognizer=recognizer),
                    base_url="http://faces.example.org") as client:
        assert client.get("/v1/identities").status_code == 401
        assert client.get("/v1/identities", headers={"X-API-Key": KEY}).status_code == 200
        evil = {"Origin": "http://evil.example", "X-API-Key": KEY}
        assert _enrol(client, "Colin", lfw(COLIN, 1), headers=evil).status_code == 403
        same = {"Origin": "http://faces.example.org", "X-API-Key": KEY}
        assert _enrol(client, "Colin", lfw(COLIN, 1), headers=same).status_code == 201
        assert _enrol(client, "Colin", lfw(COLIN, 2), headers={"Origin": "http://faces.example.org"}).status_code == 401
