"""add_photos and reembed on real LFW photos with the real detector and model: names, merges and cannot-links
survive a reembed, a deleted photo is listed, thumbnails stand in for it, the same model keeps enrolled templates
and the threshold, a move onto the auto model takes its shipped threshold, and contact sheets are drawn."""

from __future__ import annotations

import dataclasses
import sqlite3
from pathlib import Path

import cv2
import numpy as np
import pytest

from marginface.infer.contact_sheet import contact_sheet
from marginface.infer.faces import ModelFingerprint
from marginface.infer.gallery import Gallery, GalleryModelMismatch
from marginface.infer.people import People, PeopleError
from marginface.infer.people_scan import add_photos, iou, reembed
from marginface.infer.published import published
from marginface.infer.recognizer import FaceRecognizer
from marginface.infer.thresholds import Threshold, published_threshold

from .test_people import nn_cluster

MODEL = "face_recognition_mobilefacenet/mobilefacenet_dynamic_batch.onnx"
DETECTOR = "face_detection_yunet/face_detection_yunet_2023mar.onnx"
NAMES = ["Colin_Powell", "George_W_Bush", "Tony_Blair"]


@pytest.fixture(scope="module")
def recognizer(shared_data: Path) -> FaceRecognizer:
    return FaceRecognizer(shared_data / MODEL, shared_data / DETECTOR, threshold=0.35, threads=1)


@pytest.fixture()
def photos(tmp_path: Path, shared_data: Path) -> Path:
    """photos/ with two LFW photos of three people each, a photo without a face and a broken file."""
    root = tmp_path / "photos"
    root.mkdir()
    for name in NAMES:
        for i in (1, 2):
            (root / f"{name}_{i}.jpg").write_bytes(
                (shared_data / "lfw" / "lfw-deepfunneled" / name / f"{name}_{i:04d}.jpg").read_bytes())
    cv2.imwrite(str(root / "wall.png"), np.full((120, 160, 3), 200, np.uint8))
    (root / "broken.jpg").write_bytes(b"not a photo")
    return root


def _gallery(tmp_path: Path, recognizer: FaceRecognizer) -> Gallery:
    return Gallery.create(tmp_path / "g.db", recognizer.fingerprint, Threshold.fixed(0.4),
                          model=recognizer.model_path, detector=recognizer.detector_path)


def _retrained(recognizer: FaceRecognizer) -> FaceRecognizer:
    """The same files under another fingerprint: stands in for a retrained model (not the auto one)."""
    other = FaceRecognizer(recognizer.model_path, recognizer.detector_path, threshold=0.35, threads=1)
    other.fingerprint = ModelFingerprint(**{**dataclasses.asdict(recognizer.fingerprint), "weights_sha256": "f" * 64})
    return other


def _cluster(people: People) -> None:
    snapshot = people.assignments()
    people.apply_clustering(snapshot.face_ids, nn_cluster(snapshot.embeddings, threshold=0.4, fixed=snapshot.fixed,
                                                          cannot_link=snapshot.cannot_link))


def _main_face(people: People, photo: Path) -> int:
    return next(f.id for f in people.faces() if Path(f.photo_path).name == photo.name and f.face_index == 0)


def test_scan_cluster_curate_and_reembed_keep_every_decision(tmp_path: Path, photos: Path,
                                                             recognizer: FaceRecognizer) -> None:
    with _gallery(tmp_path, recognizer) as gallery:
        people = People(gallery)
        report = add_photos(people, recognizer, [photos])
        assert report.photos == 6 and report.faces >= 6 and report.known == 0
        assert [Path(p).name for p in report.without_face] == ["wall.png"]
        assert [Path(p).name for p, _ in report.unreadable] == ["broken.jpg"]
        again = add_photos(people, recognizer, [photos])
        assert again.faces == 0 and again.known == 7  # six photos and the wall, by sha256, without detection
        _cluster(people)
        powell, bush, blair = ([_main_face(people, photos / f"{n}_{i}.jpg") for i in (1, 2)] for n in NAMES)
        people.name(people.split(powell), "Colin")
        people.name(people.split(bush[:1]), "George")
        people.merge("George", people.split(bush[1:]).ref)
        blair_cluster = people.split(blair)
        people.not_this_person([powell[0]], blair_cluster.ref)
        before = {f.id: (f.person, f.assigned_by) for f in people.faces()}
        embeddings = {int(i): e for i, e in zip(people.assignments().face_ids, people.assignments().embeddings,
                                                strict=True)}
        probe = recognizer.main_face(photos / "Colin_Powell_2.jpg")
        assert gallery.identify_faces([probe], fingerprint=recognizer.fingerprint)[0].name == "Colin"

        (photos / "Tony_Blair_2.jpg").unlink()
        result = reembed(people, FaceRecognizer.from_gallery(gallery, threads=1))
        assert [(m.face_id, Path(m.photo_path).name) for m in result.missing if m.face_id == blair[1]] == [
            (blair[1], "Tony_Blair_2.jpg")]
        assert all("the photo is gone; no thumbnail was kept" in m.reason for m in result.missing)
        assert result.faces == len(before) - len(result.missing) and result.templates == 4
        after = {f.id: (f.person, f.assigned_by) for f in people.faces()}
        assert after == before  # every name, merge, split kept
        assert people.show(blair_cluster.ref).not_faces == [powell[0]]
        gone = people.faces([blair[1]])[0]
        assert not gone.has_embedding and gone.person == blair_cluster
        assert blair[1] not in set(people.assignments().face_ids.tolist())
        for face_id, embedding in zip(people.assignments().face_ids, people.assignments().embeddings, strict=True):
            assert np.allclose(embedding, embeddings[int(face_id)], atol=1e-5)  # the same model: the same vectors
        assert gallery.identify_faces([probe], fingerprint=recognizer.fingerprint)[0].name == "Colin"
        assert gallery.check() == [] and people.check() == []

        sheet, left_out = contact_sheet(people, "George", columns=4)
        assert sheet.shape == (112, 224, 3) and left_out == 0 and sheet.std() > 10
        red, _ = contact_sheet(people, blair_cluster.ref)  # the deleted photo's tile is drawn red
        assert (red[:80, 112:] == (200, 0, 0)).all() and not (red[:80, :112] == (200, 0, 0)).all()


def test_thumbnails_stand_in_for_a_deleted_photo(tmp_path: Path, photos: Path, recognizer: FaceRecognizer) -> None:
    with _gallery(tmp_path, recognizer) as gallery:
        people = People(gallery)
        add_photos(people, recognizer, [photos / "Colin_Powell_1.jpg"], keep_thumbnails=True)
        face = _main_face(people, photos / "Colin_Powell_1.jpg")
        assert people.faces([face])[0].has_thumbnail
        old = people.assignments().embeddings[0]
        (photos / "Colin_Powell_1.jpg").unlink()
        result = reembed(people, recognizer)
        assert result.missing == [] and face in result.from_thumbnails
        new = people.assignments().embeddings[0]
        assert float(old @ new) > 0.95  # JPEG-encoded aligned crop: close to, not equal to, the original


def test_a_model_change_needs_a_threshold_and_says_what_enrolled_templates_lose(
        tmp_path: Path, photos: Path, recognizer: FaceRecognizer) -> None:
    with _gallery(tmp_path, recognizer) as gallery:
        people = People(gallery)
        add_photos(people, recognizer, [photos / "Colin_Powell_1.jpg"])
        people.name(people.split([_main_face(people, photos / "Colin_Powell_1.jpg")]), "Colin")
        gallery.enroll("Tony", [(recognizer.main_face(photos / "Tony_Blair_1.jpg"), "t1")], recognizer.fingerprint)
        other = _retrained(recognizer)
        with pytest.raises(PeopleError, match="give its identification threshold"):
            reembed(people, other)
        with pytest.raises(PeopleError, match=r"1 templates of 'Tony' \(1\) were enrolled from photos whose paths "
                                              "are not stored.*nothing was changed"):
            reembed(people, other, threshold=Threshold.fixed(0.3))
        assert gallery.fingerprint == recognizer.fingerprint and gallery.stats()["templates"] == 2
        result = reembed(people, other, threshold=Threshold.fixed(0.3), drop_enrolled=True)
        assert result.dropped_enrolled == {"Tony": 1} and result.templates == 1
        assert gallery.fingerprint == other.fingerprint and gallery.threshold == Threshold.fixed(0.3)
        with pytest.raises(GalleryModelMismatch):
            gallery.search(np.ones(recognizer.fingerprint.embedding_dim) / 100, fingerprint=recognizer.fingerprint)
        assert [i.name for i in gallery.identities()] == ["Colin", "Tony"]  # Tony is kept, to enrol again
    with Gallery.open(tmp_path / "g.db") as again:  # the new binding is committed
        assert again.fingerprint == other.fingerprint
        assert sqlite3.connect(tmp_path / "g.db").execute("SELECT COUNT(*) FROM templates").fetchone() == (1,)


def _enrolled_templates(gallery: Gallery) -> dict[int, np.ndarray]:
    """Template id -> vector of the templates enrolled from photos (no face record)."""
    ids, _, vectors, _ = gallery.verified_templates()
    with gallery.reading() as db:
        enrolled = {row[0] for row in db.execute("SELECT id FROM templates WHERE face_id IS NULL")}
    return {int(t): v for t, v in zip(ids, vectors, strict=True) if int(t) in enrolled}


def test_the_same_model_keeps_enrolled_templates_the_threshold_and_the_clustering_cut(
        tmp_path: Path, photos: Path, recognizer: FaceRecognizer) -> None:
    """With the gallery's own model, reembed changes no decision: enrolled templates stay valid (kept, not refused
    and not dropped), the gallery's threshold stays (not the shipped one, though this is the auto model) unless
    one is given, and the clustering cut stays calibrated."""
    assert recognizer.fingerprint.weights_sha256 == published()["model"]["sha256"]  # the auto model's weights
    with _gallery(tmp_path, recognizer) as gallery:  # threshold 0.4, not the shipped identify one
        people = People(gallery)
        add_photos(people, recognizer, [photos / "Colin_Powell_1.jpg"])
        people.name(people.split([_main_face(people, photos / "Colin_Powell_1.jpg")]), "Colin")
        tony = recognizer.main_face(photos / "Tony_Blair_1.jpg")
        gallery.enroll("Tony", [(tony, "t1")], recognizer.fingerprint)
        with people.change() as db:
            db.execute("INSERT INTO meta (key, value) VALUES ('clustering', '{\"cut\": 0.5}')")
        enrolled = _enrolled_templates(gallery)
        assert len(enrolled) == 1

        result = reembed(people, recognizer)
        assert result.dropped_enrolled == {} and result.templates == 2 and result.missing == []
        assert gallery.threshold == Threshold.fixed(0.4) != published_threshold("identify")
        assert people.setting("clustering") == '{"cut": 0.5}'
        after = _enrolled_templates(gallery)
        assert after.keys() == enrolled.keys()
        assert all(np.array_equal(after[t], enrolled[t]) for t in enrolled)  # the very bytes, still searched
        [decision] = gallery.identify_faces([tony], fingerprint=recognizer.fingerprint)
        assert decision.name == "Tony" and decision.score > 0.99

        reembed(people, recognizer, threshold=Threshold.fixed(0.45))  # a threshold given is the one written
        assert gallery.threshold == Threshold.fixed(0.45) and len(_enrolled_templates(gallery)) == 1
    with Gallery.open(tmp_path / "g.db") as again:
        assert again.threshold == Threshold.fixed(0.45) and again.fingerprint == recognizer.fingerprint


def test_onto_the_auto_model_its_shipped_identify_threshold_is_used(
        tmp_path: Path, photos: Path, recognizer: FaceRecognizer) -> None:
    """Another model needs a threshold, except onto the auto model: its shipped identify threshold then replaces
    the old model's (whose scores meant something else); a threshold given still wins."""
    other = _retrained(recognizer)
    with Gallery.create(tmp_path / "g.db", other.fingerprint, Threshold.fixed(0.4), model=other.model_path,
                        detector=other.detector_path) as gallery:
        people = People(gallery)
        add_photos(people, other, [photos / "Colin_Powell_1.jpg"])
        people.name(people.split([_main_face(people, photos / "Colin_Powell_1.jpg")]), "Colin")
        with people.change() as db:
            db.execute("INSERT INTO meta (key, value) VALUES ('clustering', '{\"cut\": 0.5}')")

        reembed(people, recognizer, threshold=Threshold.fixed(0.3))
        assert gallery.fingerprint == recognizer.fingerprint and gallery.threshold == Threshold.fixed(0.3)
        assert people.setting("clustering") is None  # calibrated for the old model
        reembed(people, other, threshold=Threshold.fixed(0.4))  # back onto the stand-in
        assert gallery.fingerprint == other.fingerprint

        result = reembed(people, recognizer)  # no threshold: the auto model's shipped one
        shipped = published_threshold("identify")
        assert gallery.fingerprint == recognizer.fingerprint and gallery.threshold == shipped
        assert shipped.value != 0.4 and "shipped with marginface" in gallery.threshold.source
        assert result.templates == 1 and result.missing == []
        probe = recognizer.main_face(photos / "Colin_Powell_1.jpg")
        [decision] = gallery.identify_faces([probe], fingerprint=recognizer.fingerprint)
        assert decision.name == "Colin" and decision.threshold == shipped
    with Gallery.open(tmp_path / "g.db") as again:
        assert again.threshold == shipped


def test_iou() -> None:
    assert iou((0, 0, 10, 10), (0, 0, 10, 10)) == 1.0 and iou((0, 0, 10, 10), (20, 0, 5, 5)) == 0.0
    assert iou((0, 0, 10, 10), (5, 0, 10, 10)) == pytest.approx(50 / 150)
