"""Photos into face records (`add_photos`) and face records onto a new model (`reembed`), both over a People
store and a FaceRecognizer.

`reembed` computes every new embedding first, writing nothing, then writes them, the templates made from them
and the gallery's new model binding in one transaction: a crash or kill -9 before that COMMIT leaves the old
gallery as it was. Names, merges, splits and cannot-links live on the face and person rows, which it keeps.
A face whose photo is gone or changed (another sha256), and that has no thumbnail, cannot be recomputed; an
old-model embedding beside new-model ones would be compared as if comparable, so its embedding is cleared
(the face leaves search and clustering, keeps its person and marks) and it is listed in the report; a later
`reembed` with the photo back in place recomputes it.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import cv2
import numpy as np

from marginface.data.align import align_face
from marginface.data.image import encode_image
from marginface.fileio import sha256_file
from marginface.infer.faces import FaceResult
from marginface.infer.images import load_image
from marginface.infer.people import People, PeopleError, face_checksum
from marginface.infer.published import published
from marginface.infer.thresholds import Threshold, published_threshold

if TYPE_CHECKING:  # pragma: no cover - typing only
    from marginface.infer.recognizer import FaceRecognizer

log = logging.getLogger(__name__)
Progress = Callable[[int, int], None]
THUMBNAIL_SIZE = 112  # aligned crops, as the model sees them (resized for models of another input size)
MIN_IOU = 0.5  # a stored face and a new detection are the same face when their boxes overlap this much


@dataclass
class ScanReport:
    """What `add_photos` did: photos and faces added, photos already known, photos without a face, and the
    files that could not be read (path, reason), which are listed, never dropped silently."""

    photos: int = 0
    faces: int = 0
    known: int = 0
    without_face: list[str] = field(default_factory=list)
    unreadable: list[tuple[str, str]] = field(default_factory=list)
    face_ids: list[int] = field(default_factory=list)

    def to_dict(self) -> dict:
        """JSON-ready dict."""
        return {"photos": self.photos, "faces": self.faces, "known": self.known,
                "without_face": self.without_face, "unreadable": [list(u) for u in self.unreadable]}


def face_thumbnails(rgb: np.ndarray, faces: Sequence[FaceResult]) -> list[bytes]:
    """Each face's aligned THUMBNAIL_SIZE crop of the photo, JPEG-encoded: what `keep_thumbnails` stores."""
    return [encode_image(align_face(rgb, np.asarray(face.landmarks), THUMBNAIL_SIZE)) for face in faces]


def add_photos(people: People, recognizer: FaceRecognizer, paths: Iterable[str | Path],
               progress: Progress | None = None, *, keep_thumbnails: bool = False,
               workers: int | None = None) -> ScanReport:
    """Scan image files and folders into face records, one transaction per photo; photos whose bytes were
    scanned before (sha256) are skipped without detection. `keep_thumbnails` also stores each face's aligned
    112x112 crop (JPEG), which lets `reembed` and contact sheets work without the photo: faces are biometric
    data, so it is off by default. `workers`: photos scanned at once (FaceRecognizer.scan's default: one per
    core)."""
    from marginface.infer.recognizer import image_files

    people.gallery.check_fingerprint(recognizer.fingerprint)
    report = ScanReport()
    todo: list[Path] = []
    hashes: dict[Path, str] = {}
    for path in image_files(paths):
        if path.exists() and not path.is_file():  # a FIFO would block the hash forever; a device is no photo
            report.unreadable.append((str(path), "not a regular file (a FIFO, device or folder), so not a photo"))
            continue
        try:
            sha = sha256_file(path)
        except OSError as err:
            report.unreadable.append((str(path), err.strerror or str(err)))
            continue
        if people.known_photo(sha):
            report.known += 1
        else:
            hashes[path] = sha
            todo.append(path)
    for path, found in recognizer.scan(todo, progress, workers=workers):
        if isinstance(found, Exception):
            report.unreadable.append((str(path), str(found)))
            continue
        thumbnails = face_thumbnails(load_image(path), found) if keep_thumbnails and found else None
        ids = people.add_faces(str(Path(path).resolve()), hashes[path], found, thumbnails,
                               fingerprint=recognizer.fingerprint)
        if not found:
            report.without_face.append(str(path))
        elif ids:
            report.photos += 1
            report.faces += len(ids)
            report.face_ids += ids
        else:  # the same bytes under another name earlier in this scan
            report.known += 1
    log.info("gallery %s: %d photos scanned into %d faces (%d known, %d without a face, %d unreadable)",
             people.path, report.photos, report.faces, report.known, len(report.without_face),
             len(report.unreadable))
    return report


@dataclass(frozen=True)
class MissingFace:
    """A face `reembed` could not recompute: its photo is gone or changed and no thumbnail was kept."""

    face_id: int
    photo_path: str
    person: str | None
    reason: str

    def __str__(self) -> str:
        owner = f" of {self.person}" if self.person else ""
        return f"face {self.face_id}{owner} ({self.photo_path}): {self.reason}"


@dataclass
class ReembedReport:
    """What `reembed` did: faces recomputed (from new detections, from their stored landmarks when no new
    detection matched, from thumbnails), templates rebuilt, and the faces it could not recompute."""

    faces: int = 0
    from_landmarks: list[int] = field(default_factory=list)
    from_thumbnails: list[int] = field(default_factory=list)
    missing: list[MissingFace] = field(default_factory=list)
    templates: int = 0
    dropped_enrolled: dict[str, int] = field(default_factory=dict)
    model: str = ""

    def to_dict(self) -> dict:
        """JSON-ready dict."""
        return {"faces": self.faces, "from_landmarks": self.from_landmarks, "from_thumbnails": self.from_thumbnails,
                "missing": [vars(m) for m in self.missing], "templates": self.templates,
                "dropped_enrolled": self.dropped_enrolled, "model": self.model}


def iou(a: Iterable[float], b: Iterable[float]) -> float:
    """Intersection over union of two (x, y, w, h) boxes."""
    ax, ay, aw, ah = a
    bx, by, bw, bh = b
    w = max(0.0, min(ax + aw, bx + bw) - max(ax, bx))
    h = max(0.0, min(ay + ah, by + bh) - max(ay, by))
    union = aw * ah + bw * bh - w * h
    return w * h / union if union > 0 else 0.0


def _decode_thumbnail(blob: bytes, size: int) -> np.ndarray:
    rgb = load_image(blob, name="stored thumbnail")
    return rgb if rgb.shape[:2] == (size, size) else cv2.resize(rgb, (size, size), interpolation=cv2.INTER_AREA)


_FACE_ROWS = ("SELECT f.id, p.path, p.sha256, f.box, f.landmarks, f.thumbnail, f.identity_id, f.cluster_id, "
              "i.name FROM faces f JOIN photos p ON p.id = f.photo_id LEFT JOIN identities i ON i.id = f.identity_id")


def _recompute(recognizer: FaceRecognizer, rows: list[tuple], report: ReembedReport,
               progress: Progress | None) -> dict[int, tuple]:
    """face id -> (embedding, raw norm, box, landmarks, detection score or None) for the rows that can be
    recomputed; the others are appended to report.missing."""
    size = recognizer.embedder.input_size
    by_photo: dict[tuple[str, str], list[tuple]] = {}
    for row in rows:
        by_photo.setdefault((row[1], row[2]), []).append(row)
    out: dict[int, tuple] = {}
    for done, ((path, sha), faces) in enumerate(by_photo.items(), 1):
        problem = None
        rgb = None
        try:
            if not Path(path).is_file():
                problem = "the photo is gone"
            elif sha256_file(path) != sha:
                problem = "the photo changed since it was scanned (another sha256)"
            else:
                rgb = load_image(path)
        except (OSError, ValueError) as err:
            problem = f"the photo cannot be read ({err})"
        if rgb is not None:
            detected = recognizer.faces(rgb)
            free = list(range(len(detected)))
            unmatched = []
            for row in faces:
                box = json.loads(row[3])
                best = max(free, key=lambda k: iou(box, detected[k].box), default=None)
                if best is not None and iou(box, detected[best].box) >= MIN_IOU:
                    free.remove(best)
                    found = detected[best]
                    out[row[0]] = (found.embedding, found.raw_norm, found.box, np.asarray(found.landmarks).tolist(),
                                   found.detection_score)
                else:
                    unmatched.append(row)
            if unmatched:  # no new detection there: align from the stored landmarks, with the new model
                crops = np.stack([align_face(rgb, np.asarray(json.loads(r[4])), size) for r in unmatched])
                embeddings, norms = recognizer.embed_crops(crops)
                for row, embedding, norm in zip(unmatched, embeddings, norms, strict=True):
                    out[row[0]] = (embedding, float(norm), None, None, None)
                    report.from_landmarks.append(row[0])
        else:
            kept = [r for r in faces if r[5] is not None]
            for row in faces:
                if row[5] is None:
                    person = row[8] if row[6] is not None else (f"@{row[7]}" if row[7] is not None else None)
                    report.missing.append(MissingFace(row[0], path, person, f"{problem}; no thumbnail was kept"))
            if kept:
                crops = np.stack([_decode_thumbnail(r[5], size) for r in kept])
                embeddings, norms = recognizer.embed_crops(crops)
                for row, embedding, norm in zip(kept, embeddings, norms, strict=True):
                    out[row[0]] = (embedding, float(norm), None, None, None)
                    report.from_thumbnails.append(row[0])
        if progress is not None:
            progress(done, len(by_photo))
    return out


def reembed(people: People, recognizer: FaceRecognizer, progress: Progress | None = None, *,
            threshold: Threshold | None = None, drop_enrolled: bool = False) -> ReembedReport:
    """Recompute every face (and the templates made from faces) with `recognizer`'s model and bind the gallery
    to it (fingerprint, model, detector, flip, and `threshold`, required when the model changes, except onto
    the auto model, whose shipped identify threshold is then used; with the same model, None keeps the
    gallery's own).

    Templates enrolled from photos (`enroll`: no face record, no stored path) cannot be recomputed: with a new
    model they are refused (PeopleError naming their people) unless `drop_enrolled`, which deletes them and
    reports how many per person; with the same model they stay valid and are kept."""
    gallery = people.gallery
    changed = recognizer.fingerprint.key != gallery.fingerprint.key
    if changed and threshold is None and recognizer.fingerprint.weights_sha256 == published()["model"]["sha256"]:
        threshold = published_threshold("identify")  # onto the auto model: its shipped threshold
    if changed and threshold is None:
        raise PeopleError(f"gallery {people.path}: model {recognizer.model_path} is another model than the "
                          f"gallery's ({gallery.model_path}); give its identification threshold (the old one "
                          "means nothing for its scores)")
    report = ReembedReport(model=str(recognizer.model_path))
    with people.reading() as db:
        rows = db.execute(f"{_FACE_ROWS} ORDER BY f.id").fetchall()
    computed = _recompute(recognizer, rows, report, progress)
    missing = {m.face_id for m in report.missing}
    with people.change(full_reload=True) as db:
        enrolled = dict(db.execute("SELECT i.name, COUNT(*) FROM templates t JOIN identities i ON i.id = "
                                   "t.identity_id WHERE t.face_id IS NULL GROUP BY i.id").fetchall())
        if changed and enrolled and not drop_enrolled:
            names = ", ".join(f"{n!r} ({c})" for n, c in sorted(enrolled.items())[:10])
            raise PeopleError(
                f"gallery {people.path}: {sum(enrolled.values())} templates of {names} were enrolled from "
                "photos whose paths are not stored, so a new model cannot recompute them; nothing was changed "
                "(delete them with drop_enrolled / --drop-enrolled and enrol those people again after)")
        late = [r for r in db.execute(f"{_FACE_ROWS} ORDER BY f.id").fetchall()
                if r[0] not in computed and r[0] not in missing]
        if late:  # faces added while the others were computed: computed now, under the write lock
            computed.update(_recompute(recognizer, late, report, None))
        _bind(db, recognizer, threshold or gallery.threshold)
        gallery.read_binding()  # the new embedding size, for the checks below
        for face_id, (embedding, norm, box, landmarks, score) in computed.items():
            blob = np.asarray(embedding, np.float32).astype("<f4").tobytes()
            db.execute("UPDATE faces SET embedding = ?, checksum = ?, raw_norm = ?, box = COALESCE(?, box), "
                       "landmarks = COALESCE(?, landmarks), detection_score = COALESCE(?, detection_score), "
                       "face_size = COALESCE(?, face_size) WHERE id = ?",
                       (blob, face_checksum(face_id, blob), float(norm),
                        None if box is None else json.dumps([float(v) for v in box]),
                        None if landmarks is None else json.dumps(landmarks),
                        None if score is None else float(score),
                        None if box is None else float(min(box[2], box[3])), face_id))
        db.executemany("UPDATE faces SET embedding = NULL, checksum = NULL WHERE id = ?",
                       [(m.face_id,) for m in report.missing])
        db.execute("DELETE FROM templates WHERE face_id IS NOT NULL")
        if changed:
            db.execute("DELETE FROM templates WHERE face_id IS NULL")
            report.dropped_enrolled = enrolled
            # a clustering cut is calibrated for one model: the new one's first `cluster` run needs its own
            db.execute("DELETE FROM meta WHERE key = 'clustering'")
        people.sync_templates(db, [r[0] for r in db.execute("SELECT id FROM faces")])
        report.templates = db.execute("SELECT COUNT(*) FROM templates").fetchone()[0]
        report.faces = len(computed)
    log.info("gallery %s: re-embedded %d faces with %s (%d from landmarks, %d from thumbnails, %d missing)",
             people.path, report.faces, recognizer.model_path, len(report.from_landmarks),
             len(report.from_thumbnails), len(report.missing))
    return report


def _bind(db, recognizer: FaceRecognizer, threshold: Threshold) -> None:
    """Write the recognizer's model binding into `meta` (inside the caller's transaction)."""
    detector = recognizer.detector_path
    rows = {"fingerprint": json.dumps(recognizer.fingerprint.to_dict()), "threshold": json.dumps(threshold.to_dict()),
            "model": str(Path(recognizer.model_path).resolve()),
            "detector": json.dumps(str(Path(detector).resolve()) if detector is not None else None),
            "flip": json.dumps(bool(recognizer.flip)), "reembedded": str(time.time())}
    db.executemany("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", rows.items())
