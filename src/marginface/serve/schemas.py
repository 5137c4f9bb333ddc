"""The service's answers as Pydantic models, so /openapi.json describes every response (and a schema-based
fuzzer can check them); ErrorBody is the one shape of every error."""

from __future__ import annotations

from pydantic import BaseModel, Field


class ErrorBody(BaseModel):
    """Every error answer: one human-readable line naming the file, field or value that is wrong."""

    detail: str


class ThresholdOut(BaseModel):
    """The cosine threshold a decision used (score >= value accepts) and where it came from."""

    value: float
    source: str = Field(description='"fixed", or the report, set and FAR/FPIR it was calibrated at')


class ImageOut(BaseModel):
    """An uploaded photo as the service saw it: its client-side name and decoded size (after EXIF rotation)."""

    name: str
    width: int
    height: int


class FaceOut(BaseModel):
    """One face: box (x, y, w, h) and five landmarks in the photo's pixels, detection score, quality signals."""

    box: list[float] = Field(min_length=4, max_length=4)
    landmarks: list[list[float]] = Field(description="(x, y) of left eye, right eye, nose tip, left and right "
                                                     "mouth corner")
    detection_score: float
    raw_norm: float = Field(description="norm of the model's raw embedding; low for a poor face")
    face_size: float = Field(description="min(w, h) of the box in pixels")


class EmbeddedFaceOut(FaceOut):
    """A face with its unit embedding."""

    embedding: list[float]


class Health(BaseModel):
    """Liveness and what is loaded; `status` "degraded" with `write_problem` when changes cannot be written now."""

    status: str = Field(description='"ok", or "degraded" when the gallery cannot take changes now')
    version: str
    model: str = Field(description="the model fingerprint key embeddings belong to")
    threshold: ThresholdOut
    identities: int | None
    templates: int | None
    writable: bool
    write_problem: str | None


class Detected(BaseModel):
    """Every face found in a photo (no embeddings)."""

    image: ImageOut
    faces: list[FaceOut]


class Embedded(BaseModel):
    """Unit embeddings of the main face (or every face) and the model fingerprint they belong to."""

    image: ImageOut
    model: str
    faces: list[EmbeddedFaceOut]


class VerifiedImage(ImageOut):
    """One photo of a verification and the box of its main face."""

    box: list[float] = Field(min_length=4, max_length=4)


class Verified(BaseModel):
    """A 1:1 decision on the main faces of two photos."""

    score: float
    same: bool
    threshold: ThresholdOut
    image1: VerifiedImage
    image2: VerifiedImage


class Candidate(BaseModel):
    """One enrolled person and their best template's score."""

    name: str
    score: float


class IdentifiedFace(FaceOut):
    """A face with the gallery's answer: a name at or above the threshold, else "unknown"."""

    name: str = Field(description='the person, or "unknown"')
    score: float | None = Field(description="the best match's score; null when the gallery is empty")
    known: bool
    threshold: ThresholdOut
    candidates: list[Candidate]


class Identified(BaseModel):
    """Every face of a photo with its decision, main face first."""

    image: ImageOut
    faces: list[IdentifiedFace]


class Identity(BaseModel):
    """One enrolled person: template count and times (seconds since the epoch)."""

    name: str
    templates: int
    created: float
    updated: float


class Identities(BaseModel):
    """Every enrolled person."""

    count: int
    identities: list[Identity]


class SkippedPhoto(BaseModel):
    """A photo an enrolment did not use, and why (a photo without a face; docs/recognition.md)."""

    photo: str
    reason: str


class Enrolled(BaseModel):
    """What an enrolment did: new templates, photos already enrolled for this person, photos skipped."""

    name: str = Field(description="the name as stored (Unicode NFC, without surrounding spaces)")
    added: int
    duplicates: int
    skipped: list[SkippedPhoto]


class Removed(BaseModel):
    """The person deleted with all their templates."""

    removed: str
