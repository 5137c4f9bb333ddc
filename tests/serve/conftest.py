"""Fixtures for the service tests: the real YuNet + MobileFaceNet, fresh galleries, LFW photos, a live server,
a Chromium page on it."""

from __future__ import annotations

import contextlib
import io
import os
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

MODEL = "face_recognition_mobilefacenet/mobilefacenet_dynamic_batch.onnx"
DETECTOR = "face_detection_yunet/face_detection_yunet_2023mar.onnx"
LFW = "lfw/lfw-deepfunneled"
LOCAL = "http://127.0.0.1:8000"  # TestClient's default Host, 'testserver', is refused without a key
CHROMIUM = Path(os.environ.get("MARGINFACE_CHROMIUM", "/usr/bin/chromium"))  # Debian's package
THRESHOLD = 0.35  # fixed cosine threshold for the tests; the decisions below are far from it either way


def grey_png(width: int, height: int) -> bytes:
    """A plain grey PNG of that size (no face)."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (width, height), (128, 128, 128)).save(buffer, format="PNG")
    return buffer.getvalue()


def upload(path: Path) -> tuple[str, bytes, str]:
    """A JPEG file as a multipart upload: (name, bytes, content type)."""
    return path.name, path.read_bytes(), "image/jpeg"


@pytest.fixture(scope="session")
def recognizer(shared_data: Path):
    """One FaceRecognizer for the whole session (loading it per test would dominate the runtime)."""
    from marginface.infer.recognizer import FaceRecognizer
    from marginface.infer.thresholds import Threshold

    return FaceRecognizer(shared_data / MODEL, shared_data / DETECTOR, threshold=Threshold.fixed(THRESHOLD))


@pytest.fixture
def gallery_path(tmp_path: Path, recognizer, shared_data: Path) -> Path:
    """A new, empty gallery file recorded with the test recognizer's fingerprint and threshold."""
    from marginface.infer.gallery import Gallery

    path = tmp_path / "people.db"
    Gallery.create(path, recognizer.fingerprint, recognizer.threshold, model=str(shared_data / MODEL),
                   detector=str(shared_data / DETECTOR)).close()
    return path


@pytest.fixture(scope="session")
def lfw(shared_data: Path):
    """lfw(name, i) -> path of LFW deep-funneled photo i (1-based) of that person."""

    def photo(name: str, index: int) -> Path:
        return shared_data / LFW / name / f"{name}_{index:04d}.jpg"

    return photo


def free_socket() -> socket.socket:
    """A listening-ready TCP socket on 127.0.0.1 with a port the OS chose (no race between pick and bind)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    return sock


@contextlib.contextmanager
def running_server(app) -> Iterator[str]:
    """Serve `app` with a real uvicorn on 127.0.0.1 and a random free port in a thread; yields its base URL."""
    import uvicorn

    sock = free_socket()
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=20)
        sock.close()


@pytest.fixture
def open_page():
    """open_page(app, height) -> a context manager: `app` served live and a headless Chromium page open at its /,
    yielding (page, Playwright's expect); the page must raise no script error. Skips without Chromium or
    Playwright."""
    if not CHROMIUM.is_file():
        pytest.skip(f"no Chromium at {CHROMIUM}: install Debian's `chromium` package (or set MARGINFACE_CHROMIUM)")
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright for Python is not installed")

    @contextlib.contextmanager
    def open_on(app, height: int) -> Iterator[tuple]:
        with running_server(app) as url, sync_api.sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True,
                                                 args=["--no-sandbox", "--disable-gpu"])
            try:
                page = browser.new_page(viewport={"width": 1200, "height": height})
                errors: list[str] = []
                page.on("pageerror", lambda err: errors.append(str(err)))
                page.goto(url + "/")
                yield page, sync_api.expect
                assert errors == []
            finally:
                browser.close()

    return open_on


@pytest.fixture
def fake_recognizer():
    """A FakeRecognizer (tests/serve/fakes.py): coloured squares are faces; no model, no shared data."""
    from .fakes import FakeRecognizer

    return FakeRecognizer()


@pytest.fixture
def fake_gallery_path(tmp_path: Path, fake_recognizer) -> Path:
    """A new, empty gallery recorded with the fake recognizer's fingerprint and threshold."""
    from marginface.infer.gallery import Gallery

    path = tmp_path / "fake.db"
    Gallery.create(path, fake_recognizer.fingerprint, fake_recognizer.threshold,
                   model=fake_recognizer.model_path, detector=fake_recognizer.detector_path).close()
    return path
