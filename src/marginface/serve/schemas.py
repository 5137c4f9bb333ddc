"""The service's answers as Pydantic models, so /openapi.json describes every response (and a schema-based
fuzzer can check them); ErrorBody is the one shape of every error."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, Field, StrictInt


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


# -- people and unnamed faces (routes in people_routes.py) ----------------------------------------------------------
FACE_ID = Field(ge=1, le=2**63 - 1, description="a face record's id")


class PersonOut(BaseModel):
    """A named person or an unnamed cluster and its reference: the name, or `@<id>` for a cluster."""

    ref: str = Field(description='how routes address it: the name, or "@<id>" for a cluster (URL-encoded in paths)')
    kind: str = Field(description='"named" or "cluster"')
    id: int
    name: str | None


class PersonSummary(PersonOut):
    """A person with counts: faces (of which user-placed), templates, a sample face (the largest), times."""

    faces: int
    user_faces: int = Field(description="faces placed by the user (named, merged, split), never moved by a run")
    templates: int = Field(description="the embeddings identify searches for this person")
    sample_face: int | None = Field(description="the id of their largest face (the lowest id among equal "
                                                "sizes); null for a person without faces")
    created: float
    updated: float


class PeopleCounts(BaseModel):
    """Photos and faces held, faces in no person yet, faces without an embedding, named people and clusters."""

    photos: int
    faces: int
    unassigned: int
    without_embedding: int
    named: int
    clusters: int


class PeopleList(BaseModel):
    """Every named person (by name), then the clusters (largest first), with the gallery's counts."""

    count: int
    people: list[PersonSummary]
    counts: PeopleCounts
    thumbnails_kept: bool = Field(description="whether this service stores the faces of uploaded photos as "
                                              "thumbnails (--keep-thumbnails)")


class FaceRecordOut(BaseModel):
    """One stored face: its photo, where it is in it, how good it looks, whose it is and who placed it there."""

    id: int
    photo_path: str = Field(description='the scanned file, or "upload:<name>" for an uploaded photo (not stored)')
    photo_sha256: str
    face_index: int
    box: list[float] = Field(min_length=4, max_length=4)
    landmarks: list[list[float]]
    detection_score: float
    raw_norm: float
    face_size: float
    person: str | None = Field(description="the person's reference; null when in no person")
    assigned_by: str = Field(description='"user" (never moved by a clustering run) or "auto"')
    has_thumbnail: bool
    has_embedding: bool


class UnassignedFacesOut(BaseModel):
    """A page of the faces in no person yet, by id: fewer than the smallest cluster, or taken out as 'not this
    person'; place them with POST /v1/people:split."""

    faces: list[FaceRecordOut]
    total: int = Field(description="faces in no person that have an embedding (all pages together)")
    without_embedding: int = Field(description="faces in no person without an embedding (their photo was gone at "
                                               "the last reembed): out of clustering and not listed")
    next_after: int | None = Field(description="pass as `after` for the next page; null on the last page")
    thumbnails_kept: bool = Field(description="whether this service stores the faces of uploaded photos as "
                                              "thumbnails (--keep-thumbnails)")


class PersonDetailOut(PersonSummary):
    """A person with every face record and the faces marked 'not this person' for them."""

    face_records: list[FaceRecordOut]
    not_faces: list[int]


class PersonChanged(BaseModel):
    """The person a change left the faces in (named, merged into, split into)."""

    person: PersonOut


class NotThisPersonOut(BaseModel):
    """The person the faces were marked 'not' for, and those of them that were taken out of it."""

    person: PersonOut
    taken_out: list[int]


class PersonRemoved(BaseModel):
    """The person deleted, with how many faces and templates went with them."""

    person: str
    faces: int
    templates: int


class NameBody(BaseModel):
    """A name for a cluster (or a new name for a person); an existing name merges the two."""

    ref: str = Field(description="the person: a name or @<id>", examples=["@1"])
    name: str = Field(min_length=1, max_length=200, pattern=r"\S", examples=["Ann Lee"],
                      description="stored as Unicode NFC without surrounding spaces; not @<digits>")


class MergeBody(BaseModel):
    """Two people to merge: the named one is kept, else `a`."""

    a: str = Field(description="a person reference: a name or @<id>", examples=["@1"])
    b: str = Field(description="a person reference: a name or @<id>", examples=["@2"])


class SplitBody(BaseModel):
    """Faces to move (placed by the user) into a new cluster, or into the person `into`."""

    faces: list[Annotated[StrictInt, FACE_ID]] = Field(min_length=1, examples=[[3]])
    into: str | None = Field(default=None, description="a person reference; null: a new cluster", examples=["@1"])


class NotBody(BaseModel):
    """Faces to mark 'not this person' for the person `ref`."""

    ref: str = Field(description="the person: a name or @<id>", examples=["@1"])
    faces: list[Annotated[StrictInt, FACE_ID]] = Field(min_length=1, examples=[[2]])


class PhotoFaces(BaseModel):
    """One uploaded photo: the ids of its new face records; `known` when a photo of these bytes was stored before."""

    photo: str
    face_ids: list[int]
    known: bool


class FacesAdded(BaseModel):
    """What an upload of photos of unnamed people stored (unassigned faces, until clustered)."""

    photos: list[PhotoFaces]
    faces: int
    known: int = Field(description="photos whose bytes were stored before (nothing added for them)")
    without_face: list[str]
    thumbnails_kept: bool
    clustering: dict | None = Field(description="the clustering run's report (infer/organise.py): the new faces "
                                                "placed with the gallery's stored cut; null when the gallery has "
                                                "no cut yet (the faces stay unassigned until `marginface cluster`)")
