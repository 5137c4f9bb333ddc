"""People over a gallery's face records: every detected face of a scanned collection, linked to a named person
(an enrolled identity) or an unnamed cluster, and the manual decisions (name, merge, split, not-this-person,
remove) that later clustering runs respect.

Person references: a named person is addressed by their name, a cluster by `@<id>` (`@12`; not `#12`, which a
shell reads as a comment); cluster ids are never reused. A face is placed by a run (`assigned_by` 'auto', which
the next run may change) or by the user ('user': naming, merging, splitting; never moved by a run). Only the
user-placed faces of a named person are templates (`templates.face_id`), so identify and search answer from
confirmed faces only, exactly as they answer from enrolled photos. Every change is one transaction of the
gallery (see infer/gallery.py); after it commits, the in-memory search index takes in the templates it wrote.

The clustering glue is: `snapshot = people.assignments()`, labels = `marginface.cluster.cluster_embeddings(
snapshot.embeddings, fixed=snapshot.fixed, cannot_link=snapshot.cannot_link, ...)`, then
`people.apply_clustering(snapshot.face_ids, labels)`.
"""

from __future__ import annotations

import json
import logging
import re
import sqlite3
import struct
import time
import zlib
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np

from marginface.infer.faces import FaceResult, ModelFingerprint
from marginface.infer.gallery import (
    SCHEMA_VERSION,
    Gallery,
    GalleryDamaged,
    GalleryError,
    GalleryNotWritable,
    UnknownIdentity,
    check_identity_name,
    normalize_identity_name,
    template_checksum,
    verify_embeddings,
)
from marginface.listing import first_of

log = logging.getLogger(__name__)
CLUSTER_REF = re.compile(r"@(\d+)")
USER, AUTO = "user", "auto"
_CHUNK = 500  # ids per `IN (...)` (SQLite allows 32766 parameters; small chunks keep statements short)
_MAX_ID = 2**63 - 1  # SQLite's largest INTEGER: a larger id names nothing (and cannot even be bound)
IN_NO_PERSON = "identity_id IS NULL AND cluster_id IS NULL"
# unassigned: in no person and with an embedding, so a clustering run or the user can place it; a face in no
# person without one (its photo was gone at the last reembed) is out of clustering and counted apart
UNASSIGNED = f"{IN_NO_PERSON} AND embedding IS NOT NULL"
PLACED = "identity_id IS NOT NULL OR cluster_id IS NOT NULL"  # in a person (named or cluster)


class PeopleError(GalleryError):
    """A people operation that cannot be done as asked; the message names the gallery and the person or face."""


class UnknownPerson(UnknownIdentity):
    """A person reference (a name or `@id`) the gallery, as committed now, does not hold."""

    http_status = 404


class UnknownFace(PeopleError):
    """Face ids the gallery, as committed now, does not hold."""

    http_status = 404


class CannotLinkConflict(PeopleError):
    """A change that would put a face into a person it was marked 'not this person' for."""

    http_status = 409


class FacesDamaged(GalleryDamaged):
    """Stored face embeddings failed verification; the message names each of them."""


class StaleAssignments(PeopleError):
    """A clustering run's snapshot is older than a user decision committed since; run it again."""

    http_status = 409


class NeedsMigration(GalleryNotWritable):
    """A gallery of an older schema opened read-only: it has no face records until it is migrated."""


def face_checksum(face_id: int, blob: bytes) -> int:
    """CRC-32 of (face id, embedding bytes): a changed bit or a blob moved to another face both change it."""
    return zlib.crc32(blob, zlib.crc32(struct.pack("<q", int(face_id))))


@dataclass(frozen=True)
class Person:
    """A named person (identity) or an unnamed cluster; `ref` is how commands and messages address it."""

    kind: str  # "named" or "cluster"
    id: int
    name: str | None = field(default=None, compare=False)  # a person is its kind and id; the name is a label

    @property
    def ref(self) -> str:
        """The name of a named person, `@<id>` for a cluster."""
        return self.name if self.kind == "named" and self.name is not None else f"@{self.id}"

    @property
    def column(self) -> str:
        """The faces/cannot_link column that points at this person."""
        return "identity_id" if self.kind == "named" else "cluster_id"

    def __str__(self) -> str:
        return self.ref


@dataclass(frozen=True)
class FaceRecord:
    """One stored face: its photo, where it is in it, how good it looks, and whose it is."""

    id: int
    photo_path: str
    photo_sha256: str
    face_index: int
    box: tuple[float, float, float, float]
    landmarks: list[list[float]]
    detection_score: float
    raw_norm: float
    face_size: float
    person: Person | None
    assigned_by: str
    has_thumbnail: bool
    has_embedding: bool  # False: its photo was gone at the last reembed (out of search and clustering)

    def to_dict(self) -> dict:
        """JSON-ready dict (the person as its reference, None when unassigned)."""
        out = dict(vars(self))
        out["person"] = self.person.ref if self.person is not None else None
        out["box"] = list(self.box)
        return out


@dataclass(frozen=True)
class PersonInfo:
    """A person with counts: faces (of which user-placed), templates, and a sample face id (the largest:
    greatest face_size, the lowest id among equals; None for a person without faces)."""

    person: Person
    faces: int
    user_faces: int
    templates: int
    sample_face: int | None
    created: float
    updated: float

    def to_dict(self) -> dict:
        """JSON-ready dict."""
        return {"ref": self.person.ref, "kind": self.person.kind, "id": self.person.id, "name": self.person.name,
                "faces": self.faces, "user_faces": self.user_faces, "templates": self.templates,
                "sample_face": self.sample_face, "created": self.created, "updated": self.updated}


@dataclass(frozen=True)
class PersonDetail:
    """A person, their faces, and the faces marked 'not this person' for them."""

    info: PersonInfo
    faces: list[FaceRecord]
    not_faces: list[int]

    def to_dict(self) -> dict:
        """JSON-ready dict."""
        return {**self.info.to_dict(), "face_records": [f.to_dict() for f in self.faces],
                "not_faces": list(self.not_faces)}


@dataclass(frozen=True)
class DamagedFace:
    """A stored face embedding that failed verification."""

    face_id: int
    photo_path: str
    reason: str

    def __str__(self) -> str:
        return f"face {self.face_id} ({self.photo_path}): {self.reason}"


@dataclass
class Assignments:
    """What a clustering run starts from: every face with an embedding, its current person as a label
    (an index into `persons`, −1 unassigned), `fixed` (the label of user-placed faces, −1 for the others)
    and the cannot-links as (face index, label)."""

    face_ids: np.ndarray  # (N,) int64
    embeddings: np.ndarray  # (N, D) float32, unit rows
    labels: np.ndarray  # (N,) int64
    fixed: np.ndarray  # (N,) int64
    persons: list[Person]
    cannot_link: list[tuple[int, int]] = field(default_factory=list)
    decisions: int = 0  # the gallery's count of user decisions when this was read (apply_clustering checks it)

    @property
    def fixed_mask(self) -> np.ndarray:
        """True for the user-placed faces (never moved by a run)."""
        return self.fixed >= 0


@dataclass(frozen=True)
class ClusteringApplied:
    """What `apply_clustering` changed: faces moved, clusters created and removed, and the faces a run put
    into a person they are marked 'not' for (left unassigned instead) or that were user-placed (kept)."""

    moved: int
    new_clusters: list[int]
    removed_clusters: list[int]
    refused_by_cannot_link: list[int]
    kept_user_placed: int
    missing: list[int]

    def to_dict(self) -> dict:
        """JSON-ready dict."""
        return dict(vars(self))


@dataclass(frozen=True)
class UnassignedPage:
    """A page of the unassigned faces (by id), how many there are, and where the next page starts."""

    faces: list[FaceRecord]
    total: int  # unassigned faces (in no person, with an embedding) over all pages
    without_embedding: int  # faces in no person without an embedding (photo gone at a reembed): not listed
    next_after: int | None  # pass as `after` for the next page; None on the last

    def to_dict(self) -> dict:
        """JSON-ready dict."""
        return {"faces": [f.to_dict() for f in self.faces], "total": self.total,
                "without_embedding": self.without_embedding, "next_after": self.next_after}


def _chunks(ids: Sequence[int]) -> Iterator[list[int]]:
    ids = list(ids)
    for start in range(0, len(ids), _CHUNK):
        yield ids[start:start + _CHUNK]


def _marks(ids: Sequence[int]) -> str:
    return ",".join("?" * len(ids))


class People:
    """Face records and people of one open Gallery (schema 3); each change is one transaction."""

    def __init__(self, gallery: Gallery) -> None:
        self.gallery = gallery

    @property
    def path(self):
        """The gallery file."""
        return self.gallery.path

    # -- plumbing ---------------------------------------------------------------------------------------------
    def _require_schema(self) -> None:
        if self.gallery.schema_version < SCHEMA_VERSION:
            raise NeedsMigration(f"gallery {self.path} is schema {self.gallery.schema_version}, open read-only "
                                 f"({self.gallery.read_only}): it holds no face records until it is migrated to "
                                 f"schema {SCHEMA_VERSION}, which needs write access (open it once writable)")

    @contextmanager
    def reading(self) -> Iterator[sqlite3.Connection]:
        """The connection for reads in SQL (Gallery.reading: under its lock, after seeing what other processes
        committed), in one read transaction, so every statement of the block sees the same committed state;
        NeedsMigration for a schema-2 gallery open read-only."""
        self._require_schema()
        with self.gallery.reading() as db:
            if db.in_transaction:  # inside a change: its write transaction is the one snapshot already
                yield db
                return
            db.execute("BEGIN")
            try:
                yield db
            finally:
                if db.in_transaction:  # a read wrote nothing: ending it only lets the snapshot go
                    db.execute("COMMIT")

    @contextmanager
    def change(self, full_reload: bool = False) -> Iterator[sqlite3.Connection]:
        """One write transaction (Gallery.change: the gallery's checks included); after COMMIT the search index
        takes in the templates it wrote, or is reloaded whole (`full_reload`)."""
        self._require_schema()
        with self.gallery.change(full_reload=full_reload) as db:
            yield db

    def _resolve(self, db: sqlite3.Connection, ref: str | Person) -> Person:
        """The person a reference names (`@id` a cluster, anything else a name), as committed now."""
        text = ref.ref if isinstance(ref, Person) else str(ref).strip()
        match = CLUSTER_REF.fullmatch(text)
        if match:
            number = int(match.group(1))
            row = (db.execute("SELECT id FROM clusters WHERE id = ?", (number,)).fetchone()
                   if number <= _MAX_ID else None)
            if row is None:
                raise UnknownPerson(f"gallery {self.path} has no cluster {text} (list the people with "
                                    f"`marginface people list {self.path}`)")
            return Person("cluster", int(row[0]))
        try:
            identity = self.gallery.identity_id(text)
            name = self.gallery.identity_name(identity)
        except UnknownIdentity as err:
            hint = "" if text.startswith("@") else " (clusters are addressed as @ID)"
            raise UnknownPerson(f"{err}{hint}") from err
        return Person("named", identity, name)

    def _existing_faces(self, db: sqlite3.Connection, face_ids: Sequence[int]) -> list[int]:
        """The ids, each once, in the order given; UnknownFace naming those the gallery does not hold."""
        ids = list(dict.fromkeys(int(f) for f in face_ids))
        if not ids:
            raise PeopleError(f"gallery {self.path}: no face ids given")
        found: set[int] = set()
        for chunk in _chunks([f for f in ids if -_MAX_ID - 1 <= f <= _MAX_ID]):
            found |= {r[0] for r in db.execute(f"SELECT id FROM faces WHERE id IN ({_marks(chunk)})", chunk)}
        missing = [f for f in ids if f not in found]
        if missing:
            raise UnknownFace(f"gallery {self.path} has no face {', '.join(map(str, missing[:10]))}"
                              f"{' ...' if len(missing) > 10 else ''} (see `marginface people show`)")
        return ids

    def _faces_of(self, db: sqlite3.Connection, person: Person, by: str | None = None) -> list[int]:
        """The ids of a person's faces (only those placed `by` 'user' or 'auto', when given)."""
        where = "" if by is None else " AND assigned_by = ?"
        return [r[0] for r in db.execute(f"SELECT id FROM faces WHERE {person.column} = ?{where} ORDER BY id",
                                         (person.id,) if by is None else (person.id, by))]

    def _persons_of(self, db: sqlite3.Connection, face_ids: Sequence[int]) -> set[Person]:
        """The people these faces are in now."""
        out: set[Person] = set()
        for chunk in _chunks(face_ids):
            for identity, cluster in db.execute(f"SELECT identity_id, cluster_id FROM faces WHERE id IN "
                                                f"({_marks(chunk)})", chunk):
                if identity is not None or cluster is not None:
                    out.add(Person("named", identity) if identity is not None else Person("cluster", cluster))
        return out

    def _refuse_cannot_link(self, db: sqlite3.Connection, face_ids: Sequence[int], person: Person) -> None:
        """CannotLinkConflict when one of the faces was marked 'not this person' for `person`."""
        conflicts: list[int] = []
        for chunk in _chunks(face_ids):
            conflicts += [r[0] for r in db.execute(
                f"SELECT face_id FROM cannot_link WHERE {person.column} = ? AND implied = 0 AND face_id IN "
                f"({_marks(chunk)})",
                [person.id, *chunk])]
        if conflicts:
            raise CannotLinkConflict(
                f"gallery {self.path}: face {', '.join(map(str, sorted(conflicts)[:10]))} was marked 'not "
                f"{person.ref}'; nothing was changed (move such faces elsewhere with `people split` first)")

    def _place(self, db: sqlite3.Connection, face_ids: Sequence[int], person: Person | None, by: str) -> None:
        """Put faces into `person` (None: unassigned), placed `by` 'user' or 'auto'; templates follow."""
        identity = person.id if person is not None and person.kind == "named" else None
        cluster = person.id if person is not None and person.kind == "cluster" else None
        for chunk in _chunks(face_ids):
            db.execute(f"UPDATE faces SET identity_id = ?, cluster_id = ?, assigned_by = ? WHERE id IN "
                       f"({_marks(chunk)})", [identity, cluster, by, *chunk])
        self.sync_templates(db, face_ids)
        if person is not None and by == USER:  # the user put them here: what a split implied gives way
            for chunk in _chunks(face_ids):
                db.execute(f"DELETE FROM cannot_link WHERE implied = 1 AND {person.column} = ? AND face_id IN "
                           f"({_marks(chunk)})", [person.id, *chunk])
        if person is not None:
            self._touch(db, person)

    def _decided(self, db: sqlite3.Connection) -> None:
        """Count a user decision (inside its transaction), so a clustering run started before it sees it."""
        db.execute("INSERT INTO meta (key, value) VALUES ('decisions', '1') ON CONFLICT(key) DO UPDATE SET "
                   "value = CAST(CAST(value AS INTEGER) + 1 AS TEXT)")

    def _decisions(self, db: sqlite3.Connection) -> int:
        row = db.execute("SELECT value FROM meta WHERE key = 'decisions'").fetchone()
        return int(row[0]) if row is not None else 0

    def _touch(self, db: sqlite3.Connection, person: Person) -> None:
        table = "identities" if person.kind == "named" else "clusters"
        db.execute(f"UPDATE {table} SET updated = ? WHERE id = ?", (time.time(), person.id))

    def sync_templates(self, db: sqlite3.Connection, face_ids: Sequence[int]) -> None:
        """Make the templates of these faces what their placement says: one per user-placed face of a named
        person (its embedding, verified first), none otherwise (inside a `change`)."""
        now = time.time()
        for chunk in _chunks(face_ids):
            marks = _marks(chunk)
            db.execute(f"DELETE FROM templates WHERE face_id IN ({marks}) AND NOT EXISTS (SELECT 1 FROM faces f "
                       "WHERE f.id = templates.face_id AND f.identity_id = templates.identity_id AND "
                       "f.assigned_by = 'user' AND f.embedding IS NOT NULL)", chunk)
            rows = db.execute(
                f"SELECT f.id, f.identity_id, f.embedding, f.checksum, f.detection_score, p.path FROM faces f "
                f"JOIN photos p ON p.id = f.photo_id WHERE f.id IN ({marks}) AND f.identity_id IS NOT NULL AND "
                "f.assigned_by = 'user' AND f.embedding IS NOT NULL AND NOT EXISTS (SELECT 1 FROM templates t "
                "WHERE t.face_id = f.id)", chunk).fetchall()
            self._refuse_damaged([(r[0], r[2], r[3], r[5]) for r in rows])
            for face_id, identity, blob, _, score, _ in rows:
                template = db.execute(
                    "INSERT INTO templates (identity_id, embedding, source_sha256, detection_score, created, "
                    "face_id) VALUES (?, ?, NULL, ?, ?, ?)", (identity, blob, score, now, face_id)).lastrowid
                db.execute("UPDATE templates SET checksum = ? WHERE id = ?",
                           (template_checksum(template, identity, blob), template))

    def _damaged(self, rows: list[tuple[int, object, int | None, str]]) -> list[DamagedFace]:
        """The face rows (id, embedding, checksum, photo path) whose embedding fails verification."""
        reasons, _, _ = verify_embeddings([(r[0], r[1], r[2]) for r in rows], self.gallery.fingerprint.embedding_dim,
                                          face_checksum, "or face id")
        return [DamagedFace(int(r[0]), r[3], reasons[r[0]]) for r in rows if r[0] in reasons]

    def _refuse_damaged(self, rows: list[tuple[int, object, int | None, str]]) -> None:
        damaged = self._damaged(rows)
        if damaged:
            raise FacesDamaged(f"gallery {self.path} holds {len(damaged)} damaged face embedding(s): "
                               f"{first_of(damaged)} "
                               f"(list them with `marginface people check {self.path}`; `marginface "
                               f"gallery reembed` recomputes them from their photos, --drop deletes them)")

    def _drop_empty_clusters(self, db: sqlite3.Connection, clusters: set[int]) -> list[int]:
        """Delete those of `clusters` left without faces and without cannot-links; returns their ids."""
        removed = []
        for cluster in sorted(clusters):
            if db.execute("SELECT 1 FROM faces WHERE cluster_id = ? UNION ALL SELECT 1 FROM cannot_link WHERE "
                          "cluster_id = ? AND implied = 0 LIMIT 1", (cluster, cluster)).fetchone() is None:
                db.execute("DELETE FROM clusters WHERE id = ?", (cluster,))
                removed.append(cluster)
        return removed

    def _clusters_of(self, db: sqlite3.Connection, face_ids: Sequence[int]) -> set[int]:
        found: set[int] = set()
        for chunk in _chunks(face_ids):
            found |= {r[0] for r in db.execute(
                f"SELECT DISTINCT cluster_id FROM faces WHERE cluster_id IS NOT NULL AND id IN ({_marks(chunk)})",
                chunk)}
        return found

    def _new_cluster(self, db: sqlite3.Connection) -> Person:
        now = time.time()
        return Person("cluster", int(db.execute("INSERT INTO clusters (created, updated) VALUES (?, ?)",
                                                (now, now)).lastrowid))

    # -- adding faces -----------------------------------------------------------------------------------------
    def setting(self, key: str) -> str | None:
        """A value stored in the gallery's meta table (e.g. the clustering settings), or None."""
        with self.reading() as db:
            row = db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else str(row[0])

    def known_photo(self, sha256: str) -> bool:
        """Whether a photo of these bytes was already scanned (with or without faces)."""
        with self.reading() as db:
            return db.execute("SELECT 1 FROM photos WHERE sha256 = ?", (sha256,)).fetchone() is not None

    def add_faces(self, photo_path: str, sha256: str, faces: list[FaceResult],
                  thumbnails: Sequence[bytes | None] | None = None, *,
                  fingerprint: ModelFingerprint | None = None) -> list[int]:
        """Store every face of one photo, unassigned, in one transaction; returns their ids ([] when a photo of
        these bytes is already stored). A photo without faces is recorded too, so a rescan skips it.
        `thumbnails` (encoded images, one per face, or None) are kept only when given."""
        self.gallery.check_fingerprint(fingerprint)
        if thumbnails is not None and len(thumbnails) != len(faces):
            raise PeopleError(f"gallery {self.path}: {photo_path}: {len(thumbnails)} thumbnails for {len(faces)} faces")
        vectors = [self.gallery.unit_embedding(face.embedding) for face in faces]
        now = time.time()
        added: list[int] = []
        with self.change() as db:
            if db.execute("SELECT 1 FROM photos WHERE sha256 = ?", (sha256,)).fetchone() is not None:
                return []
            photo = db.execute("INSERT INTO photos (path, sha256, faces, added) VALUES (?, ?, ?, ?)",
                               (str(photo_path), sha256, len(faces), now)).lastrowid
            for index, (face, vector) in enumerate(zip(faces, vectors, strict=True)):
                blob = vector.astype("<f4").tobytes()
                thumbnail = thumbnails[index] if thumbnails is not None else None
                face_id = db.execute(
                    "INSERT INTO faces (photo_id, face_index, box, landmarks, detection_score, raw_norm, face_size, "
                    "thumbnail, embedding, created) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (photo, index, json.dumps([float(v) for v in face.box]),
                     json.dumps(np.asarray(face.landmarks, float).tolist()), float(face.detection_score),
                     float(face.raw_norm), float(face.face_size), thumbnail, blob, now)).lastrowid
                db.execute("UPDATE faces SET checksum = ? WHERE id = ?", (face_checksum(face_id, blob), face_id))
                added.append(int(face_id))
        return added

    # -- clustering glue --------------------------------------------------------------------------------------
    def persons(self) -> list[Person]:
        """Every named person (by name) then every cluster (by id)."""
        with self.reading() as db:
            return self._persons(db)

    def _persons(self, db: sqlite3.Connection) -> list[Person]:
        named = [Person("named", int(i), n) for i, n in db.execute("SELECT id, name FROM identities ORDER BY name")]
        return named + [Person("cluster", int(c)) for (c,) in db.execute("SELECT id FROM clusters ORDER BY id")]

    def assignments(self) -> Assignments:
        """Every face with an embedding, its current label, fixed label and cannot-links (for a clustering run);
        FacesDamaged when any stored face embedding fails verification."""
        with self.reading() as db:
            rows = db.execute("SELECT f.id, f.embedding, f.checksum, p.path, f.identity_id, f.cluster_id, "
                              "f.assigned_by FROM faces f JOIN photos p ON p.id = f.photo_id WHERE f.embedding IS "
                              "NOT NULL ORDER BY f.id").fetchall()
            persons = self._persons(db)
            links = db.execute("SELECT face_id, identity_id, cluster_id FROM cannot_link").fetchall()
            decisions = self._decisions(db)
        self._refuse_damaged([(r[0], r[1], r[2], r[3]) for r in rows])
        dim = self.gallery.fingerprint.embedding_dim
        label_of = {(p.kind, p.id): k for k, p in enumerate(persons)}
        labels = np.array([label_of[("named", r[4])] if r[4] is not None else
                           label_of[("cluster", r[5])] if r[5] is not None else -1 for r in rows], np.int64)
        fixed = np.where(np.array([r[6] == USER for r in rows], bool), labels, -1).astype(np.int64)
        index_of = {r[0]: i for i, r in enumerate(rows)}
        cannot = sorted((index_of[f], label_of[("named", i)] if i is not None else label_of[("cluster", c)])
                        for f, i, c in links if f in index_of)
        embeddings = (np.frombuffer(b"".join(r[1] for r in rows), "<f4").reshape(-1, dim).astype(np.float32)
                      if rows else np.zeros((0, dim), np.float32))
        return Assignments(np.array([r[0] for r in rows], np.int64), embeddings, labels, fixed, persons, cannot,
                           decisions)

    def unassigned(self) -> list[int]:
        """Ids of the unassigned faces (UNASSIGNED: in no person, with an embedding), by id."""
        with self.reading() as db:
            return [r[0] for r in db.execute(f"SELECT id FROM faces WHERE {UNASSIGNED} ORDER BY id")]

    def unassigned_page(self, after: int = 0, limit: int = 100) -> UnassignedPage:
        """At most `limit` unassigned faces with an id above `after` (a face id, so placing faces between two
        pages skips none), their total, and the faces in no person without an embedding, in one read."""
        after, limit = int(after), int(limit)
        if not (0 <= after <= _MAX_ID and 1 <= limit < _MAX_ID):
            raise PeopleError(f"gallery {self.path}: a page of unassigned faces needs 0 <= after <= {_MAX_ID} and "
                              f"1 <= limit < {_MAX_ID}, got after {after}, limit {limit}")
        with self.reading() as db:  # one snapshot: the page and its counts agree whoever commits meanwhile
            records = self._records(db, f"{UNASSIGNED} AND f.id > ?", [after], limit=limit + 1)  # one more: a next?
            total, hidden = db.execute("SELECT SUM(embedding IS NOT NULL), SUM(embedding IS NULL) FROM faces WHERE "
                                       f"{IN_NO_PERSON}").fetchone()
        next_after = records[limit - 1].id if len(records) > limit else None
        return UnassignedPage(records[:limit], int(total or 0), int(hidden or 0), next_after)

    def apply_clustering(self, face_ids: Sequence[int], labels: Sequence[int], *,
                         targets: Mapping[int, Person] | None = None, meta: Mapping[str, str] | None = None,
                         decisions: int | None = None) -> ClusteringApplied:
        """Write a clustering run's labels (−1: unclustered) for the faces given, in one transaction.

        `targets` names the person some labels stand for (e.g. a named person new faces were matched to);
        every other group of equal labels is matched to the current person it overlaps most (user-placed
        faces count first), one group per person, so cluster ids stay stable across runs; an unmatched group
        becomes a new cluster. `meta` rows (e.g. the run's settings) are written in the same transaction.
        `decisions` (Assignments.decisions of the snapshot the labels came from): StaleAssignments, nothing
        written, when a user decision was committed since, since the labels did not see it.
        User-placed faces are never moved, a face is never put into a person it is
        marked 'not' for (it is left unassigned), and clusters left empty are removed. Faces deleted since
        the snapshot are skipped (listed in `missing`)."""
        ids = [int(f) for f in face_ids]
        labels = [int(v) for v in np.asarray(labels).reshape(-1)]
        if len(ids) != len(labels):
            raise PeopleError(f"gallery {self.path}: {len(labels)} labels for {len(ids)} faces")
        with self.change() as db:
            if decisions is not None and self._decisions(db) != decisions:
                raise StaleAssignments(f"gallery {self.path}: a person was named, merged, split, marked or removed "
                                       "while this clustering run was computed; nothing was written (run it again)")
            current: dict[int, tuple[Person | None, str]] = {}
            for chunk in _chunks(ids):
                for face, identity, cluster, by in db.execute(
                        f"SELECT id, identity_id, cluster_id, assigned_by FROM faces WHERE id IN ({_marks(chunk)})",
                        chunk):
                    person = (Person("named", identity) if identity is not None else
                              Person("cluster", cluster) if cluster is not None else None)
                    current[face] = (person, by)
            missing = [f for f in ids if f not in current]
            groups: dict[int, list[int]] = {}
            for face, label in zip(ids, labels, strict=True):
                if face in current and label >= 0:
                    groups.setdefault(label, []).append(face)
            overlap: dict[tuple[int, Person], int] = {}
            for label, members in groups.items():
                for face in members:
                    person, by = current[face]
                    if person is not None:
                        key = (label, person)
                        overlap[key] = overlap.get(key, 0) + (1_000_000 if by == USER else 1)
            target: dict[int, Person] = {}
            for label, person in (targets or {}).items():
                table = "identities" if person.kind == "named" else "clusters"
                if db.execute(f"SELECT 1 FROM {table} WHERE id = ?", (person.id,)).fetchone() is None:
                    raise StaleAssignments(f"gallery {self.path}: {person.ref} was removed or merged while this "
                                           "clustering run was computed; nothing was written (run it again)")
                target[int(label)] = person
            taken: set[Person] = set(target.values())
            for (label, person), _ in sorted(overlap.items(), key=lambda item: (-item[1], item[0][0],
                                                                                 item[0][1].kind, item[0][1].id)):
                if label not in target and person not in taken:
                    target[label] = person
                    taken.add(person)
            new_clusters = []
            for label in sorted(groups):
                if label not in target and any(current[f][1] != USER for f in groups[label]):
                    target[label] = self._new_cluster(db)
                    new_clusters.append(target[label].id)
            cannot = set()
            for chunk in _chunks(ids):
                for face, identity, cluster in db.execute(
                        f"SELECT face_id, identity_id, cluster_id FROM cannot_link WHERE face_id IN "
                        f"({_marks(chunk)})", chunk):
                    cannot.add((face, Person("named", identity) if identity is not None
                                else Person("cluster", cluster)))
            moves: dict[Person | None, list[int]] = {}
            refused, kept, left = [], 0, set()
            for face, label in zip(ids, labels, strict=True):
                if face not in current:
                    continue
                person, by = current[face]
                if by == USER:
                    kept += 1
                    continue
                goal = target.get(label) if label >= 0 else None
                if goal is not None and (face, goal) in cannot:
                    refused.append(face)
                    goal = None
                if goal != person:
                    moves.setdefault(goal, []).append(face)
                    if person is not None and person.kind == "cluster":
                        left.add(person.id)
            for goal, members in moves.items():
                self._place(db, members, goal, AUTO)
            if meta:
                db.executemany("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", meta.items())
            removed = self._drop_empty_clusters(db, left)
        applied = ClusteringApplied(sum(map(len, moves.values())), new_clusters, removed, refused, kept, missing)
        log.info("gallery %s: clustering applied: %d faces moved, %d new clusters, %d removed, %d kept from a "
                 "'not this person' mark", self.path, applied.moved, len(new_clusters), len(removed), len(refused))
        return applied

    # -- manual decisions -------------------------------------------------------------------------------------
    def name(self, ref: str | Person, name: str) -> Person:
        """Name a cluster (it becomes a named person, its faces user-placed and templates) or rename a named
        person; when `name` is already someone's, the two are merged into that person. The name is stripped of
        surrounding spaces; one that reads the same as another person's (name_spelling) is refused
        (LookAlikeName: Gallery.refuse_look_alike, the rule enrolment and rename follow too)."""
        name = check_identity_name(name)
        if CLUSTER_REF.fullmatch(name):
            raise PeopleError(f"gallery {self.path}: {name!r} cannot be a name: @ID addresses clusters")
        with self.change() as db:
            self._decided(db)
            person = self._resolve(db, ref)
            try:
                existing: int | None = self.gallery.identity_id(name)
            except UnknownIdentity:
                existing = None
                self.gallery.refuse_look_alike(name, identity=person.id if person.kind == "named" else None,
                                               person=person.ref)
            if existing is not None and (person.kind, person.id) != ("named", existing):
                return self._merge(db, Person("named", existing, self.gallery.identity_name(existing)), person)
            if person.kind == "named":
                db.execute("UPDATE identities SET name = ?, updated = ? WHERE id = ?", (name, time.time(), person.id))
                return Person("named", person.id, name)
            now = time.time()
            named = Person("named", int(db.execute("INSERT INTO identities (name, created, updated) VALUES (?, ?, ?)",
                                                   (name, now, now)).lastrowid), name)
            return self._merge(db, named, person)

    def merge(self, a: str | Person, b: str | Person) -> Person:
        """Merge two people into one (their faces user-placed in it); returns the person kept: the named one
        when one is named, `a` otherwise. CannotLinkConflict when a face of one was marked 'not' the other."""
        with self.change() as db:
            self._decided(db)
            first, second = self._resolve(db, a), self._resolve(db, b)
            if first == second:
                raise PeopleError(f"gallery {self.path}: cannot merge {first.ref} with itself")
            if first.kind == "cluster" and second.kind == "named":
                first, second = second, first
            return self._merge(db, first, second)

    def _merge(self, db: sqlite3.Connection, keep: Person, gone: Person) -> Person:
        moving = self._faces_of(db, gone)
        self._refuse_cannot_link(db, moving, keep)
        self._refuse_cannot_link(db, self._faces_of(db, keep), gone)
        # the user said these two are one person: every face of both is theirs now, so no run splits them again
        self._place(db, moving + self._faces_of(db, keep, by=AUTO), keep, USER)
        if gone.kind == "named":  # enrolled templates (photos, no face records) follow their person
            db.execute("DELETE FROM templates WHERE identity_id = ? AND face_id IS NULL AND source_sha256 IN "
                       "(SELECT source_sha256 FROM templates WHERE identity_id = ?)", (gone.id, keep.id))
            for template, blob in db.execute("SELECT id, embedding FROM templates WHERE identity_id = ? AND "
                                             "face_id IS NULL", (gone.id,)).fetchall():
                db.execute("UPDATE templates SET identity_id = ?, checksum = ? WHERE id = ?",
                           (keep.id, template_checksum(template, keep.id, blob), template))
        # explicit marks follow the person; a split's implied ones do not (the merge undoes that split)
        db.execute(f"INSERT OR IGNORE INTO cannot_link (face_id, {keep.column}, created) SELECT face_id, ?, created "
                   f"FROM cannot_link WHERE {gone.column} = ? AND implied = 0", (keep.id, gone.id))
        table = "identities" if gone.kind == "named" else "clusters"
        db.execute(f"DELETE FROM {table} WHERE id = ?", (gone.id,))
        log.info("gallery %s: merged %s into %s (%d faces)", self.path, gone.ref, keep.ref, len(moving))
        return keep

    def split(self, face_ids: Sequence[int], into: str | Person | None = None) -> Person:
        """Move faces (user-placed) into a new cluster, or into the person `into`; returns that person.

        The faces a run placed in the people they came from stay there, marked 'not' the target (the user
        separated the two groups, so no later run joins them again); such an implied mark gives way when the
        user later puts one of those faces into the target, where an explicit 'not' is refused."""
        with self.change() as db:
            self._decided(db)
            ids = self._existing_faces(db, face_ids)
            target = self._resolve(db, into) if into is not None else None
            if target is not None:
                self._refuse_cannot_link(db, ids, target)
            left = self._clusters_of(db, ids)
            sources = self._persons_of(db, ids)
            target = target or self._new_cluster(db)
            self._place(db, ids, target, USER)
            rest = [face for person in sources - {target} for face in self._faces_of(db, person, by=AUTO)]
            db.executemany(f"INSERT OR IGNORE INTO cannot_link (face_id, {target.column}, created, implied) VALUES "
                           "(?, ?, ?, 1)", [(face, target.id, time.time()) for face in rest])
            self._drop_empty_clusters(db, left - {target.id if target.kind == "cluster" else -1})
        return target

    def not_this_person(self, face_ids: Sequence[int], ref: str | Person) -> list[int]:
        """Mark faces 'not this person' (a cannot-link every later run honours) and take those in that person
        out of it (unassigned); returns the ids taken out."""
        now = time.time()
        with self.change() as db:
            self._decided(db)
            ids = self._existing_faces(db, face_ids)
            person = self._resolve(db, ref)
            db.executemany(f"DELETE FROM cannot_link WHERE face_id = ? AND {person.column} = ? AND implied = 1",
                           [(face, person.id) for face in ids])
            db.executemany(f"INSERT OR IGNORE INTO cannot_link (face_id, {person.column}, created) VALUES (?, ?, ?)",
                           [(face, person.id, now) for face in ids])
            members = set(self._faces_of(db, person))
            out = [face for face in ids if face in members]
            self._place(db, out, None, AUTO)
            self._touch(db, person)
        return out

    def remove(self, ref: str | Person) -> dict:
        """Delete a person with their faces and templates (biometric data); the photos stay recorded as scanned,
        so a rescan does not bring those faces back. Returns what was deleted."""
        with self.change() as db:
            self._decided(db)
            person = self._resolve(db, ref)
            faces = self._faces_of(db, person)
            templates = 0
            if person.kind == "named":
                templates = db.execute("DELETE FROM templates WHERE identity_id = ?", (person.id,)).rowcount
            for chunk in _chunks(faces):
                db.execute(f"DELETE FROM faces WHERE id IN ({_marks(chunk)})", chunk)
            if person.kind == "named":
                db.execute("DELETE FROM identities WHERE id = ?", (person.id,))
            else:
                db.execute("DELETE FROM clusters WHERE id = ?", (person.id,))
        log.info("gallery %s: removed %s (%d faces, %d templates)", self.path, person.ref, len(faces), templates)
        return {"person": person.ref, "faces": len(faces), "templates": templates}

    # -- reading ----------------------------------------------------------------------------------------------
    def people(self) -> list[PersonInfo]:
        """Every named person (by name), then the clusters (largest first, then by id)."""
        with self.reading() as db:
            return self._infos(db, self._persons(db))

    def _infos(self, db: sqlite3.Connection, persons: list[Person]) -> list[PersonInfo]:
        """PersonInfo of `persons` (named ones as given, then the clusters largest first, then by id) in a few
        set-based statements: one GROUP BY over the faces in a person (a single person's through its index) gives
        each person's faces, user faces and largest face size; the sample face, the largest face with the lowest id
        among equals, is then looked up per person through faces_identity / faces_cluster: no face is ranked."""
        only = persons[0] if len(persons) == 1 else None
        where, args = (f"{only.column} = ?", [only.id]) if only is not None else (PLACED, [])
        stats = {("named" if identity is not None else "cluster", identity if identity is not None else cluster):
                 (faces, user, sample) for identity, cluster, faces, user, sample in db.execute(
            "WITH per AS (SELECT identity_id, cluster_id, COUNT(*) AS faces, SUM(assigned_by = 'user') AS user, "
            f"MAX(face_size) AS largest FROM faces WHERE {where} GROUP BY identity_id, cluster_id) "
            "SELECT identity_id, cluster_id, faces, user, CASE WHEN identity_id IS NOT NULL "
            "THEN (SELECT MIN(id) FROM faces f WHERE f.identity_id = per.identity_id AND f.face_size = per.largest) "
            "ELSE (SELECT MIN(id) FROM faces f WHERE f.cluster_id = per.cluster_id AND f.face_size = per.largest) "
            "END FROM per", args)}
        if only is None:
            templates = dict(db.execute("SELECT identity_id, COUNT(*) FROM templates GROUP BY identity_id").fetchall())
            times = {("named", i): (c, u) for i, c, u in db.execute("SELECT id, created, updated FROM identities")}
            times.update({("cluster", i): (c, u) for i, c, u in db.execute("SELECT id, created, updated FROM "
                                                                           "clusters")})
        else:
            templates = {only.id: db.execute("SELECT COUNT(*) FROM templates WHERE identity_id = ?",
                                             (only.id,)).fetchone()[0]} if only.kind == "named" else {}
            table = "identities" if only.kind == "named" else "clusters"
            times = {(only.kind, only.id): db.execute(f"SELECT created, updated FROM {table} WHERE id = ?",
                                                      (only.id,)).fetchone()}
        out = []
        for person in persons:
            key = (person.kind, person.id)
            faces, user, sample = stats.get(key, (0, 0, None))
            created, updated = times[key]
            out.append(PersonInfo(person, int(faces), int(user or 0),
                                  int(templates.get(person.id, 0)) if person.kind == "named" else 0,
                                  None if sample is None else int(sample), float(created), float(updated)))
        named = [i for i in out if i.person.kind == "named"]
        clusters = sorted((i for i in out if i.person.kind == "cluster"), key=lambda i: (-i.faces, i.person.id))
        return named + clusters

    def show(self, ref: str | Person) -> PersonDetail:
        """One person with every face record and the faces marked 'not' them."""
        with self.reading() as db:
            person = self._resolve(db, ref)
            [info] = self._infos(db, [person])
            faces = self._records(db, f"f.{person.column} = ?", [person.id])
            not_faces = [r[0] for r in db.execute(f"SELECT face_id FROM cannot_link WHERE {person.column} = ? AND "
                                                   "implied = 0 ORDER BY face_id", (person.id,))]
        return PersonDetail(info, faces, not_faces)

    def faces(self, face_ids: Sequence[int] | None = None) -> list[FaceRecord]:
        """The face records of these ids (every face when None), by id; UnknownFace for ids not held."""
        with self.reading() as db:
            if face_ids is None:
                return self._records(db, "1", [])
            ids = self._existing_faces(db, face_ids)
            out: list[FaceRecord] = []
            for chunk in _chunks(ids):
                out += self._records(db, f"f.id IN ({_marks(chunk)})", chunk)
        return sorted(out, key=lambda f: f.id)

    def _records(self, db: sqlite3.Connection, where: str, args: list, limit: int | None = None) -> list[FaceRecord]:
        """The face records matching `where` (over faces f), by id, at most `limit` of them."""
        rows = db.execute(
            "SELECT f.id, p.path, p.sha256, f.face_index, f.box, f.landmarks, f.detection_score, f.raw_norm, "
            "f.face_size, f.identity_id, i.name, f.cluster_id, f.assigned_by, f.thumbnail IS NOT NULL, "
            "f.embedding IS NOT NULL FROM faces f JOIN photos p ON p.id = f.photo_id LEFT JOIN identities i ON "
            f"i.id = f.identity_id WHERE {where} ORDER BY f.id" + ("" if limit is None else " LIMIT ?"),
            [*args] if limit is None else [*args, limit]).fetchall()
        out = []
        for (face, path, sha, index, box, marks, score, norm, size, identity, name, cluster, by, thumb,
             embedded) in rows:
            person = (Person("named", identity, name) if identity is not None else
                      Person("cluster", cluster) if cluster is not None else None)
            out.append(FaceRecord(int(face), path, sha, int(index), tuple(json.loads(box)), json.loads(marks),
                                  float(score), float(norm), float(size), person, by, bool(thumb), bool(embedded)))
        return out

    def thumbnail(self, face_id: int) -> bytes | None:
        """The stored thumbnail of a face (an encoded aligned crop), or None when none was kept."""
        with self.reading() as db:
            row = (db.execute("SELECT thumbnail FROM faces WHERE id = ?", (int(face_id),)).fetchone()
                   if abs(int(face_id)) <= _MAX_ID else None)
        if row is None:
            raise UnknownFace(f"gallery {self.path} has no face {face_id}")
        return row[0]

    def counts(self) -> dict:
        """Photos, faces, unassigned faces (UNASSIGNED: in no person, with an embedding, as `unassigned` lists
        them), faces without an embedding (in a person or not: out of search and clustering), named people and
        clusters."""
        with self.reading() as db:
            return self._counts(db)

    def listing(self) -> tuple[list[PersonInfo], dict]:
        """`people()` and `counts()` from one read transaction, so the two agree under a concurrent writer."""
        with self.reading() as db:
            return self._infos(db, self._persons(db)), self._counts(db)

    @staticmethod
    def _counts(db: sqlite3.Connection) -> dict:
        """The counts `counts` returns, read on `db` (inside the caller's read transaction)."""
        photos, faces, unassigned, stale = db.execute(
            f"SELECT (SELECT COUNT(*) FROM photos), COUNT(*), SUM({UNASSIGNED}), SUM(embedding IS NULL) "
            "FROM faces").fetchone()
        named = db.execute("SELECT COUNT(*) FROM identities").fetchone()[0]
        clusters = db.execute("SELECT COUNT(*) FROM clusters").fetchone()[0]
        return {"photos": int(photos), "faces": int(faces), "unassigned": int(unassigned or 0),
                "without_embedding": int(stale or 0), "named": int(named), "clusters": int(clusters)}

    # -- damage -----------------------------------------------------------------------------------------------
    def check(self) -> list[DamagedFace]:
        """Every stored face embedding that fails verification (empty: all intact)."""
        with self.reading() as db:
            rows = db.execute("SELECT f.id, f.embedding, f.checksum, p.path FROM faces f JOIN photos p ON "
                              "p.id = f.photo_id WHERE f.embedding IS NOT NULL ORDER BY f.id").fetchall()
        return self._damaged(rows)

    def drop_faces(self, face_ids: Sequence[int]) -> int:
        """Delete faces (e.g. the damaged ones `check` found) with their templates; returns how many."""
        with self.change() as db:
            self._decided(db)
            ids = self._existing_faces(db, face_ids)
            left = self._clusters_of(db, ids)
            dropped = 0
            for chunk in _chunks(ids):
                dropped += db.execute(f"DELETE FROM faces WHERE id IN ({_marks(chunk)})", chunk).rowcount
            self._drop_empty_clusters(db, left)
        return dropped


def person_ref(text: str) -> str:
    """A person reference as typed, normalised like names (NFC, no surrounding spaces)."""
    return normalize_identity_name(text)
