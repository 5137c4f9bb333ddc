"""Enrolment, decided once for every front end: which photos go to which person, and what a photo without a face
does to an enrolment.

Planning: a folder of people (`root/<name>/<photos>`, one sub-folder per person; photos lying loose at its top
are listed, never enrolled: whose are they?) or one person's photos (a name and image files or folders). Every
name is checked before any photo is read, so a bad folder name enrols nobody: each must be a name the gallery
can store, no two folders may be look-alikes (`alice/` beside `Alice/`: one spelling, `name_spelling`), and
`check_plan` refuses, before anyone is enrolled, a new name that is a look-alike of a person the gallery holds
(Gallery.refuse_look_alike, the rule each enrolment's transaction applies again).

The policy for a photo without a face (the same for `marginface enrol` and `POST /v1/identities`): it is
skipped and reported, and the person is enrolled from the photos that show a face, in one transaction. A
person none of whose photos shows a face is not enrolled: NoUsablePhoto (a NoFaceError, HTTP 422) lists
them, and nothing is written. Each photo gives its main face (faces.main_face): a group photo enrols the
person it is of, never the bystanders.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from marginface.data.folder import list_images
from marginface.errors import UsageError
from marginface.infer.faces import FaceResult, ModelFingerprint, NoFaceError, main_face
from marginface.infer.gallery import (
    SAME_READING,
    Gallery,
    GalleryError,
    LookAlikeName,
    UnknownIdentity,
    check_identity_name,
    name_spelling,
)
from marginface.infer.recognizer import image_files

log = logging.getLogger(__name__)
NO_FACE = "no face found"


@dataclass(frozen=True)
class PersonPhotos:
    """One person to enrol and the image files given for them (possibly none)."""

    name: str
    files: list[Path]
    folder: Path | None = None  # the sub-folder the name comes from (a folder of people); None: a name given

    @property
    def source(self) -> str:
        """Where the name comes from, for messages: its folder, else the name."""
        return str(self.folder) if self.folder is not None else repr(self.name)


@dataclass(frozen=True)
class EnrolmentPlan:
    """People in enrolment order (names checked) and the images that belong to nobody (not enrolled)."""

    people: list[PersonPhotos]
    loose: list[Path] = field(default_factory=list)

    @property
    def total(self) -> int:
        """How many image files the plan reads."""
        return sum(len(person.files) for person in self.people)


def plan_person(name: str, inputs: Iterable[str | Path]) -> EnrolmentPlan:
    """One person's photos (image files, or folders of them); GalleryError when the name cannot be stored."""
    return EnrolmentPlan([PersonPhotos(check_identity_name(name), image_files(inputs))])


def plan_folder(root: str | Path) -> EnrolmentPlan:
    """One person per sub-folder of `root` (named after it; hidden folders left out), every name checked first
    (LookAlikeName naming both folders when two names read the same: name_spelling); the images lying loose at the
    top of `root` are returned as `loose`."""
    root = Path(root)
    if not root.is_dir():
        raise UsageError(f"{root} is not a folder (one sub-folder per person expected)")
    folders = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not folders:
        raise UsageError(f"{root} has no sub-folders (one per person expected)")
    names = []
    for folder in folders:
        try:
            names.append(check_identity_name(folder.name))
        except GalleryError as err:
            raise GalleryError(f"{folder}: {err}; rename the folder (nothing was enrolled)") from err
    seen: dict[str, Path] = {}
    for folder, name in zip(folders, names, strict=True):
        other = seen.setdefault(name_spelling(name), folder)
        if other != folder:
            raise LookAlikeName(f"{root}: the folders {other.name!r} and {folder.name!r} name people whose names read "
                                f"the same ({SAME_READING}), so the two could not be told apart; if they are one "
                                "person, put their photos in one folder, else rename one (nothing was enrolled)")
    people = [PersonPhotos(name, image_files([folder]), folder) for folder, name in zip(folders, names, strict=True)]
    return EnrolmentPlan(people, list_images(root))


def check_plan(gallery: Gallery, plan: EnrolmentPlan) -> None:
    """Refuse the whole plan, before anyone is enrolled, when a new name in it is a look-alike of a person the
    gallery holds (LookAlikeName naming the folder and both names); enrolling more photos of a person under
    their exact name is fine. Each enrolment checks again inside its transaction (another process may enrol)."""
    for person in plan.people:
        try:
            gallery.identity_id(person.name)  # held under this very name: more photos of them
        except UnknownIdentity:
            try:
                gallery.refuse_look_alike(person.name)
            except LookAlikeName as err:
                raise LookAlikeName(f"{person.source}: {err} (nothing was enrolled)") from err


def plan_enrolment(inputs: Sequence[str | Path], name: str | None = None) -> EnrolmentPlan:
    """With `name`: these images (or folders) are that one person. Without: `inputs` is one folder of people."""
    if name is not None:
        return plan_person(name, inputs)
    if len(inputs) != 1 or not Path(inputs[0]).is_dir():
        raise UsageError("enrol FOLDER takes one folder with one sub-folder per person; "
                         "to enrol images of one person use --name NAME IMG...")
    return plan_folder(inputs[0])


class EnrolmentPhoto(Protocol):
    """A photo whose faces were found: what enrolment needs of it (the service's Photo is one)."""

    name: str
    sha256: str
    faces: list[FaceResult]


@dataclass(frozen=True)
class FoundPhoto:
    """A photo read from a file: its name, content hash and faces (main face first)."""

    name: str
    sha256: str
    faces: list[FaceResult]


@dataclass(frozen=True)
class Skipped:
    """A photo that was not enrolled and why (one line for people to read)."""

    photo: str
    reason: str

    def __str__(self) -> str:
        return f"{self.photo}: {self.reason}"

    def to_dict(self) -> dict:
        """JSON-ready dict."""
        return {"photo": self.photo, "reason": self.reason}


@dataclass(frozen=True)
class Enrolled:
    """What one person's enrolment did: templates added, photos already enrolled, photos skipped (no face)."""

    name: str
    added: int
    duplicates: int
    skipped: list[Skipped]

    def to_dict(self) -> dict:
        """JSON-ready dict: name, added, duplicates, skipped [{photo, reason}]."""
        return {"name": self.name, "added": self.added, "duplicates": self.duplicates,
                "skipped": [item.to_dict() for item in self.skipped]}


class NoUsablePhoto(NoFaceError):
    """None of a person's photos shows a face: nothing was enrolled for them; `skipped` lists the photos."""

    def __init__(self, message: str, skipped: list[Skipped]) -> None:
        super().__init__(message)
        self.skipped = skipped


def usable_faces(name: str, photos: Sequence[EnrolmentPhoto]) -> tuple[list[EnrolmentPhoto], list[Skipped]]:
    """The policy: (photos that show a face, photos skipped for showing none); NoUsablePhoto when no photo
    shows a face (and none was given as a photo at all: there is nothing to enrol)."""
    usable = [photo for photo in photos if photo.faces]
    skipped = [Skipped(photo.name, NO_FACE) for photo in photos if not photo.faces]
    if not usable:
        listed = "; ".join(str(item) for item in skipped) or "no photos given"
        raise NoUsablePhoto(f"nothing enrolled for {name!r}: no photo shows a face ({listed})", skipped)
    return usable, skipped


def enrol(gallery: Gallery, name: str, photos: Sequence[EnrolmentPhoto], fingerprint: ModelFingerprint, *,
          allow_shared_photos: bool = False) -> Enrolled:
    """Enrol the main face of every photo of `name` that shows one, in one transaction (the policy above).

    A photo already enrolled for `name` adds nothing (counted in `duplicates`); one enrolled under another
    name is refused (SharedPhoto) unless `allow_shared_photos`: identify would answer whichever came first."""
    name = check_identity_name(name)
    usable, skipped = usable_faces(name, photos)
    faces = [(main_face(photo.faces, photo.name), photo.sha256) for photo in usable]
    added = gallery.enroll(name, faces, fingerprint, allow_shared_photos=allow_shared_photos,
                           photo_names=[photo.name for photo in usable])
    log.info("enrolled %r: %d new templates, %d already enrolled, %d photos without a face skipped",
             name, added, len(faces) - added, len(skipped))
    return Enrolled(name, added, len(faces) - added, skipped)
