"""A persistent gallery of known people: SQLite (WAL) on disk, an exact in-memory template index for search.

Schema (see docs/recognition.md): meta(key, value) holds the model fingerprint, model and detector paths
and the operating threshold; identities(id, name UNIQUE, created, updated); templates(id, identity_id,
embedding float32 blob, source_sha256, detection_score, created, checksum) with (identity_id, source_sha256)
UNIQUE. Every change is one transaction, so a crash loses nothing committed and leaves nothing half-written.
The gallery refuses embeddings or searches from a model whose fingerprint differs from its own.

Every template is verified when it is loaded (right length, finite, unit norm, and its CRC-32 `checksum`
over template id, identity id and the float bytes, so one flipped bit is caught too). A damaged template
never enters the index, and while the gallery holds one every search raises GalleryDamaged naming the file,
the identity and the template: a search without that person could name a stranger in their place.
`check` lists the damaged templates, `drop_templates` deletes them.

Schema 3 adds the face records and people management that `infer/people.py` works on: photos, faces (with
their own checksummed embeddings), unnamed clusters and cannot-links; templates.face_id links the templates of
a named person's confirmed faces to them. This module only creates and migrates those tables.

Every read and change first sees what other processes committed (PRAGMA data_version) and checks that the
file and its -wal are still the ones opened (device and inode): GalleryUnavailable, never a change
acknowledged into a removed or replaced file.
"""

from __future__ import annotations

import json
import logging
import os
import shlex
import sqlite3
import struct
import threading
import time
import unicodedata
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from marginface.errors import MarginfaceError
from marginface.infer.faces import FaceResult, ModelFingerprint
from marginface.infer.index import INDEX_KINDS, identity_index
from marginface.infer.search import TemplateIndex, unit_rows
from marginface.infer.thresholds import ScoreError, Threshold, check_score
from marginface.listing import first_of

log = logging.getLogger(__name__)
SCHEMA_VERSION = 3  # 2: templates.checksum; 3: photos, faces, clusters, cannot_link, templates.face_id
# (galleries of older versions are migrated when opened writable)
NORM_TOLERANCE = 1e-4  # a stored template is unit norm to float32 rounding (~1e-7); further off is damage

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
    checksum INTEGER,
    UNIQUE (identity_id, source_sha256));
CREATE INDEX IF NOT EXISTS templates_identity ON templates(identity_id);
"""
# Schema 3: face records and people management (infer/people.py). templates.face_id is added by the migration
# (ALTER TABLE) and by _SCHEMA_TEMPLATE_FACE on a new file, so that both end with the same columns.
_SCHEMA_PEOPLE = """
CREATE TABLE IF NOT EXISTS photos (
    id INTEGER PRIMARY KEY, path TEXT NOT NULL, sha256 TEXT NOT NULL UNIQUE, faces INTEGER NOT NULL,
    added REAL NOT NULL);
CREATE TABLE IF NOT EXISTS clusters (
    id INTEGER PRIMARY KEY AUTOINCREMENT, created REAL NOT NULL, updated REAL NOT NULL);
CREATE TABLE IF NOT EXISTS faces (
    id INTEGER PRIMARY KEY,
    photo_id INTEGER NOT NULL REFERENCES photos(id) ON DELETE CASCADE,
    face_index INTEGER NOT NULL,
    box TEXT NOT NULL,
    landmarks TEXT NOT NULL,
    detection_score REAL NOT NULL,
    raw_norm REAL NOT NULL,
    face_size REAL NOT NULL,
    thumbnail BLOB,
    embedding BLOB,
    checksum INTEGER,
    identity_id INTEGER REFERENCES identities(id) ON DELETE CASCADE,
    cluster_id INTEGER REFERENCES clusters(id) ON DELETE CASCADE,
    assigned_by TEXT NOT NULL DEFAULT 'auto' CHECK (assigned_by IN ('auto', 'user')),
    created REAL NOT NULL,
    CHECK (identity_id IS NULL OR cluster_id IS NULL),
    UNIQUE (photo_id, face_index));
CREATE INDEX IF NOT EXISTS faces_identity ON faces(identity_id);
CREATE INDEX IF NOT EXISTS faces_cluster ON faces(cluster_id);
CREATE TABLE IF NOT EXISTS cannot_link (
    face_id INTEGER NOT NULL REFERENCES faces(id) ON DELETE CASCADE,
    identity_id INTEGER REFERENCES identities(id) ON DELETE CASCADE,
    cluster_id INTEGER REFERENCES clusters(id) ON DELETE CASCADE,
    created REAL NOT NULL,
    implied INTEGER NOT NULL DEFAULT 0,  -- 1: left by a split (the faces left behind), 0: the user's "not"
    CHECK ((identity_id IS NULL) != (cluster_id IS NULL)));
CREATE UNIQUE INDEX IF NOT EXISTS cannot_link_identity ON cannot_link(face_id, identity_id)
    WHERE identity_id IS NOT NULL;
CREATE UNIQUE INDEX IF NOT EXISTS cannot_link_cluster ON cannot_link(face_id, cluster_id)
    WHERE cluster_id IS NOT NULL;
"""
_SCHEMA_TEMPLATE_FACE = """
ALTER TABLE templates ADD COLUMN face_id INTEGER REFERENCES faces(id) ON DELETE CASCADE;
CREATE INDEX IF NOT EXISTS templates_face ON templates(face_id);
"""


# Temporary (this connection's own) bookkeeping of whose templates a change wrote: cascades fire these triggers
# too, and a rolled-back change leaves no rows; one row per identity, however many changes ran since it was
# cleared. `Gallery.change` refreshes only those identities' templates.
_TRACK_TEMPLATES = (
    "CREATE TEMP TABLE IF NOT EXISTS touched_owners (identity_id INTEGER PRIMARY KEY)",
    "CREATE TEMP TRIGGER IF NOT EXISTS touched_by_insert AFTER INSERT ON main.templates "
    "BEGIN INSERT OR IGNORE INTO touched_owners VALUES (new.identity_id); END",
    "CREATE TEMP TRIGGER IF NOT EXISTS touched_by_delete AFTER DELETE ON main.templates "
    "BEGIN INSERT OR IGNORE INTO touched_owners VALUES (old.identity_id); END",
    "CREATE TEMP TRIGGER IF NOT EXISTS touched_by_update AFTER UPDATE ON main.templates "
    "BEGIN INSERT OR IGNORE INTO touched_owners VALUES (old.identity_id); "
    "INSERT OR IGNORE INTO touched_owners VALUES (new.identity_id); END",
)
_CHUNK = 500  # ids per `IN (...)`


def _statements(script: str) -> list[str]:
    """The SQL statements of a schema script, one by one."""
    return [statement for statement in script.split(";") if statement.strip()]


class GalleryError(MarginfaceError, ValueError):
    """A gallery operation that cannot be done: missing file or identity, duplicate name, bad embedding."""

    http_status = 422


class NameConflict(GalleryError):
    """A name refused because of a person the gallery holds (HTTP 409, like every refusal that depends on what is
    stored now rather than on the request): the name is theirs, or looks like theirs."""

    http_status = 409


class NameTaken(NameConflict):
    """A rename to the name another person has (a rename never merges; `People.name` and `people merge` do)."""


class LookAlikeName(NameConflict):
    """A new name that reads the same as an existing person's (name_spelling: case, spacing, invisible characters
    and look-alike letters aside): a listing could not tell the two apart. The message names the gallery, both
    names and what to do instead."""


class GalleryModelMismatch(GalleryError):
    """Embeddings or a search from a model other than the one the gallery was built with."""


class UnknownIdentity(GalleryError):
    """A change or lookup naming a person the gallery (as committed now, by any process) does not hold."""


class GalleryUnavailable(GalleryError):
    """The gallery file (or its write-ahead log) was removed or replaced while open: a change written now would
    go to a file nobody will read again, so it is refused instead of acknowledged."""

    http_status = 503


class GalleryDamaged(GalleryError):
    """A search refused because stored templates failed verification; the message names each of them."""

    http_status = 503


class SharedPhoto(GalleryError):
    """An enrolment refused because one of its photos is already enrolled under another name."""

    http_status = 409


class GalleryUnreadable(GalleryError):
    """SQLite cannot read the gallery file (a damaged page or index, an I/O error); the message names the file."""

    http_status = 503


class GalleryNotWritable(GalleryError):
    """A change the gallery cannot take now (read-only file or mount, locked, I/O error); nothing was written."""

    http_status = 503


class GalleryFull(GalleryNotWritable):
    """A change refused because the disk holding the gallery is full; nothing was written."""

    http_status = 507


MIN_FREE_BYTES = 1 << 20  # below this much free space beside the gallery, `write_problem` reports it


def template_checksum(template_id: int, identity_id: int, blob: bytes) -> int:
    """CRC-32 of (template id, identity id, embedding bytes): a changed bit, a blob moved to another row or a
    template moved to another person all change it."""
    return zlib.crc32(blob, zlib.crc32(struct.pack("<qq", int(template_id), int(identity_id))))


def verify_embeddings(rows: list[tuple[int, object, int | None]], dim: int, checksum: Callable[[int, bytes], int],
                      covers: str) -> tuple[dict[int, str], set[int], np.ndarray]:
    """Verify stored (id, embedding blob, stored checksum) rows: 4·dim bytes, finite, unit norm, checksum.

    Returns (id -> what is wrong, for the damaged rows; the ids of the right-sized rows; their (M, dim)
    float32 matrix in row order). `covers` names what the checksum covers besides the bytes (for the message).
    Lengths and checksums are checked row by row, finite values and norms over the whole matrix at once."""
    reasons: dict[int, str] = {}
    sized = [row for row in rows if isinstance(row[1], bytes) and len(row[1]) == 4 * dim]
    for row_id, blob, _ in rows:
        if not isinstance(blob, bytes) or len(blob) != 4 * dim:
            size = len(blob) if isinstance(blob, (bytes, str)) else 0
            reasons[row_id] = f"holds {size} bytes, expected {4 * dim} ({dim} float32 values)"
    matrix = (np.frombuffer(b"".join(row[1] for row in sized), "<f4").reshape(-1, dim) if sized
              else np.zeros((0, dim), np.float32))
    finite = np.isfinite(matrix)
    with np.errstate(over="ignore", invalid="ignore"):
        norms = np.linalg.norm(matrix.astype(np.float64), axis=1)
    for row, (row_id, blob, stored) in enumerate(sized):
        if not finite[row].all():
            reasons[row_id] = f"holds {int((~finite[row]).sum())} non-finite values (NaN or infinity)"
        elif abs(norms[row] - 1.0) > NORM_TOLERANCE:
            reasons[row_id] = f"has norm {norms[row]:.6g}, expected 1"
        elif stored is None:
            reasons[row_id] = "has no checksum"
        elif stored != (computed := checksum(row_id, blob)):
            reasons[row_id] = (f"checksum mismatch (stored {int(stored) & 0xFFFFFFFF:08x}, computed "
                               f"{computed:08x}): its bytes, {covers} changed after it was written")
    return reasons, {row[0] for row in sized}, matrix


@dataclass(frozen=True)
class DamagedTemplate:
    """A stored template that failed verification: which one, whose, and what is wrong with it."""

    template_id: int
    identity_id: int
    identity: str  # the owner's name, or a note that the owner is missing
    reason: str

    def __str__(self) -> str:
        return f"template {self.template_id} of {self.identity!r}: {self.reason}"


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
    """Identities with several templates each, stored in SQLite; top-k search by identity through an index
    of the kind asked for (exact by default; 'hnsw' or 'ivf' for galleries of 10^5+ templates)."""

    def __init__(self, path: Path, connection: sqlite3.Connection, read_only: str | None = None, *,
                 index: str = "exact", index_params: dict | None = None) -> None:
        """Use Gallery.create or Gallery.open (`read_only`: why the connection cannot write, when it cannot;
        `index`, `index_params`: the search index, see infer/index.py)."""
        if index not in INDEX_KINDS:
            connection.close()
            raise GalleryError(f"gallery {path}: unknown index kind {index!r}; expected one of "
                               f"{', '.join(INDEX_KINDS)}")
        self.path = path
        self.index_kind = index
        self._index_params = dict(index_params or {})
        self._db = connection
        self.read_only = read_only
        self._lock = threading.RLock()
        self.read_binding()
        self._names: dict[int, str] = {}
        self._spellings: dict[str, str] = {}  # name -> name_spelling(name), memo of the look-alike rule's folding
        self._damaged: list[DamagedTemplate] = []
        self._files: dict[str, tuple[int, int] | None] = {}
        self._failed_write: str | None = None  # the last change's write error, until a change succeeds
        self._tracking = False  # whether this connection's _TRACK_TEMPLATES triggers exist
        self._check_files()  # records the (device, inode) of the file and its -wal
        self._load()

    def read_binding(self) -> None:
        """Read the model binding (fingerprint, threshold, model, detector, flip) and schema version from `meta`:
        on open, on every reload (a `reembed` by another process re-binds this connection too), and by a change
        that rewrites it, before its checks."""
        try:
            meta = dict(self._db.execute("SELECT key, value FROM meta").fetchall())
        except sqlite3.DatabaseError as err:
            raise _unreadable(self.path, err) from err
        try:
            self.fingerprint = ModelFingerprint.from_dict(json.loads(meta["fingerprint"]))
            self.threshold = Threshold.from_dict(json.loads(meta["threshold"]))
            self.model_path: str = meta["model"]
            self.detector_path: str | None = json.loads(meta["detector"])
            self.flip: bool = json.loads(meta.get("flip", "true"))
            self.schema_version = int(meta.get("schema_version", SCHEMA_VERSION))
        except (KeyError, ValueError, TypeError) as err:
            raise GalleryError(f"{self.path}: not a marginface gallery (meta table incomplete: {err})") from err

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
               detector: str | Path | None, flip: bool = True, index: str = "exact",
               index_params: dict | None = None) -> Gallery:
        """A new, empty gallery file bound to one model (fingerprint), detector, flip test and threshold."""
        path = Path(path)
        if path.exists():
            raise GalleryError(f"gallery {path} already exists (open it, or remove the file first)")
        path.parent.mkdir(parents=True, exist_ok=True)
        db = cls._connect(path)
        with _transaction(db, path):
            for statement in _statements(_SCHEMA + _SCHEMA_PEOPLE + _SCHEMA_TEMPLATE_FACE):
                db.execute(statement)
            rows = {"schema_version": str(SCHEMA_VERSION), "fingerprint": json.dumps(fingerprint.to_dict()),
                    "threshold": json.dumps(threshold.to_dict()), "model": str(Path(model).resolve()),
                    "detector": json.dumps(str(Path(detector).resolve()) if detector is not None else None),
                    "flip": json.dumps(bool(flip)), "created": str(time.time())}
            db.executemany("INSERT INTO meta (key, value) VALUES (?, ?)", rows.items())
        log.info("created gallery %s (threshold %.4f from %s)", path, threshold.value, threshold.source)
        return cls(path, db, index=index, index_params=index_params)

    @classmethod
    def open(cls, path: str | Path, *, read_only: bool = False, index: str = "exact",
             index_params: dict | None = None) -> Gallery:
        """An existing gallery file; read-only (listing and search, every change refused with
        GalleryNotWritable) when asked, or when the file or its folder cannot be written (a read-only mount).
        `index`: how it is searched ('exact', 'hnsw', 'ivf'; `index_params` as infer/index.make_index)."""
        path = Path(path)
        if path.is_dir():
            raise GalleryError(f"{path} is a folder, not a gallery file (a gallery is one SQLite file, e.g. people.db)")
        if not path.is_file():
            raise GalleryError(f"gallery {path} does not exist (create it with `marginface gallery create`)")
        try:  # look read-only first, so that opening a file that is not a gallery never changes it
            probe = _connect_read_only(path)
            try:
                version = probe.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
            finally:
                probe.close()
        except sqlite3.DatabaseError as err:
            if _error_code(err) == sqlite3.SQLITE_CANTOPEN:  # not even readable: SQLite needs a writable folder
                raise _not_writable(path, err) from err
            if "no such table" in str(err):
                raise GalleryError(_no_tables_message(path, err)) from err
            raise GalleryError(f"{path}: not a marginface gallery ({err})") from err
        if version is None or version[0] not in ("1", "2", str(SCHEMA_VERSION)):
            raise GalleryError(f"{path}: gallery schema version {version and version[0]}, expected {SCHEMA_VERSION}")
        reason = "opened with read_only=True" if read_only else _read_only_mount(path)
        if reason is None:
            try:
                db = cls._connect(path)
            except GalleryError as err:
                reason = str(err)
        if reason is not None:
            if version[0] == "1":
                raise GalleryNotWritable(f"{path}: a schema-1 gallery must be migrated before it is read, which "
                                         f"needs write access ({reason})")
            if version[0] != str(SCHEMA_VERSION):  # schema 2: identities and templates as ever, no face records
                log.warning("gallery %s is schema %s and open read-only: it can be listed and searched; people "
                            "and faces need schema %d (open it once with write access to migrate it)", path,
                            version[0], SCHEMA_VERSION)
            log.warning("gallery %s is open read-only: %s", path, reason)
            return cls(path, _connect_read_only(path), read_only=reason, index=index, index_params=index_params)
        if version[0] != str(SCHEMA_VERSION):
            try:
                _migrate(db, path)
            except BaseException:
                db.close()
                raise
        return cls(path, db, index=index, index_params=index_params)

    def close(self) -> None:
        """Close the database connection."""
        with self._lock:
            self._db.close()

    def __enter__(self) -> Gallery:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _load(self) -> None:
        """Read identities and templates into memory; only templates that pass verification enter the index."""
        try:
            self._version = self._db.execute("PRAGMA data_version").fetchone()[0]
            self.read_binding()
            own = not self._db.in_transaction  # inside a change, its transaction is the one snapshot already
            if own:  # one read transaction: a commit between the two reads would orphan a live template
                self._db.execute("BEGIN")
            try:
                self._names = dict(self._db.execute("SELECT id, name FROM identities").fetchall())
                rows = self._db.execute(
                    "SELECT id, identity_id, embedding, checksum FROM templates ORDER BY id").fetchall()
            finally:
                if own and self._db.in_transaction:
                    self._db.execute("COMMIT")
        except sqlite3.DatabaseError as err:
            raise _unreadable(self.path, err) from err
        self._index = identity_index(self.index_kind, self.fingerprint.embedding_dim, **self._index_params)
        ids, owners, vectors, self._damaged = self._verify(rows)
        for damaged in self._damaged:
            log.error("gallery %s: %s (not used)", self.path, damaged)
        if len(ids):
            self._index.add(ids, owners, vectors)

    def _verify(self, rows: list[tuple]) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[DamagedTemplate]]:
        """(ids, owners, vectors) of the template rows that are intact, and what is wrong with the others
        (length and checksum row by row; finite values and unit norm over the whole matrix at once)."""
        owner = {row[0]: row[1] for row in rows}
        reasons, sized, matrix = verify_embeddings(
            [(row[0], row[2], row[3]) for row in rows], self.fingerprint.embedding_dim,
            lambda template_id, blob: template_checksum(template_id, owner[template_id], blob), "id or owner")
        sized = [row for row in rows if row[0] in sized]
        for template_id, identity_id, *_ in sized:
            if template_id not in reasons and identity_id not in self._names:
                reasons[template_id] = "belongs to no identity"
        damaged = [DamagedTemplate(int(t), int(i), self._names.get(i, f"<missing identity id {i}>"), reasons[t])
                   for t, i, *_ in rows if t in reasons]
        keep = np.array([row[0] not in reasons for row in sized], bool)
        ids = np.array([row[0] for row in sized], np.int64).reshape(-1)
        owners = np.array([row[1] for row in sized], np.int64).reshape(-1)
        return ids[keep], owners[keep], matrix[keep], damaged

    def _refuse_damaged(self) -> None:
        """Raise GalleryDamaged, naming every damaged template, when the gallery holds any (call under the lock)."""
        if self._damaged:
            shown = first_of(self._damaged)
            raise GalleryDamaged(
                f"gallery {self.path} holds {len(self._damaged)} damaged template(s), so it cannot be searched: "
                f"{shown} (list them with `marginface gallery check {self.path}`, delete them with --drop "
                "and enrol those people again)")

    def _check_files(self) -> None:
        """GalleryUnavailable when the gallery file or its -wal is no longer the one this connection opened
        (deleted, moved away or replaced: different device or inode); records the -wal once it exists."""
        for label, path in (("gallery file", self.path), ("write-ahead log", Path(f"{self.path}-wal"))):
            try:
                info = os.stat(path)
                current: tuple[int, int] | None = (info.st_dev, info.st_ino)
            except FileNotFoundError:
                current = None
            except OSError as err:
                raise GalleryUnavailable(f"gallery {self.path}: cannot look at its {label} {path} ({err})") from err
            known = self._files.get(label)
            if known is None:
                if current is None and label == "gallery file":
                    raise GalleryUnavailable(f"gallery {self.path} does not exist (any more)")
                self._files[label] = current
            elif current != known:
                what = "was removed" if current is None else "was replaced by another file"
                raise GalleryUnavailable(
                    f"gallery {self.path}: its {label} {path} {what} while the gallery was open; changes made now "
                    "would be lost, so none are accepted (restore the file, or restart on the gallery as it is now)")

    def write_problem(self) -> str | None:
        """Why a change would fail now (read-only mount or file, disk full, the last change failed), or None.

        Cheap and lock-free enough for a health check: it looks at the file system, never takes SQLite's lock."""
        if self.read_only is not None:
            return f"open read-only: {self.read_only}"
        folder = self.path.parent
        try:
            info = os.statvfs(folder)
        except OSError as err:
            return f"cannot look at {folder} ({err.strerror or err})"
        if info.f_flag & os.ST_RDONLY:
            return f"{folder} is on a read-only mount"
        if not os.access(self.path, os.W_OK) or not os.access(folder, os.W_OK):
            return f"{self.path} or its folder is not writable by this process"
        free = info.f_bavail * info.f_frsize
        if free < MIN_FREE_BYTES:
            return f"the disk holding {self.path} is full ({free} bytes free)"
        return self._failed_write

    def _write(self) -> _transaction:
        """A write transaction that first checks the files are still the ones opened, and checks again after
        COMMIT, so a change is never acknowledged into a removed or replaced file."""
        if self.read_only is not None:
            raise GalleryNotWritable(f"gallery {self.path} is open read-only ({self.read_only}): it can be listed "
                                     "and searched; changes need a writable file and folder")
        return _transaction(self._db, self.path, check=self._check_files, gallery=self)

    @contextmanager
    def reading(self) -> Iterator[sqlite3.Connection]:
        """The connection for reads written in SQL (infer/people.py), under the lock, after seeing what other
        processes committed; SQLite read errors become GalleryUnreadable naming the file."""
        with self._lock:
            self._sync()
            try:
                yield self._db
            except sqlite3.DatabaseError as err:
                raise _unreadable(self.path, err) from err

    @contextmanager
    def change(self, *, full_reload: bool = False) -> Iterator[sqlite3.Connection]:
        """One write transaction for a change written in SQL (infer/people.py), under the lock and after seeing
        what other processes committed; after COMMIT the in-memory index takes it in (see `_refresh`).

        `full_reload`: reload everything, the model binding included, after COMMIT (a change that rewrites every
        template or the binding: reembed); the binding is read again after a rollback too."""
        with self._lock:
            transaction = self._write()
            if not self._tracking:
                try:
                    for statement in _TRACK_TEMPLATES:
                        self._db.execute(statement)
                except sqlite3.Error as err:
                    raise _write_error(self.path, err) from err
                self._tracking = True
            try:
                with transaction as db:
                    self._sync()
                    db.execute("DELETE FROM touched_owners")
                    yield db
                    touched = {row[0] for row in db.execute("SELECT identity_id FROM touched_owners")}
                    db.execute("DELETE FROM touched_owners")
            except BaseException:
                if full_reload:
                    self.read_binding()  # rolled back: the old binding
                raise
            if full_reload:
                self._load()
            else:
                self._refresh(touched)

    def _refresh(self, owners: set[int]) -> None:
        """Take in this connection's last commit, which wrote templates of `owners` only: the names are read
        again, and so are those owners' templates (verified as when loaded), which replace theirs in the index.
        The result is what a full `_load` gives. Only the exact index is refreshed so; an approximate one (hnsw,
        ivf) is rebuilt whole when a change wrote templates, since its graph or cells depend on the order templates
        arrived in (a change that wrote none, such as adding unassigned faces during a scan, only re-reads names)."""
        if owners and not isinstance(self._index, TemplateIndex):
            self._load()
            return
        try:
            names = dict(self._db.execute("SELECT id, name FROM identities").fetchall())
            wanted = sorted(owners)
            rows: list[tuple] = []
            for start in range(0, len(wanted), _CHUNK):
                chunk = wanted[start:start + _CHUNK]
                rows += self._db.execute(
                    f"SELECT id, identity_id, embedding, checksum FROM templates WHERE identity_id IN "
                    f"({','.join('?' * len(chunk))})", chunk).fetchall()
        except sqlite3.DatabaseError as err:
            self._version = None  # the next read reloads everything
            raise _unreadable(self.path, err) from err
        rows.sort(key=lambda row: row[0])
        self._names = names
        ids, found, vectors, damaged = self._verify(rows)
        kept = [replace(d, identity=names.get(d.identity_id, f"<missing identity id {d.identity_id}>"))
                for d in self._damaged if d.identity_id not in owners]
        self._damaged = sorted(kept + damaged, key=lambda d: d.template_id)
        for item in damaged:
            log.error("gallery %s: %s (not used)", self.path, item)
        if wanted:
            self._index.remove_owners(wanted)
        if len(ids):
            self._index.add(ids, found, vectors)

    def _sync(self) -> None:
        """Reload the in-memory index when another connection (e.g. another process) committed changes.

        Every read and change calls it under the lock (changes inside their write transaction, so what they
        check is what they change): PRAGMA data_version moves whenever another connection commits. The
        file's identity is checked first (GalleryUnavailable when it was removed or replaced)."""
        self._check_files()
        try:
            version = self._db.execute("PRAGMA data_version").fetchone()[0]
        except sqlite3.DatabaseError as err:
            raise _unreadable(self.path, err) from err
        if version != self._version:
            log.info("gallery %s changed on disk; reloading", self.path)
            self._load()

    # -- checks -----------------------------------------------------------------------------------------
    def check_fingerprint(self, fingerprint: ModelFingerprint | None) -> None:
        """Raise GalleryModelMismatch unless `fingerprint` (when given) is the gallery's model."""
        if fingerprint is not None and fingerprint.key != self.fingerprint.key:
            raise GalleryModelMismatch(
                f"gallery {self.path} holds embeddings of model {self.fingerprint.key} ({self.model_path}); "
                f"the embeddings given come from model {fingerprint.key}")

    def refuse_look_alike(self, name: str, *, identity: int | None = None, person: str | None = None) -> None:
        """LookAlikeName when `name` (normalised, nobody's yet) differs from the name of an identity other than
        `identity` only in what `name_spelling` ignores (case, spacing, invisible characters, look-alike letters):
        the one rule for a new identity (enrolment), a rename and a person
        named (infer/people.py). `person`: who is being (re)named, for the hint (a merge); None for a new
        identity (the hint: enrol under the existing spelling). Call it inside a change, so it checks what is
        committed (a check made ahead, as enrolment.check_plan's, is made again by the change itself)."""
        with self._lock:
            spelling = name_spelling(name)
            known = next((known for other, known in sorted(self._names.items())
                          if other != identity and self._spelling(known) == spelling), None)
        if known is None:
            return
        if person is None:
            hint = (f"to add photos of {known}, enrol them under the existing spelling {known!r}; for someone "
                    "else, choose a name that tells the two apart")
        else:
            hint = (f"if {person} is {known}, merge them (`{self._merge_command(known, person)}`); else choose a "
                    "name that tells the two apart")
        raise LookAlikeName(f"gallery {self.path}: {name!r} reads the same as the existing person {known!r} "
                            f"({SAME_READING}), so the two could not be told apart; {hint}")

    def _merge_command(self, keep: str, gone: str) -> str:
        """The `marginface people merge` command that folds person `gone` into `keep` in this gallery."""
        return "marginface people merge " + " ".join(shlex.quote(word) for word in (str(self.path), keep, gone))

    def _spelling(self, known: str) -> str:
        """name_spelling of a stored name, folded once per name (a new identity checks every stored one)."""
        spelling = self._spellings.get(known)
        if spelling is None:
            spelling = self._spellings[known] = name_spelling(known)
        return spelling

    def unit_embedding(self, embedding: np.ndarray) -> np.ndarray:
        """One embedding as the (D,) float32 unit vector a template or face record stores; GalleryError unless it
        holds the gallery's D finite values."""
        vector = np.asarray(embedding, np.float32).reshape(-1)
        if vector.shape != (self.fingerprint.embedding_dim,) or not np.all(np.isfinite(vector)):
            raise GalleryError(f"embedding must be {self.fingerprint.embedding_dim} finite values, "
                               f"got shape {np.shape(embedding)}")
        norm = float(np.linalg.norm(vector))
        return vector if abs(norm - 1.0) < 1e-5 else unit_rows(vector)[0]

    # -- changes (each one transaction) -------------------------------------------------------------------
    def add(self, name: str, embedding: np.ndarray, *, fingerprint: ModelFingerprint | None,
            source_sha256: str | None = None, detection_score: float | None = None,
            allow_shared_photos: bool = False) -> int | None:
        """Add one template to `name` (created if new); None when that source image is already enrolled."""
        added = self._insert(name, [(self.unit_embedding(embedding), source_sha256, detection_score)], fingerprint,
                             allow_shared_photos, None)
        return added[0] if added else None

    def enroll(self, name: str, faces: list[tuple[FaceResult, str | None]],
               fingerprint: ModelFingerprint | None, *, allow_shared_photos: bool = False,
               photo_names: list[str] | None = None) -> int:
        """Add several faces (with their source image sha256) to `name` in one transaction; returns how many
        were new (already-enrolled source images are skipped).

        A photo already enrolled under another name is refused (SharedPhoto, naming it from `photo_names` and
        the other person) unless `allow_shared_photos`: identify would answer whichever came first. A new name
        that reads the same as another person's (name_spelling) is refused (LookAlikeName)."""
        items = [(self.unit_embedding(face.embedding), sha, face.detection_score) for face, sha in faces]
        return len(self._insert(name, items, fingerprint, allow_shared_photos, photo_names))

    enrol = enroll  # the project's spelling (docs, CLI); `enroll` stays, as it was published first

    def _insert(self, name: str, items: list[tuple[np.ndarray, str | None, float | None]],
                fingerprint: ModelFingerprint | None, allow_shared_photos: bool,
                photo_names: list[str] | None) -> list[int]:
        self.check_fingerprint(fingerprint)
        name = check_identity_name(name)
        now = time.time()
        with self._lock:  # one lock over the transaction and the index update: a remove cannot slip between
            with self._write():
                self._sync()
                identity = self._find_identity(name)  # more photos of a person enrolled under this very name
                new = identity is None
                if new:
                    self.refuse_look_alike(name)
                if not allow_shared_photos:
                    self._refuse_shared(name, identity, items, photo_names)
                if new:
                    identity = self._db.execute("INSERT INTO identities (name, created, updated) VALUES (?, ?, ?)",
                                                (name, now, now)).lastrowid
                added, vectors = [], []
                for vector, sha, score in items:
                    blob = vector.astype("<f4").tobytes()
                    cursor = self._db.execute(
                        "INSERT OR IGNORE INTO templates (identity_id, embedding, source_sha256, detection_score, "
                        "created) VALUES (?, ?, ?, ?, ?)",
                        (identity, blob, sha, None if score is None else float(score), now))
                    if cursor.rowcount:
                        template = cursor.lastrowid
                        self._db.execute("UPDATE templates SET checksum = ? WHERE id = ?",
                                         (template_checksum(template, identity, blob), template))
                        added.append(template)
                        vectors.append(vector)
                self._db.execute("UPDATE identities SET updated = ? WHERE id = ?", (now, identity))
            if new:
                self._names[identity] = name  # committed: now the in-memory index
            if added:
                self._index.add(np.array(added), np.full(len(added), identity), np.stack(vectors))
        return added

    def _refuse_shared(self, name: str, identity: int | None, items: list[tuple[np.ndarray, str | None, float | None]],
                       photo_names: list[str] | None) -> None:
        """SharedPhoto when a photo of `items` is already enrolled under a name other than `name` (in a write
        transaction, so what it checks is what is committed)."""
        for index, (_, sha, _) in enumerate(items):
            if sha is None:
                continue
            other = self._db.execute(
                "SELECT i.name FROM templates t JOIN identities i ON i.id = t.identity_id "
                "WHERE t.source_sha256 = ? AND t.identity_id IS NOT ? LIMIT 1", (sha, identity)).fetchone()
            if other is not None:
                photo = photo_names[index] if photo_names else f"photo {index + 1}"
                raise SharedPhoto(f"gallery {self.path}: {photo} (sha256 {sha[:16]}...) is already enrolled as "
                                  f"{other[0]!r}; enrolling it as {name!r} too would make identify answer "
                                  "whichever came first (allow it explicitly to do so anyway)")

    def remove(self, name: str) -> None:
        """Delete an identity and all its templates."""
        with self._lock:
            with self._write():
                self._sync()
                identity = self._identity_id(name)
                self._db.execute("DELETE FROM templates WHERE identity_id = ?", (identity,))
                self._db.execute("DELETE FROM identities WHERE id = ?", (identity,))
            self._index.remove_owner(identity)
            del self._names[identity]
            self._damaged = [d for d in self._damaged if d.identity_id != identity]

    def rename(self, old: str, new: str) -> None:
        """Rename an identity (its templates stay); a name another identity has is refused (NameTaken), and so is
        one that reads the same as another's (name_spelling; LookAlikeName): both NameConflict, 409."""
        new = check_identity_name(new)
        with self._lock:
            with self._write():
                self._sync()
                identity = self._identity_id(old)
                if self._find_identity(new) not in (None, identity):
                    old_name = self._names[identity]
                    raise NameTaken(f"gallery {self.path}: identity {new!r} already exists; if {old_name} is {new}, "
                                    f"merge them (`{self._merge_command(new, old_name)}`), else choose another name")
                self.refuse_look_alike(new, identity=identity, person=self._names[identity])
                self._db.execute("UPDATE identities SET name = ?, updated = ? WHERE id = ?",
                                 (new, time.time(), identity))
            self._names[identity] = new
            self._damaged = [replace(d, identity=new) if d.identity_id == identity else d for d in self._damaged]

    def check(self) -> list[DamagedTemplate]:
        """Check the whole file (SQLite's integrity_check: a damaged index page can hide rows from listings
        without any read failing) and read every template again; returns those that fail verification
        (empty: all intact), raising GalleryUnreadable when the file itself is damaged."""
        with self._lock:
            try:
                findings = [row[0] for row in self._db.execute("PRAGMA integrity_check(20)").fetchall()]
            except sqlite3.DatabaseError as err:
                raise _unreadable(self.path, err) from err
            if findings != ["ok"]:
                shown = first_of(findings, 3)
                raise GalleryUnreadable(f"{self.path}: the file is damaged (SQLite integrity_check: {shown}); "
                                        f"restore it from a backup, or create the gallery again and re-enrol")
            self._load()
            return list(self._damaged)

    def drop_templates(self, template_ids: list[int]) -> int:
        """Delete templates by id in one transaction (e.g. the damaged ones `check` found); returns how many."""
        ids = [int(t) for t in template_ids]
        with self._lock:
            with self._write():
                self._sync()
                dropped = sum(self._db.execute("DELETE FROM templates WHERE id = ?", (t,)).rowcount for t in ids)
            log.info("gallery %s: dropped %d templates (%s)", self.path, dropped, ", ".join(map(str, ids)))
            self._load()
        return dropped

    def identity_id(self, name: str) -> int:
        """The id of the identity called `name` (compared as stored: NFC, without surrounding spaces), as committed
        now; UnknownIdentity when there is none."""
        with self._lock:
            self._sync()
            return self._identity_id(name)

    def identity_name(self, identity: int) -> str:
        """The stored name of identity `identity` (an id from `identity_id`), as committed now; UnknownIdentity
        when there is none."""
        with self._lock:
            self._sync()
            if identity not in self._names:
                raise UnknownIdentity(f"gallery {self.path} has no identity id {identity}")
            return self._names[identity]

    def _find_identity(self, name: str) -> int | None:
        """The id of the identity called `name` (already normalised) in what was last read, or None."""
        for identity, known in self._names.items():
            if unicodedata.normalize("NFC", known) == name:
                return identity
        return None

    def _identity_id(self, name: str) -> int:
        """identity_id without the lock and the sync (for callers holding both)."""
        name = normalize_identity_name(name)
        identity = self._find_identity(name)
        if identity is None:
            raise UnknownIdentity(f"gallery {self.path} has no identity {name!r}")
        return identity

    # -- reading --------------------------------------------------------------------------------------------
    def identities(self) -> list[IdentityInfo]:
        """Every identity with its template count, by name."""
        with self._lock:
            self._sync()
            try:
                rows = self._db.execute(
                    "SELECT i.name, COUNT(t.id), i.created, i.updated FROM identities i "
                    "LEFT JOIN templates t ON t.identity_id = i.id GROUP BY i.id ORDER BY i.name").fetchall()
            except sqlite3.DatabaseError as err:
                raise _unreadable(self.path, err) from err
        return [IdentityInfo(name, int(count), float(created), float(updated)) for name, count, created, updated
                in rows]

    def __len__(self) -> int:
        """Number of identities committed now (by any process)."""
        with self._lock:
            self._sync()
            return len(self._names)

    def __contains__(self, name: object) -> bool:
        """Whether an identity of that name is committed now (by any process)."""
        if not isinstance(name, str):
            return False
        try:
            name = normalize_identity_name(name)
        except GalleryError:
            return False
        with self._lock:
            self._sync()
            return any(unicodedata.normalize("NFC", known) == name for known in self._names.values())

    def stats(self) -> dict:
        """Counts, model, detector and threshold, for `gallery stats` and the service's health check."""
        with self._lock:
            self._sync()
            templates = len(self._index)
            identities = len(self._names)
        return {"path": str(self.path), "identities": identities, "templates": templates, "index": self.index_kind,
                "file_bytes": self.path.stat().st_size, "model": self.model_path, "detector": self.detector_path,
                "flip": self.flip,
                "threshold": self.threshold.to_dict(), "fingerprint": self.fingerprint.to_dict()}

    def search(self, embeddings: np.ndarray, k: int = 5, fingerprint: ModelFingerprint | None = None,
               ) -> list[list[Match]]:
        """Top-k identities per query embedding, by best template score (exact, or through the gallery's
        approximate index: see infer/search.py and infer/index.py)."""
        self.check_fingerprint(fingerprint)
        queries = self.check_queries(embeddings)
        with self._lock:
            self._sync()
            self._refuse_damaged()
            hits = self._index.search(queries, k)
            names = dict(self._names)
        return [[Match(names[h.identity], h.score) for h in row] for row in hits]

    def check_queries(self, embeddings: np.ndarray) -> np.ndarray:
        """Query embeddings as (N, D) float32, refused unless finite with norm at most 1 (scores then lie in
        [-1, 1])."""
        dim = self.fingerprint.embedding_dim
        queries = np.asarray(embeddings, np.float32)
        if queries.size % dim:
            raise GalleryError(f"gallery {self.path}: query embeddings must have {dim} values each, "
                               f"got shape {queries.shape}")
        queries = queries.reshape(-1, dim)
        norms = np.linalg.norm(queries.astype(np.float64), axis=1)
        bad = np.flatnonzero(~np.isfinite(norms) | (norms > 1.0 + NORM_TOLERANCE))
        if len(bad):
            raise GalleryError(f"gallery {self.path}: query embedding {int(bad[0])} is not a unit vector "
                               f"(norm {norms[bad[0]]:.6g}); search with unit embeddings")
        return queries

    def verified_templates(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict[int, str]]:
        """(template ids, owner ids, (M, D) unit vectors, owner id -> name) of every template, all verified;
        GalleryDamaged when any is damaged. What other indexes and stores are built from."""
        with self._lock:
            self._sync()
            self._refuse_damaged()
            index = self._index
            if isinstance(index, TemplateIndex):  # by template id, as when read from the file
                order = np.argsort(index.ids, kind="stable")
                return index.ids[order], index.owners[order], index.matrix[order], dict(self._names)
            try:  # an approximate index keeps no plain copy: read them again (verified as when loaded)
                rows = self._db.execute(
                    "SELECT id, identity_id, embedding, checksum FROM templates ORDER BY id").fetchall()
            except sqlite3.DatabaseError as err:
                raise _unreadable(self.path, err) from err
            ids, owners, vectors, damaged = self._verify(rows)
            if damaged:
                self._damaged = damaged
                self._refuse_damaged()
            return ids, owners, vectors, dict(self._names)

    def identify_faces(self, faces: list[FaceResult], k: int = 1,
                       fingerprint: ModelFingerprint | None = None) -> list[Identified]:
        """Decisions for faces: the top match when its score >= the gallery threshold, else unknown."""
        if not faces:
            return []
        matches = self.search(np.stack([f.embedding for f in faces]), max(k, 1), fingerprint)
        out = []
        for face, candidates in zip(faces, matches, strict=True):
            for match in candidates:
                try:
                    check_score(match.score)
                except ScoreError as err:
                    raise GalleryDamaged(f"gallery {self.path}: identity {match.name!r}: {err}") from err
            best = candidates[0] if candidates else None
            score = best.score if best else float("-inf")
            known = best is not None and self.threshold.accepts(score)
            out.append(Identified(face, best.name if known else None, score, self.threshold, candidates[:k]))
        return out


class _transaction:
    """BEGIN IMMEDIATE ... COMMIT, or ROLLBACK on any error (the connection is in autocommit mode); SQLite
    errors become GalleryFull (disk full) or GalleryNotWritable (read-only, locked, I/O) naming the file, and
    are remembered on `gallery` (for `write_problem`) until a change succeeds."""

    def __init__(self, db: sqlite3.Connection, path: Path, check: Callable[[], None] | None = None,
                 gallery: Gallery | None = None) -> None:
        self.db = db
        self.path = path
        self.check = check  # run after BEGIN and after COMMIT; raising refuses (or un-acknowledges) the change
        self.gallery = gallery

    def _failed(self, err: sqlite3.Error) -> GalleryNotWritable:
        refused = _write_error(self.path, err)
        if self.gallery is not None:
            self.gallery._failed_write = str(refused)
        return refused

    def __enter__(self) -> sqlite3.Connection:
        try:
            self.db.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as err:
            raise self._failed(err) from err
        if self.check is not None:
            try:
                self.check()
            except BaseException:
                self.db.execute("ROLLBACK")
                raise
        return self.db

    def __exit__(self, kind, value, traceback) -> None:
        if kind is None:
            try:
                self.db.execute("COMMIT")
            except sqlite3.Error as err:
                value = err
            else:
                if self.check is not None:
                    self.check()  # the file went away during the transaction: the commit is not acknowledged
                if self.gallery is not None:
                    self.gallery._failed_write = None
                return
        if self.db.in_transaction:
            self.db.execute("ROLLBACK")
        if isinstance(value, sqlite3.Error):
            raise self._failed(value) from value


def _no_tables_message(path: Path, err: Exception) -> str:
    """Why a file holds no gallery tables: never a gallery, or a gallery whose write-ahead log was removed
    before SQLite copied it into the file (everything committed since the last checkpoint lives in -wal)."""
    wal = path.with_name(path.name + "-wal")
    if path.stat().st_size == 0 or not wal.exists():
        return (f"{path}: not a marginface gallery: it holds no tables ({err}); if it was one, its write-ahead "
                f"log {wal.name} is gone — deleted before SQLite copied it into {path.name} — and the changes it "
                f"held are lost; restore both files from a backup, or create the gallery again")
    return f"{path}: not a marginface gallery ({err})"


def _migrate(db: sqlite3.Connection, path: Path) -> None:
    """Schema 1 or 2 -> 3 in one transaction (a crash leaves the old schema intact): 1 -> 2 adds
    templates.checksum and computes it for every stored template; 2 -> 3 adds the people tables and
    templates.face_id (NULL: every existing template stays an enrolled one, so identify answers as before).

    Bytes damaged before the checksum migration get a checksum of their damaged state; the finite and
    unit-norm checks still catch most such damage."""
    with _transaction(db, path):
        row = db.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
        version = row[0] if row is not None else None
        if version == str(SCHEMA_VERSION):
            return  # another process migrated it while this one waited for the lock
        columns = {row[1] for row in db.execute("PRAGMA table_info(templates)").fetchall()}
        if version == "1":
            if "checksum" not in columns:
                db.execute("ALTER TABLE templates ADD COLUMN checksum INTEGER")
            rows = db.execute("SELECT id, identity_id, embedding FROM templates").fetchall()
            db.executemany("UPDATE templates SET checksum = ? WHERE id = ?",
                           [(template_checksum(t, i, blob), t) for t, i, blob in rows if isinstance(blob, bytes)])
            log.info("gallery %s: checksums computed for %d templates", path, len(rows))
        for statement in _statements(_SCHEMA_PEOPLE + ("" if "face_id" in columns else _SCHEMA_TEMPLATE_FACE)):
            db.execute(statement)
        db.execute("CREATE INDEX IF NOT EXISTS templates_face ON templates(face_id)")
        db.execute("UPDATE meta SET value = ? WHERE key = 'schema_version'", (str(SCHEMA_VERSION),))
    log.info("gallery %s: migrated from schema %s to %d", path, version, SCHEMA_VERSION)


def _read_only_mount(path: Path) -> str | None:
    """Why the folder holding `path` cannot be written at all (a read-only mount), or None."""
    try:
        if os.statvfs(path.parent).f_flag & os.ST_RDONLY:
            return f"{path.parent} is on a read-only mount"
    except OSError:
        pass
    return None


def _connect_read_only(path: Path) -> sqlite3.Connection:
    """A connection that never writes. On a read-only mount SQLite cannot make the -shm file a WAL reader
    needs, so the file is opened immutable there: nobody can change a file on a read-only mount."""
    immutable = "&immutable=1" if _read_only_mount(path) else ""
    return sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro{immutable}", uri=True, check_same_thread=False,
                           isolation_level=None)


def _error_code(err: sqlite3.Error) -> int:
    """SQLite's primary result code of `err` (SQLITE_FULL, SQLITE_BUSY, ...): errors are told apart by it, not
    by their text."""
    return getattr(err, "sqlite_errorcode", 0) & 0xFF


def _write_error(path: Path, err: sqlite3.Error) -> GalleryNotWritable:
    """The error for a change SQLite refused: GalleryFull for a full disk, GalleryNotWritable otherwise."""
    code = _error_code(err)
    if code == sqlite3.SQLITE_FULL:
        return GalleryFull(f"{path}: cannot write the gallery: the disk holding it is full ({err}); nothing "
                           "was written")
    hint = {sqlite3.SQLITE_READONLY: "the file or its folder is read-only",
            sqlite3.SQLITE_BUSY: "another process holds its write lock"}.get(code, "nothing was written")
    return GalleryNotWritable(f"{path}: cannot write the gallery ({err}): {hint}")


def _unreadable(path: Path, err: sqlite3.Error) -> GalleryUnreadable:
    """The error for a read SQLite refused (damaged page or index, I/O error), naming the file."""
    return GalleryUnreadable(f"{path}: cannot read the gallery ({err}); `sqlite3 {path} 'PRAGMA integrity_check'` "
                             "shows what is damaged")


def _not_writable(path: Path, err: sqlite3.Error) -> GalleryError:
    """The error for a gallery SQLite cannot open: the file and its folder must be writable."""
    return GalleryError(f"cannot open gallery {path} for writing ({err}): the file and its folder {path.parent} "
                        f"must be writable (SQLite keeps its journal beside the file)")


MAX_NAME_LENGTH = 200
# Letters of other scripts (and Latin small capitals, IPA, digits) that look like Latin ones, for how a name reads
# (_fold: the look-alike rule and the "unknown" check). Both cases are listed; NFKC has folded full-width and math
# forms.
_LOOK_ALIKES = str.maketrans({look: latin for latin, looks in {
    "a": "аᴀɑα", "b": "вʙ", "c": "сϲᴄ", "d": "ԁ", "e": "еєε", "h": "һнʜ", "i": "іıι", "j": "ј", "k": "кκᴋ",
    "m": "мᴍ", "n": "ոռпπηɴ", "o": "оοօᴏ0", "p": "рρ", "q": "ԛ", "s": "ѕ", "t": "тτᴛ", "u": "սυʋᴜи", "y": "уү",
    "x": "хχ", "w": "ԝաѡωᴡɯ", "A": "АΑ", "B": "ВΒ", "C": "СϹ", "E": "ЕΕ", "H": "НΗ", "I": "ІΙ", "J": "Ј",
    "K": "КΚ", "M": "МΜ", "N": "Ν", "O": "ОΟՕ", "P": "РΡ", "S": "Ѕ", "T": "ТΤ", "U": "Ս", "X": "ХΧ", "W": "Ԝ",
}.items() for look in looks})


# Code points that show nothing (Unicode's Default_Ignorable_Code_Point set) and the fillers that show only a
# blank: a name holding them reads as the name without them. The blank ones count as a space (U+2800 braille blank
# is not default-ignorable but renders as one), the others as nothing.
_BLANKS = frozenset("\u115f\u1160\u2800\u3164\uffa0")
_IGNORABLE = (frozenset("\u00ad\u034f\u061c\u180e\ufeff") | frozenset(map(chr, range(0x17b4, 0x17b6)))
              | frozenset(map(chr, range(0x180b, 0x1810))) | frozenset(map(chr, range(0x200b, 0x2010)))
              | frozenset(map(chr, range(0x202a, 0x202f))) | frozenset(map(chr, range(0x2060, 0x2070)))
              | frozenset(map(chr, range(0xfe00, 0xfe10))) | frozenset(map(chr, range(0x1bca0, 0x1bca4)))
              | frozenset(map(chr, range(0x1d173, 0x1d17b))) | frozenset(map(chr, range(0xe0000, 0xe1000))))
_INVISIBLE = str.maketrans({**{c: " " for c in _BLANKS}, **{c: None for c in _IGNORABLE}})
_DOTTED = str.maketrans({"\u0130": "i", "\u0131": "i"})  # Turkish İ and dotless ı read as i
# What the look-alike rule ignores, in the words its messages use.
SAME_READING = ("case, spacing, Unicode form (NFKC), invisible characters and look-alike letters of other scripts "
                "do not count")


def _fold(name: str, *, marks: bool) -> str:
    """A name as it reads: NFKC, Turkish dotted/dotless i as i, casefolded, invisible code points dropped (blank
    fillers as spaces), combining marks kept or dropped (`marks`), look-alike letters as Latin, words single-spaced."""
    text = unicodedata.normalize("NFKC", name).translate(_DOTTED).translate(_INVISIBLE).translate(_LOOK_ALIKES)
    text = unicodedata.normalize("NFKC", text.casefold()).translate(_INVISIBLE)  # casefold may decompose
    if not marks:
        text = "".join(c for c in unicodedata.normalize("NFD", text) if unicodedata.category(c) != "Mn")
    return unicodedata.normalize("NFC", " ".join(text.translate(_LOOK_ALIKES).split()))


def _looks_like(name: str) -> str:
    """What a name reads as, diacritics aside (the 'unknown' check): name_spelling without combining marks."""
    return _fold(name, marks=False)


def name_spelling(name: str) -> str:
    """What tells names apart for a reader, the look-alike rule's one folding: NFKC, casefolded (Turkish İ and ı as
    i), invisible code points dropped (default-ignorables; blank fillers such as U+3164 and U+2800 as spaces),
    Cyrillic/Greek/Armenian look-alike letters as Latin, runs of spaces as one; diacritics still count ('José' is
    not 'Jose'). Two names of one spelling are look-alikes (LookAlikeName), in `Gallery.refuse_look_alike` and in
    enrolment's plan of several people."""
    return _fold(name, marks=True)


def normalize_identity_name(name: str) -> str:
    """The one form a name is stored and looked up in: Unicode NFC without surrounding spaces; GalleryError when
    it holds text that was not valid UTF-8 (a surrogate escape or U+FFFD, the decoders' replacement)."""
    name = unicodedata.normalize("NFC", str(name)).strip()
    broken = [c for c in name if c == "\ufffd" or unicodedata.category(c) == "Cs"]
    if broken:
        raise GalleryError(f"identity name {name!r} is not valid UTF-8 (holds {', '.join(map(repr, broken[:3]))}); "
                           "send names as UTF-8")
    return name


def check_identity_name(name: str) -> str:
    """A normalised identity name (normalize_identity_name), refused when empty, over MAX_NAME_LENGTH, holding
    control characters (a TAB or newline would break listings), '.' or '..' (a URL cannot address them), or
    reading as 'unknown' in any script or width (the word decisions use for a rejected face)."""
    name = normalize_identity_name(name)
    if not name:
        raise GalleryError("identity name must not be empty")
    if len(name) > MAX_NAME_LENGTH:
        raise GalleryError(f"identity name is {len(name)} characters long, at most {MAX_NAME_LENGTH} allowed")
    bad = sorted({repr(c) for c in name if unicodedata.category(c) in ("Cc", "Cf", "Zl", "Zp")})
    if bad:
        raise GalleryError(f"identity name {name!r} holds control characters ({', '.join(bad)})")
    if unicodedata.normalize("NFKC", name) in (".", ".."):
        raise GalleryError(f"identity name {name!r} cannot be addressed in a URL (clients collapse '.' and '..' "
                           "path segments); choose another name")
    if not name_spelling(name):
        raise GalleryError(f"identity name {name!r} holds only invisible characters (such as U+3164 or U+2800), so "
                           "no listing could show it; choose a name with letters")
    if _looks_like(name) == "unknown":
        raise GalleryError(f"identity name {name!r} reads as 'unknown', what decisions call a face that matches "
                           "nobody; choose another name")
    return name
