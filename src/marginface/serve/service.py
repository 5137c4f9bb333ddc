"""The recognizer and gallery behind the HTTP routes: model loaded once, inference and gallery changes made
safe for the threadpool that runs them (gallery writes serialised; the recognizer guards its own detector),
and photos decoded one at a time within a per-process pixel budget (memory bounded whatever a body holds)."""

from __future__ import annotations

import hashlib
import logging
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from marginface.errors import Unavailable, UsageError
from marginface.infer.enrolment import Enrolled, enrol
from marginface.infer.faces import FaceResult, Verification, main_face
from marginface.infer.gallery import Gallery, Identified, UnknownIdentity
from marginface.infer.images import DEFAULT_MAX_PIXELS, image_size, load_image
from marginface.infer.people import People, PeopleError, Person, PersonDetail, PersonInfo, UnassignedPage
from marginface.infer.people_scan import face_thumbnails
from marginface.infer.recognizer import FaceRecognizer
from marginface.infer.thresholds import Threshold

log = logging.getLogger(__name__)
UPLOAD_PREFIX = "upload:"  # face records of uploaded photos: the photo is not stored, only its client-side name


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
class Photo:
    """What a request keeps of an uploaded photo once its pixels are gone: name, size, hash and its faces."""

    name: str
    width: int
    height: int
    sha256: str
    faces: list[FaceResult]
    thumbnails: list[bytes] | None = None  # one aligned JPEG crop per face, only when asked for

    @property
    def size(self) -> dict:
        """Name, width and height for responses."""
        return {"name": self.name, "width": self.width, "height": self.height}


class ServiceBusy(Unavailable):
    """Decoding a photo now would take the process over its pixel budget, and none came free in time."""

    retry_after_s = 5  # the service answers 503 with Retry-After


class NoThumbnail(PeopleError):
    """A face record stored without a thumbnail (thumbnails are kept only when asked for)."""

    http_status = 404


class PixelBudget:
    """How many decoded pixels all requests of this process may hold at once; a photo waits for its share.

    Each request decodes one photo at a time and drops its pixels once its faces are found, so a request
    holds at most one photo (at most `max_pixels`), and all concurrent requests together at most `capacity`.
    """

    def __init__(self, capacity: int, wait_s: float = 30.0) -> None:
        if capacity <= 0:
            raise UsageError(f"the pixel budget must be positive, got {capacity}")
        self.capacity = capacity
        self.wait_s = wait_s
        self._held = 0
        self._free = threading.Condition()

    @contextmanager
    def hold(self, pixels: int, name: str) -> Iterator[None]:
        """Hold `pixels` of the budget for the block; ServiceBusy naming the photo when none frees up in time."""
        pixels = min(int(pixels), self.capacity)
        with self._free:
            if not self._free.wait_for(lambda: self._held + pixels <= self.capacity, timeout=self.wait_s):
                raise ServiceBusy(f"{name}: the service is decoding {self._held} pixels of other photos (budget "
                                  f"{self.capacity}) and {pixels} more did not fit within {self.wait_s:g} s; retry")
            self._held += pixels
        try:
            yield
        finally:
            with self._free:
                self._held -= pixels
                self._free.notify_all()

    @property
    def held(self) -> int:
        """Pixels held now."""
        with self._free:
            return self._held


class RecognitionService:
    """One FaceRecognizer and one Gallery shared by all requests; every method is safe to call from any thread.

    The recognizer serialises its own detector calls (OpenCV's YuNet keeps per-call input-size state) and lets
    embeddings run concurrently, so requests call it without a lock here. Gallery changes (enrol, remove) take
    `_write_lock`, so one change's transaction and its in-memory index update finish before the next change
    starts; searches and listings go straight to the Gallery, which guards its SQLite connection and index with
    its own lock, so identification never waits for a detection or an enrolment's embedding.
    """

    def __init__(self, gallery_path: str | Path, *, recognizer: FaceRecognizer | None = None,
                 max_pixels: int = DEFAULT_MAX_PIXELS, pixel_budget: int | None = None,
                 keep_thumbnails: bool = False) -> None:
        budget = PixelBudget(pixel_budget if pixel_budget is not None else 2 * max_pixels)
        if budget.capacity < max_pixels:
            raise UsageError(f"the pixel budget ({budget.capacity}) must hold at least one photo of max_pixels "
                             f"({max_pixels})")
        self.budget = budget
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
        self.people = People(self.gallery)
        self.keep_thumbnails = bool(keep_thumbnails)  # store uploaded faces' aligned crops (biometric: off)
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

    def photo(self, upload: Upload, *, thumbnails: bool = False) -> Photo:
        """Decode one upload within the pixel budget, find its faces (main face first) and drop its pixels
        (keeping each face's aligned crop first when `thumbnails`).

        The header is read first (ImageInputError naming the upload when it is not a usable image), so the
        budget is taken for the real pixel count before a single pixel is decoded."""
        width, height = image_size(upload.data, upload.name, self.max_pixels)
        with self.budget.hold(width * height, upload.name):
            rgb = load_image(upload.data, name=upload.name, max_pixels=self.max_pixels)
            faces = self.recognizer.faces(rgb, name=upload.name)
            crops = face_thumbnails(rgb, faces) if thumbnails and faces else None
            height, width = rgb.shape[:2]  # EXIF orientation may swap them
            del rgb
        return Photo(upload.name, int(width), int(height), upload.sha256, faces, crops)

    @staticmethod
    def main_face(photo: Photo) -> FaceResult:
        """The face the photo is of (faces.main_face); NoFaceError naming the upload when there is none."""
        return main_face(photo.faces, photo.name)

    def verify(self, first: Photo, second: Photo) -> Verification:
        """Score and decision for the main faces of two photos, at the gallery's threshold (FaceRecognizer.decide)."""
        return self.recognizer.decide(self.main_face(first), self.main_face(second), threshold=self.threshold)

    def identify(self, photo: Photo, k: int = 1) -> list[Identified]:
        """Every face in the photo with its decision (name or unknown), main face first; NoFaceError when none."""
        self.main_face(photo)
        return self.recognizer.identify_faces(photo.faces, self.gallery, k)

    def enrol(self, name: str, photos: list[Photo], *, allow_shared_photos: bool = False) -> Enrolled:
        """Enrol `name` from the photos by infer.enrolment's policy: the main face of every photo that shows
        one, in one transaction; photos without a face skipped and reported; NoUsablePhoto (422) when none
        shows a face. A photo already enrolled under another name is refused (SharedPhoto) unless
        `allow_shared_photos`."""
        with self._write_lock:
            return enrol(self.gallery, name, photos, self.recognizer.fingerprint,
                         allow_shared_photos=allow_shared_photos)

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

    # -- people and unnamed faces (infer/people.py); changes go one at a time, like enrolments -----------------
    def people_list(self) -> tuple[list[PersonInfo], dict]:
        """Every named person, then every cluster (largest first), and the gallery's face counts, from one read
        transaction (People.listing), so the two agree under a concurrent writer."""
        return self.people.listing()

    def person(self, ref: str) -> PersonDetail:
        """One person (a name or `@<id>`) with every face record; UnknownPerson (404) when there is none."""
        return self.people.show(ref)

    def unassigned_faces(self, limit: int, after: int = 0) -> UnassignedPage:
        """One page of the unassigned faces, by id, after `after` (People.unassigned_page)."""
        return self.people.unassigned_page(after, limit)

    def thumbnail(self, face_id: int) -> bytes:
        """The stored aligned crop (JPEG) of a face; UnknownFace for an unknown id, NoThumbnail when none was kept
        (both 404)."""
        data = self.people.thumbnail(face_id)
        if data is None:
            raise NoThumbnail(f"gallery {self.gallery.path}: face {face_id} has no thumbnail (its photo was scanned "
                              "or uploaded without keep_thumbnails / --keep-thumbnails)")
        return data

    def name_person(self, ref: str, name: str) -> Person:
        """Name a cluster or rename a person (People.name: an existing name merges into that person)."""
        with self._write_lock:
            return self.people.name(ref, name)

    def merge_people(self, a: str, b: str) -> Person:
        """Merge two people (People.merge: the named one, else `a`, is kept)."""
        with self._write_lock:
            return self.people.merge(a, b)

    def split_faces(self, face_ids: Sequence[int], into: str | None) -> Person:
        """Move faces into a new cluster or into the person `into` (People.split)."""
        with self._write_lock:
            return self.people.split(face_ids, into)

    def not_this_person(self, face_ids: Sequence[int], ref: str) -> tuple[Person, list[int]]:
        """Mark faces 'not this person' and take them out of it (People.not_this_person): the person and the
        ids taken out."""
        with self._write_lock:
            taken = self.people.not_this_person(face_ids, ref)
            return self.people.show(ref).info.person, taken

    def remove_person(self, ref: str) -> dict:
        """Delete a person with their faces and templates (People.remove)."""
        with self._write_lock:
            return self.people.remove(ref)

    def add_faces(self, photo: Photo) -> list[int]:
        """Store every face of an uploaded photo, unassigned (People.add_faces), under `upload:<its name>`
        with its thumbnails when they were kept; [] when a photo of these bytes is stored already."""
        with self._write_lock:
            return self.people.add_faces(UPLOAD_PREFIX + photo.name, photo.sha256, photo.faces,
                                         photo.thumbnails if self.keep_thumbnails else None,
                                         fingerprint=self.recognizer.fingerprint)

    def cluster_new_faces(self, face_ids: Sequence[int]) -> dict | None:
        """Place uploaded faces into people with the gallery's stored clustering settings (infer/organise.py,
        incremental); None when the gallery has never been clustered and its model ships no cut (the faces
        stay unassigned until `marginface cluster` runs with one)."""
        from marginface.infer.organise import organise
        from marginface.infer.thresholds import ThresholdError

        if not face_ids:
            return None
        with self._write_lock:
            try:
                return organise(self.people).to_dict()
            except ThresholdError as err:
                log.warning("gallery %s: %d uploaded faces left unassigned: %s", self.gallery.path, len(face_ids), err)
                return None
