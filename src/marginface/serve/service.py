"""The recognizer and gallery behind the HTTP routes: model loaded once, inference and gallery changes made
safe for the threadpool that runs them (gallery writes serialised; the recognizer guards its own detector)."""

from __future__ import annotations

import hashlib
import logging
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from marginface.infer.gallery import Gallery, Identified, UnknownIdentity
from marginface.infer.images import DEFAULT_MAX_PIXELS, load_image
from marginface.infer.recognizer import FaceRecognizer, FaceResult, NoFaceError, Verification
from marginface.infer.thresholds import Threshold

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

    The recognizer serialises its own detector calls (OpenCV's YuNet keeps per-call input-size state) and lets
    embeddings run concurrently, so requests call it without a lock here. Gallery changes (enrol, remove) take
    `_write_lock`, so one change's transaction and its in-memory index update finish before the next change
    starts; searches and listings go straight to the Gallery, which guards its SQLite connection and index with
    its own lock, so identification never waits for a detection or an enrolment's embedding.
    """

    def __init__(self, gallery_path: str | Path, *, recognizer: FaceRecognizer | None = None,
                 max_pixels: int = DEFAULT_MAX_PIXELS) -> None:
        self.gallery = Gallery.open(gallery_path)  # GalleryError naming the file when absent or not a gallery
        try:
            if recognizer is None:
                recognizer = FaceRecognizer.from_gallery(self.gallery)
            else:  # a recognizer shared by the caller (tests, several apps) must be the gallery's model
                self.gallery.check_fingerprint(recognizer.fingerprint)
        except BaseException:
            self.gallery.close()
            raise
        self.recognizer = recognizer
        self.max_pixels = max_pixels
        self._write_lock = threading.Lock()

    @property
    def threshold(self) -> Threshold:
        """The operating threshold for verify and identify alike: the one stored in the gallery."""
        return self.gallery.threshold

    def close(self) -> None:
        """Close the gallery (the app's shutdown hook)."""
        with self._write_lock:
            self.gallery.close()

    def decode(self, upload: Upload) -> Decoded:
        """Decode an upload (ImageInputError names it when it is not a usable image)."""
        rgb = load_image(upload.data, name=upload.name, max_pixels=self.max_pixels)
        return Decoded(upload.name, rgb, upload.sha256)

    def faces(self, image: Decoded) -> list[FaceResult]:
        """Every face in the image, main face first; [] when none."""
        return self.recognizer.faces(image.rgb, name=image.name)

    def main_face(self, image: Decoded) -> FaceResult:
        """The face the photo is of; NoFaceError naming the upload when there is none."""
        found = self.faces(image)
        if not found:
            raise NoFaceError(f"{image.name}: no face found")
        return found[0]

    def verify(self, first: Decoded, second: Decoded) -> tuple[Verification, FaceResult, FaceResult]:
        """Score and decision for the main faces of two images, with the faces compared."""
        a, b = self.main_face(first), self.main_face(second)
        threshold = self.threshold
        score = self.recognizer.compare(a, b)
        return Verification(score, threshold.accepts(score), threshold), a, b

    def identify(self, image: Decoded, k: int = 1) -> list[Identified]:
        """Every face in the image with its decision (name or unknown), main face first."""
        found = self.faces(image)
        if not found:
            raise NoFaceError(f"{image.name}: no face found")
        return self.gallery.identify_faces(found, k=k, fingerprint=self.recognizer.fingerprint)

    def enrol(self, name: str, images: list[Decoded]) -> tuple[int, int]:
        """Add the main face of every image to `name` in one transaction; returns (added, already enrolled).

        Every image is checked for a face before anything is written, so a bad photo enrols nothing.
        """
        faces = [(self.main_face(image), image.sha256) for image in images]
        with self._write_lock:
            added = self.gallery.enroll(name, faces, self.recognizer.fingerprint)
        log.info("enrolled %r: %d new templates, %d already enrolled", name, added, len(faces) - added)
        return added, len(faces) - added

    def identities(self) -> list[dict]:
        """Every enrolled identity as a dict (name, templates, created, updated)."""
        return [info.to_dict() for info in self.gallery.identities()]

    def remove(self, name: str) -> None:
        """Delete an identity and its templates; KeyError when nobody has that name in the gallery as committed
        now (the gallery checks inside its write transaction, so a CLI's enrol, remove or rename is seen)."""
        with self._write_lock:
            try:
                self.gallery.remove(name)
            except UnknownIdentity as err:
                raise KeyError(name) from err
        log.info("removed %r and its templates", name)

    def stats(self) -> dict:
        """Gallery statistics (identities, templates, ...)."""
        return self.gallery.stats()
