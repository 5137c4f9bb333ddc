"""A fake FaceRecognizer for route tests that need no real model (and no ../shared/data): a 'face' is a square of
one colour on a grey background, and its embedding is a fixed function of that colour, so one colour is one
person. Everything after detection and embedding (thresholds, gallery, decisions) is the real library's."""

from __future__ import annotations

import hashlib
import io
import zlib
from pathlib import Path

import numpy as np
from PIL import Image

from marginface.data.align import ARCFACE_TEMPLATE
from marginface.infer.faces import FaceResult, ModelFingerprint
from marginface.infer.images import load_image
from marginface.infer.recognizer import FaceRecognizer
from marginface.infer.thresholds import Threshold

GREY = (128, 128, 128)
DIM = 128
THRESHOLD = 0.5
# People as colours; their fake embeddings are pairwise far apart (cosine < 0.5, checked in test_routes).
RED, GREEN, BLUE, YELLOW = (200, 30, 30), (30, 180, 60), (40, 60, 210), (230, 210, 20)


def colour_embedding(colour: tuple[int, int, int]) -> np.ndarray:
    """The unit embedding of every face of this colour (a seeded Gaussian direction)."""
    seed = zlib.crc32(bytes(int(c) for c in colour))
    vector = np.random.default_rng(seed).standard_normal(DIM)
    return (vector / np.linalg.norm(vector)).astype(np.float32)


class FakeRecognizer(FaceRecognizer):
    """faces(): one face per colour other than the top-left pixel's, largest area first; no model is loaded."""

    def __init__(self, threshold: float = THRESHOLD) -> None:  # noqa: D107 - deliberately not the parent's
        self.model_path = Path("fake-model.onnx")
        self.detector_path = Path("fake-detector.onnx")
        self.fingerprint = ModelFingerprint("f" * 64, 112, "NCHW", "RGB", 127.5, 127.5, DIM)
        self.threshold = Threshold.fixed(threshold)
        self.flip = True
        self.calls = 0

    def faces(self, image, *, name: str | None = None) -> list[FaceResult]:
        """Every coloured square, main (largest) first; [] for a photo of one colour."""
        self.calls += 1
        rgb = load_image(image, name=name)
        background = rgb[0, 0]
        mask = np.any(rgb != background, axis=2)
        if not mask.any():
            return []
        colours, counts = np.unique(rgb[mask].reshape(-1, 3), axis=0, return_counts=True)
        found = []
        for index in np.argsort(-counts, kind="stable")[:8]:
            colour = tuple(int(c) for c in colours[index])
            ys, xs = np.nonzero(np.all(rgb == np.asarray(colour, rgb.dtype), axis=2))
            x, y = float(xs.min()), float(ys.min())
            w, h = float(xs.max() - xs.min() + 1), float(ys.max() - ys.min() + 1)
            landmarks = np.asarray(ARCFACE_TEMPLATE, np.float64) / 112.0 * [w, h] + [x, y]
            found.append(FaceResult((x, y, w, h), landmarks, 0.9, colour_embedding(colour), 20.0, min(w, h)))
        return found


def photo(*faces: tuple[tuple[int, int, int], int, int, int], size: tuple[int, int] = (120, 100),
          fmt: str = "PNG") -> bytes:
    """An encoded photo of `size` (width, height): grey, with squares (colour, x, y, side) drawn in order."""
    pixels = np.empty((size[1], size[0], 3), np.uint8)
    pixels[:] = GREY
    for colour, x, y, side in faces:
        pixels[y:y + side, x:x + side] = colour
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format=fmt)
    return buffer.getvalue()


def face(colour: tuple[int, int, int], side: int = 40, size: tuple[int, int] = (120, 100)) -> bytes:
    """A photo of one person (their colour) at a position that depends on `side`."""
    return photo((colour, 10 + side % 17, 8 + side % 13, side), size=size)


def wall(size: tuple[int, int] = (120, 100)) -> bytes:
    """A photo without a face."""
    return photo(size=size)


def store_photo(people, recognizer: FakeRecognizer, name: str, data: bytes, thumbnails: bool = True) -> list[int]:
    """One photo's faces into unassigned face records of a People store (thumbnails too), as a scan stores them."""
    from marginface.infer.people_scan import face_thumbnails

    rgb = load_image(data, name=name)
    found = recognizer.faces(rgb, name=name)
    return people.add_faces(f"/photos/{name}", hashlib.sha256(data).hexdigest(), found,
                            face_thumbnails(rgb, found) if thumbnails else None, fingerprint=recognizer.fingerprint)
