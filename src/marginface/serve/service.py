"""The recognizer and gallery behind the HTTP routes: model loaded once, inference and gallery access made
safe for the threadpool that runs them (one detector lock, gallery access serialised)."""

from __future__ import annotations

import hashlib
import logging
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from marginface.infer.gallery import Gallery, Identified
from marginface.infer.images import DEFAULT_MAX_PIXELS, load_image
from marginface.infer.recognizer import FaceRecognizer, FaceResult, NoFaceError, Verification

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Upload:
    """One uploaded image: its client-side name and its bytes (kept in memory only for the request)."""

    name: str
    data: bytes

    @property
    def sha256(self) -> str:
        """Hash of the uploaded bytes: what enrolment stores instead of the photo."""
        return hashlib.sha256(self.data).hexdigest()


@dataclass(frozen=True)
class Decoded:
    """A decoded upload: RGB pixels plus the name used in every message about it."""

    name: str
    rgb: np.ndarray
    sha256: str

    @property
    def size(self) -> dict:
        """Width and height for responses."""
        return {"name": self.name, "width": int(self.rgb.shape[1]), "height": int(self.rgb.shape[0])}


class RecognitionService:
    """One FaceRecognizer and one Gallery shared by all requests; every method is safe to call from any thread.

    YuNet through OpenCV keeps per-instance input-size state, so recognizer calls take `_infer_lock`; gallery
    reads and writes take `_gallery_lock`, so an enrolment's transaction and a search never interleave on the
    gallery's SQLite connection. Identification holds the gallery lock for its search only, not for detection.
    """

    def __init__(self, gallery_path: str | Path, *, recognizer: FaceRecognizer | None = None,
                 max_pixels: int = DEFAULT_MAX_PIXELS) -> None:
        self.gallery_path = Path(gallery_path)
        if not self.gallery_path.is_file():
            raise FileNotFoundError(f"gallery {self.gallery_path} does not exist; create it with "
                                    "`marginface gallery create`")
        self.gallery = Gallery.open(self.gallery_path)
        self.recognizer = recognizer if recognizer is not None else FaceRecognizer.from_gallery(self.gallery)
        self.max_pixels = max_pixels
        self._infer_lock = threading.Lock()
        self._gallery_lock = threading.RLock()

    def close(self) -> None:
        """Close the gallery (the app's shutdown hook)."""
        with self._gallery_lock:
            self.gallery.close()

    def decode(self, upload: Upload) -> Decoded:
        """Decode an upload (ImageInputError names it when it is not a usable image)."""
        rgb = load_image(upload.data, name=upload.name, max_pixels=self.max_pixels)
        return Decoded(upload.name, rgb, upload.sha256)

    def faces(self, image: Decoded) -> list[FaceResult]:
        """Every face in the image, main face first; [] when none."""
        with self._infer_lock:
            return self.recognizer.faces(image.rgb)

    def main_face(self, image: Decoded) -> FaceResult:
        """The face the photo is of; NoFaceError naming the upload when there is none."""
        found = self.faces(image)
        if not found:
            raise NoFaceError(f"{image.name}: no face found")
        return found[0]

    def verify(self, first: Decoded, second: Decoded) -> tuple[Verification, FaceResult, FaceResult]:
        """Score and decision for the main faces of two images, with the faces compared."""
        with self._infer_lock:
            faces = [self.recognizer.faces(image.rgb) for image in (first, second)]
        for image, found in zip((first, second), faces, strict=True):
            if not found:
                raise NoFaceError(f"{image.name}: no face found")
        a, b = faces[0][0], faces[1][0]
        return self.recognizer.compare(a, b), a, b

    def identify(self, image: Decoded, k: int = 1) -> list[Identified]:
        """Every face in the image with its decision (name or unknown), main face first."""
        found = self.faces(image)
        if not found:
            raise NoFaceError(f"{image.name}: no face found")
        with self._gallery_lock:
            return self.recognizer.decide(found, self.gallery, k=k)

    def enrol(self, name: str, images: list[Decoded]) -> tuple[int, int]:
        """Add the main face of every image to `name` in one transaction; returns (added, already enrolled).

        Every image is checked for a face before anything is written, so a bad photo enrols nothing.
        """
        faces = [(self.main_face(image), image.sha256) for image in images]
        with self._gallery_lock:
            added = self.gallery.enroll(name, faces, self.recognizer.fingerprint)
        return added, len(faces) - added

    def identities(self) -> list[dict]:
        """Every enrolled identity as a dict (name, templates, created, updated)."""
        with self._gallery_lock:
            return [info.to_dict() for info in self.gallery.identities()]

    def remove(self, name: str) -> None:
        """Delete an identity and its templates (KeyError when unknown)."""
        with self._gallery_lock:
            self.gallery.remove(name)

    def stats(self) -> dict:
        """Gallery statistics (identities, templates, ...)."""
        with self._gallery_lock:
            return self.gallery.stats()
