"""A persistent gallery of known people: SQLite (WAL) on disk, an exact in-memory template index for search.

Schema (see docs/recognition.md): meta(key, value) holds the model fingerprint, model and detector paths
and the operating threshold; identities(id, name UNIQUE, created, updated); templates(id, identity_id,
embedding float32 blob, source_sha256, detection_score, created) with (identity_id, source_sha256) UNIQUE.
Every change is one transaction, so a crash loses nothing committed and leaves nothing half-written.
The gallery refuses embeddings or searches from a model whose fingerprint differs from its own.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import threading
import time
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from marginface.infer.recognizer import FaceResult, ModelFingerprint
from marginface.infer.search import TemplateIndex, unit_rows
from marginface.infer.thresholds import Threshold

log = logging.getLogger(__name__)
SCHEMA_VERSION = 1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS identities (
    id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE, created REAL NOT NULL, updated REAL NOT NULL);
CREATE TABLE IF NOT EXISTS templates (
    id INTEGER PRIMARY KEY,
    identity_id INTEGER NOT NULL REFERENCES identities(id) ON DELETE CASCADE,
    embedding BLOB NOT NULL,
    source_sha256 TEXT,
    detection_score REAL,
    created REAL NOT NULL,
    UNIQUE (identity_id, source_sha256));
CREATE INDEX IF NOT EXISTS templates_identity ON templates(identity_id);
"""


class GalleryError(ValueError):
    """A gallery operation that cannot be done: missing file or identity, duplicate name, bad embedding."""


class GalleryModelMismatch(GalleryError):
    """Embeddings or a search from a model other than the one the gallery was built with."""


@dataclass(frozen=True)
class Match:
    """One candidate identity and its best template score."""

    name: str
    score: float


@dataclass
class Identified:
    """A face with its decision: the best identity at or above the threshold, else unknown (name None)."""

    face: FaceResult
    name: str | None
    score: float
    threshold: Threshold
    candidates: list[Match] = field(default_factory=list)

    def to_dict(self) -> dict:
        """JSON-ready dict: name ("unknown" when rejected), score, threshold, candidates and the face's fields."""
        score = self.score if np.isfinite(self.score) else None  # None: the gallery is empty
        return {"name": self.name if self.name is not None else "unknown", "score": score,
                "known": self.name is not None, "threshold": self.threshold.to_dict(),
                "candidates": [{"name": m.name, "score": m.score} for m in self.candidates], **self.face.to_dict()}


@dataclass(frozen=True)
class IdentityInfo:
    """One enrolled person: name, template count and timestamps (seconds since the epoch)."""

    name: str
    templates: int
    created: float
    updated: float

    def to_dict(self) -> dict:
        """JSON-ready dict."""
        return dict(vars(self))


class Gallery:
    """Identities with several templates each, stored in SQLite; exact top-k search by identity."""

    def __init__(self, path: Path, connection: sqlite3.Connection) -> None:
        """Use Gallery.create or Gallery.open."""
        self.path = path
        self._db = connection
        self._lock = threading.RLock()
        meta = dict(self._db.execute("SELECT key, value FROM meta").fetchall())
        try:
            self.fingerprint = ModelFingerprint.from_dict(json.loads(meta["fingerprint"]))
            self.threshold = Threshold.from_dict(json.loads(meta["threshold"]))
            self.model_path: str = meta["model"]
            self.detector_path: str | None = json.loads(meta["detector"])
            self.flip: bool = json.loads(meta.get("flip", "true"))
        except (KeyError, ValueError, TypeError) as err:
            raise GalleryError(f"{path}: not a marginface gallery (meta table incomplete: {err})") from err
        self._names: dict[int, str] = {}
        self._load()

    # -- lifecycle --------------------------------------------------------------------------------------
    @staticmethod
    def _connect(path: Path) -> sqlite3.Connection:
        try:
            db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None, timeout=30.0)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=FULL")
            db.execute("PRAGMA foreign_keys=ON")
        except sqlite3.OperationalError as err:
            raise _not_writable(path, err) from err
        return db

    @classmethod
    def create(cls, path: str | Path, fingerprint: ModelFingerprint, threshold: Threshold, *, model: str | Path,
               detector: str | Path | None, flip: bool = True) -> Gallery:
        """A new, empty gallery file bound to one model (fingerprint), detector, flip test and threshold."""
        path = Path(path)
        if path.exists():
            raise GalleryError(f"gallery {path} already exists (open it, or remove the file first)")
        path.parent.mkdir(parents=True, exist_ok=True)
        db = cls._connect(path)
        with _transaction(db, path):
            for statement in filter(str.strip, _SCHEMA.split(";")):
                db.execute(statement)
            rows = {"schema_version": str(SCHEMA_VERSION), "fingerprint": json.dumps(fingerprint.to_dict()),
                    "threshold": json.dumps(threshold.to_dict()), "model": str(Path(model).resolve()),
                    "detector": json.dumps(str(Path(detector).resolve()) if detector is not None else None),
                    "flip": json.dumps(bool(flip)), "created": str(time.time())}
            db.executemany("INSERT INTO meta (key, value) VALUES (?, ?)", rows.items())
        log.info("created gallery %s (threshold %.4f from %s)", path, threshold.value, threshold.source)
        return cls(path, db)

    @classmethod
    def open(cls, path: str | Path) -> Gallery:
        """An existing gallery file."""
        path = Path(path)
        if path.is_dir():
            raise GalleryError(f"{path} is a folder, not a gallery file (a gallery is one SQLite file, e.g. people.db)")
        if not path.is_file():
            raise GalleryError(f"gallery {path} does not exist (create it with `marginface gallery create`)")
        try:  # look read-only first, so that opening a file that is not a gallery never changes it
            probe = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
            try:
                version = probe.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
            finally:
                probe.close()
        except sqlite3.DatabaseError as err:
            if "unable to open" in str(err):  # not even readable: SQLite needs a writable folder for its journal
                raise _not_writable(path, err) from err
            raise GalleryError(f"{path}: not a marginface gallery ({err})") from err
        db = cls._connect(path)
        if version is None or int(version[0]) != SCHEMA_VERSION:
            raise GalleryError(f"{path}: gallery schema version {version and version[0]}, expected {SCHEMA_VERSION}")
        return cls(path, db)

    def close(self) -> None:
        """Close the database connection."""
        with self._lock:
            self._db.close()

    def __enter__(self) -> Gallery:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _load(self) -> None:
        self._index = TemplateIndex(self.fingerprint.embedding_dim)
        self._version = self._db.execute("PRAGMA data_version").fetchone()[0]
        self._names = dict(self._db.execute("SELECT id, name FROM identities").fetchall())
        rows = self._db.execute("SELECT id, identity_id, embedding FROM templates ORDER BY id").fetchall()
        if rows:
            vectors = np.stack([self._vector(blob, tid) for tid, _, blob in rows])
            self._index.add(np.array([r[0] for r in rows]), np.array([r[1] for r in rows]), vectors)

    def _vector(self, blob: bytes, template_id: int) -> np.ndarray:
        vector = np.frombuffer(blob, dtype="<f4")
        if vector.shape != (self.fingerprint.embedding_dim,):
            raise GalleryError(f"{self.path}: template {template_id} has {vector.size} values, "
                               f"expected {self.fingerprint.embedding_dim}")
        return vector

    def _sync(self) -> None:
        """Reload the in-memory index when another connection (e.g. another process) committed changes."""
        if self._db.execute("PRAGMA data_version").fetchone()[0] != self._version:
            log.info("gallery %s changed on disk; reloading", self.path)
            self._load()

    # -- checks -----------------------------------------------------------------------------------------
    def check_fingerprint(self, fingerprint: ModelFingerprint | None) -> None:
        """Raise GalleryModelMismatch unless `fingerprint` (when given) is the gallery's model."""
        if fingerprint is not None and fingerprint.key != self.fingerprint.key:
            raise GalleryModelMismatch(
                f"gallery {self.path} holds embeddings of model {self.fingerprint.key} ({self.model_path}); "
                f"the embeddings given come from model {fingerprint.key}")

    def _unit(self, embedding: np.ndarray) -> np.ndarray:
        vector = np.asarray(embedding, np.float32).reshape(-1)
        if vector.shape != (self.fingerprint.embedding_dim,) or not np.all(np.isfinite(vector)):
            raise GalleryError(f"embedding must be {self.fingerprint.embedding_dim} finite values, "
                               f"got shape {np.shape(embedding)}")
        norm = float(np.linalg.norm(vector))
        return vector if abs(norm - 1.0) < 1e-5 else unit_rows(vector)[0]

    # -- changes (each one transaction) -------------------------------------------------------------------
    def add(self, name: str, embedding: np.ndarray, *, fingerprint: ModelFingerprint | None,
            source_sha256: str | None = None, detection_score: float | None = None) -> int | None:
        """Add one template to `name` (created if new); None when that source image is already enrolled."""
        added = self._insert(name, [(self._unit(embedding), source_sha256, detection_score)], fingerprint)
        return added[0] if added else None

    def enroll(self, name: str, faces: list[tuple[FaceResult, str | None]],
               fingerprint: ModelFingerprint | None) -> int:
        """Add several faces (with their source image sha256) to `name` in one transaction; returns how many
        were new (already-enrolled source images are skipped)."""
        items = [(self._unit(face.embedding), sha, face.detection_score) for face, sha in faces]
        return len(self._insert(name, items, fingerprint))

    def _insert(self, name: str, items: list[tuple[np.ndarray, str | None, float | None]],
                fingerprint: ModelFingerprint | None) -> list[int]:
        self.check_fingerprint(fingerprint)
        name = check_identity_name(name)
        now = time.time()
        with self._lock:  # one lock over the transaction and the index update: a remove cannot slip between
            self._sync()
            with _transaction(self._db, self.path):
                row = self._db.execute("SELECT id FROM identities WHERE name = ?", (name,)).fetchone()
                identity = row[0] if row else self._db.execute(
                    "INSERT INTO identities (name, created, updated) VALUES (?, ?, ?)", (name, now, now)).lastrowid
                added, vectors = [], []
                for vector, sha, score in items:
                    cursor = self._db.execute(
                        "INSERT OR IGNORE INTO templates (identity_id, embedding, source_sha256, detection_score, "
                        "created) VALUES (?, ?, ?, ?, ?)",
                        (identity, vector.astype("<f4").tobytes(), sha, None if score is None else float(score),
                         now))
                    if cursor.rowcount:
                        added.append(cursor.lastrowid)
                        vectors.append(vector)
                self._db.execute("UPDATE identities SET updated = ? WHERE id = ?", (now, identity))
            self._names[identity] = name  # committed: now the in-memory index
            if added:
                self._index.add(np.array(added), np.full(len(added), identity), np.stack(vectors))
        return added

    def remove(self, name: str) -> None:
        """Delete an identity and all its templates."""
        with self._lock:
            self._sync()
            identity = self._identity_id(name)
            with _transaction(self._db, self.path):
                self._db.execute("DELETE FROM templates WHERE identity_id = ?", (identity,))
                self._db.execute("DELETE FROM identities WHERE id = ?", (identity,))
            self._index.remove_owner(identity)
            del self._names[identity]

    def rename(self, old: str, new: str) -> None:
        """Rename an identity (its templates stay)."""
        new = check_identity_name(new)
        with self._lock:
            self._sync()
            identity = self._identity_id(old)
            if new in self._names.values():
                raise GalleryError(f"gallery {self.path}: identity {new!r} already exists")
            with _transaction(self._db, self.path):
                self._db.execute("UPDATE identities SET name = ?, updated = ? WHERE id = ?",
                                 (new, time.time(), identity))
            self._names[identity] = new

    def _identity_id(self, name: str) -> int:
        for identity, known in self._names.items():
            if known == name:
                return identity
        raise GalleryError(f"gallery {self.path} has no identity {name!r}")

    # -- reading --------------------------------------------------------------------------------------------
    def identities(self) -> list[IdentityInfo]:
        """Every identity with its template count, by name."""
        with self._lock:
            rows = self._db.execute(
                "SELECT i.name, COUNT(t.id), i.created, i.updated FROM identities i "
                "LEFT JOIN templates t ON t.identity_id = i.id GROUP BY i.id ORDER BY i.name").fetchall()
        return [IdentityInfo(name, int(count), float(created), float(updated)) for name, count, created, updated
                in rows]

    def __len__(self) -> int:
        return len(self._names)

    def __contains__(self, name: object) -> bool:
        return name in self._names.values()

    def stats(self) -> dict:
        """Counts, model, detector and threshold, for `gallery stats` and the service's health check."""
        with self._lock:
            self._sync()
            templates = len(self._index)
            identities = len(self._names)
        return {"path": str(self.path), "identities": identities, "templates": templates,
                "file_bytes": self.path.stat().st_size, "model": self.model_path, "detector": self.detector_path,
                "flip": self.flip,
                "threshold": self.threshold.to_dict(), "fingerprint": self.fingerprint.to_dict()}

    def search(self, embeddings: np.ndarray, k: int = 5, fingerprint: ModelFingerprint | None = None,
               ) -> list[list[Match]]:
        """Top-k identities per query embedding, by best template score (exact; see infer/search.py)."""
        self.check_fingerprint(fingerprint)
        queries = np.asarray(embeddings, np.float32).reshape(-1, self.fingerprint.embedding_dim)
        with self._lock:
            self._sync()
            hits = self._index.search(queries, k)
            names = dict(self._names)
        return [[Match(names[h.identity], h.score) for h in row] for row in hits]

    def identify_faces(self, faces: list[FaceResult], k: int = 1,
                       fingerprint: ModelFingerprint | None = None) -> list[Identified]:
        """Decisions for faces: the top match when its score >= the gallery threshold, else unknown."""
        if not faces:
            return []
        matches = self.search(np.stack([f.embedding for f in faces]), max(k, 1), fingerprint)
        out = []
        for face, candidates in zip(faces, matches, strict=True):
            best = candidates[0] if candidates else None
            score = best.score if best else float("-inf")
            known = best is not None and self.threshold.accepts(score)
            out.append(Identified(face, best.name if known else None, score, self.threshold, candidates[:k]))
        return out


class _transaction:
    """BEGIN IMMEDIATE ... COMMIT, or ROLLBACK on any error (the connection is in autocommit mode); SQLite
    errors (read-only file, locked database, full disk) become a GalleryError naming the file."""

    def __init__(self, db: sqlite3.Connection, path: Path) -> None:
        self.db = db
        self.path = path

    def __enter__(self) -> sqlite3.Connection:
        try:
            self.db.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as err:
            raise GalleryError(f"{self.path}: cannot write the gallery ({err})") from err
        return self.db

    def __exit__(self, kind, value, traceback) -> None:
        if kind is None:
            try:
                self.db.execute("COMMIT")
                return
            except sqlite3.Error as err:
                value = err
        if self.db.in_transaction:
            self.db.execute("ROLLBACK")
        if isinstance(value, sqlite3.Error):
            raise GalleryError(f"{self.path}: cannot write the gallery ({value})") from value


def _not_writable(path: Path, err: sqlite3.Error) -> GalleryError:
    """The error for a gallery SQLite cannot open: the file and its folder must be writable."""
    return GalleryError(f"cannot open gallery {path} for writing ({err}): the file and its folder {path.parent} "
                        f"must be writable (SQLite keeps its journal beside the file)")


MAX_NAME_LENGTH = 200


def check_identity_name(name: str) -> str:
    """A stripped identity name, refused when empty, over MAX_NAME_LENGTH, holding control characters (a TAB or
    newline would break listings), or 'unknown' (the word decisions use for a rejected face)."""
    name = str(name).strip()
    if not name:
        raise GalleryError("identity name must not be empty")
    if len(name) > MAX_NAME_LENGTH:
        raise GalleryError(f"identity name is {len(name)} characters long, at most {MAX_NAME_LENGTH} allowed")
    bad = sorted({repr(c) for c in name if unicodedata.category(c) in ("Cc", "Cf", "Zl", "Zp")})
    if bad:
        raise GalleryError(f"identity name {name!r} holds control characters ({', '.join(bad)})")
    if name.casefold() == "unknown":
        raise GalleryError("'unknown' is what decisions call a face that matches nobody; choose another name")
    return name
