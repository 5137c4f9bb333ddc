"""Issue 16's hostile probes against the HTTP service: each one ends in one clear status naming the problem,
never a 500 or a traceback."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from PIL import Image

from marginface.serve import create_app

LOCAL = "http://127.0.0.1:8000"
COLIN = "Colin_Powell"


def _png(width: int, height: int) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), (128, 128, 128)).save(buffer, format="PNG")
    return buffer.getvalue()


def _file(path: Path) -> tuple[str, bytes, str]:
    return path.name, path.read_bytes(), "image/jpeg"


@pytest.fixture
def client(gallery_path, recognizer):
    with TestClient(create_app(gallery_path, recognizer=recognizer), base_url=LOCAL,
                    raise_server_exceptions=False) as test_client:
        yield test_client


@pytest.mark.parametrize("size", [(1, 20_000), (20_000, 1)])
def test_an_elongated_image_is_400_naming_its_size_on_every_route(client, lfw, size):
    line = ("line.png", _png(*size), "image/png")
    face = _file(lfw(COLIN, 1))
    calls = [("/v1/detect", {"image": line}), ("/v1/embed", {"image": line}), ("/v1/identify", {"image": line}),
             ("/v1/verify", {"image1": face, "image2": line}), ("/v1/verify", {"image1": line, "image2": face})]
    for url, files in calls:
        answer = client.post(url, files=files)
        assert answer.status_code == 400, (url, answer.text)
        assert f"line.png: image of {size[0]}x{size[1]} pixels is too elongated" in answer.json()["detail"]
    enrol = client.post("/v1/identities", data={"name": "Line"}, files=[("images", face), ("images", line)])
    assert enrol.status_code == 400 and "too elongated" in enrol.json()["detail"]
    assert client.get("/v1/identities").json()["count"] == 0
