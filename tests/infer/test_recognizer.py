"""FaceRecognizer on real photos (YuNet + MobileFaceNet from shared data): faces, quality signals, large and
rotated photos, verify, scan, the 'auto' models from a local mirror, and parity with eval's embeddings."""

from __future__ import annotations

import io
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from marginface.eval.pipeline import embed_images
from marginface.infer.gallery import Gallery, GalleryModelMismatch
from marginface.infer.images import load_image
from marginface.infer.prepare import FacePreprocessor
from marginface.infer.recognizer import FaceRecognizer, NoFaceError
from marginface.infer.search import unit_rows
from marginface.infer.thresholds import Threshold, ThresholdError

MODEL = "face_recognition_mobilefacenet/mobilefacenet_dynamic_batch.onnx"
DETECTOR = "face_detection_yunet/face_detection_yunet_2023mar.onnx"


def lfw(shared_data: Path, name: str, i: int) -> Path:
    return shared_data / "lfw" / "lfw-deepfunneled" / name / f"{name}_{i:04d}.jpg"


@pytest.fixture(scope="module")
def recognizer(shared_data: Path) -> FaceRecognizer:
    return FaceRecognizer(shared_data / MODEL, shared_data / DETECTOR, threshold=Threshold.fixed(0.35))


def test_faces_give_box_landmarks_quality_and_unit_embedding(recognizer: FaceRecognizer, shared_data: Path) -> None:
    [face] = recognizer.faces(lfw(shared_data, "Aaron_Eckhart", 1))
    x, y, w, h = face.box
    assert 0 <= x < 250 and 0 <= y < 250 and 40 < w < 200 and 40 < h < 200
    assert face.landmarks.shape == (5, 2) and face.detection_score > 0.6
    assert face.embedding.dtype == np.float32 and face.embedding.shape == (recognizer.fingerprint.embedding_dim,)
    assert abs(float(np.linalg.norm(face.embedding)) - 1) < 1e-5
    assert face.raw_norm > 1 and face.face_size == min(w, h)
    assert set(face.to_dict()) == {"box", "landmarks", "detection_score", "raw_norm", "face_size"}
    assert len(face.to_dict(embedding=True)["embedding"]) == recognizer.fingerprint.embedding_dim


def test_every_face_returned_main_face_first(recognizer: FaceRecognizer, shared_data: Path) -> None:
    faces = recognizer.faces(lfw(shared_data, "Colin_Powell", 10))  # Powell in the middle, two people beside him
    assert len(faces) >= 2
    centre_x = [f.box[0] + f.box[2] / 2 for f in faces]
    assert abs(centre_x[0] - 125) < 30 and faces[0].face_size >= max(f.face_size for f in faces[1:])


def test_embedding_is_bit_identical_to_eval(recognizer: FaceRecognizer, shared_data: Path) -> None:
    paths = [lfw(shared_data, "George_W_Bush", i) for i in (1, 2, 3)]
    prep = FacePreprocessor(recognizer.detector, 112)
    raw = embed_images(3, lambda i: prep(load_image(paths[i])), recognizer.embedder, batch_size=64)
    mine = np.stack([recognizer.main_face(p).embedding for p in paths])
    np.testing.assert_array_equal(mine, unit_rows(raw))


def test_large_photo_is_detected_downscaled_and_aligned_at_full_resolution(recognizer: FaceRecognizer,
                                                                           shared_data: Path) -> None:
    small = load_image(lfw(shared_data, "Aaron_Eckhart", 1))
    big = np.full((1600, 2400, 3), 40, np.uint8)  # a 2400-wide photo: detected on a 1280-wide copy
    big[700:1200, 1300:1800] = cv2.resize(small, (500, 500), interpolation=cv2.INTER_CUBIC)
    a, b = recognizer.main_face(small), recognizer.main_face(big)
    expected = np.array(a.box) * 2 + [1300, 700, 0, 0]
    np.testing.assert_allclose(b.box, expected, atol=25)  # full-resolution pixels (box fit varies a little)
    assert b.face_size > 150 and float(a.embedding @ b.embedding) > 0.9


def test_phone_photo_orientation_is_honoured(recognizer: FaceRecognizer, shared_data: Path) -> None:
    upright = load_image(lfw(shared_data, "Aaron_Eckhart", 1))
    stored = Image.fromarray(np.ascontiguousarray(np.rot90(upright, 1)))  # sideways pixels ...
    exif = stored.getexif()
    exif[0x0112] = 6  # ... that EXIF says to rotate 90° clockwise for display
    buffer = io.BytesIO()
    stored.save(buffer, "JPEG", quality=95, exif=exif.tobytes())
    rotated = recognizer.main_face(buffer.getvalue())
    assert float(rotated.embedding @ recognizer.main_face(upright).embedding) > 0.9


def test_verify_decides_with_its_threshold(recognizer: FaceRecognizer, shared_data: Path) -> None:
    same = recognizer.verify(lfw(shared_data, "George_W_Bush", 1), lfw(shared_data, "George_W_Bush", 2))
    different = recognizer.verify(lfw(shared_data, "George_W_Bush", 1), lfw(shared_data, "Aaron_Eckhart", 1))
    assert same.same and not different.same and same.score > different.score
    assert same.to_dict()["threshold"] == {"value": 0.35, "source": "fixed"}
    with pytest.raises(NoFaceError, match="blank: no face found"):
        recognizer.main_face(np.full((200, 200, 3), 127, np.uint8), name="blank")


def test_models_other_than_auto_have_no_guessed_threshold(shared_data: Path) -> None:
    bare = FaceRecognizer(shared_data / MODEL, shared_data / DETECTOR)
    assert bare.threshold is None
    with pytest.raises(ThresholdError, match="no verification threshold"):
        bare.verify(lfw(shared_data, "George_W_Bush", 1), lfw(shared_data, "George_W_Bush", 2))


def test_scan_reports_every_file_with_progress(recognizer: FaceRecognizer, shared_data: Path, tmp_path: Path) -> None:
    folder = tmp_path / "photos"
    (folder / "sub").mkdir(parents=True)
    (folder / "a.jpg").write_bytes(lfw(shared_data, "Aaron_Eckhart", 1).read_bytes())
    (folder / "sub" / "b.jpg").write_bytes(lfw(shared_data, "Colin_Powell", 10).read_bytes())
    cv2.imwrite(str(folder / "c_blank.png"), np.full((100, 100, 3), 90, np.uint8))
    (folder / "d_junk.jpg").write_bytes(b"not an image")
    calls: list[tuple[int, int]] = []
    recognizer.batch_size = 2  # several batches
    try:
        results = dict(recognizer.scan([folder], progress=lambda done, total: calls.append((done, total))))
    finally:
        recognizer.batch_size = 32
    assert sorted(p.name for p in results) == ["a.jpg", "b.jpg", "c_blank.png", "d_junk.jpg"]
    assert len(results[folder / "a.jpg"]) == 1 and len(results[folder / "sub" / "b.jpg"]) >= 2
    assert results[folder / "c_blank.png"] == []
    assert "d_junk.jpg: not an image" in str(results[folder / "d_junk.jpg"])
    assert calls[-1] == (4, 4) and [d for d, _ in calls] == sorted(d for d, _ in calls)
    direct = recognizer.main_face(folder / "a.jpg").embedding
    np.testing.assert_array_equal(results[folder / "a.jpg"][0].embedding, direct)


def test_parallel_scan_equals_serial_on_real_photos(recognizer: FaceRecognizer, shared_data: Path,
                                                    tmp_path: Path) -> None:
    names = ["Aaron_Eckhart", "Colin_Powell", "George_W_Bush", "Tony_Blair"]
    files = [lfw(shared_data, name, i) for name in names for i in (1, 2, 3) if lfw(shared_data, name, i).is_file()]
    junk = tmp_path / "junk.jpg"
    junk.write_bytes(b"\xff\xd8\xff damaged")
    files.insert(5, junk)
    cv2.imwrite(str(blank := tmp_path / "blank.png"), np.full((100, 100, 3), 90, np.uint8))
    files.insert(8, blank)
    recognizer.batch_size = 3  # several batches per worker
    try:
        serial = list(recognizer.scan(files, workers=1))
        parallel = list(recognizer.scan(files, workers=3))
    finally:
        recognizer.batch_size = 32
    assert [path for path, _ in serial] == [path for path, _ in parallel] == files
    assert isinstance(parallel[5][1], Exception) and "junk.jpg" in str(parallel[5][1]) and parallel[8][1] == []
    assert str(parallel[5][1]) == str(serial[5][1])
    for (_, a), (_, b) in zip(serial, parallel, strict=True):
        if isinstance(a, Exception):
            continue
        assert [f.box for f in a] == [f.box for f in b]
        for fa, fb in zip(a, b, strict=True):
            np.testing.assert_allclose(fb.embedding, fa.embedding, rtol=0, atol=1e-6)
    assert sum(len(found) for _, found in parallel if isinstance(found, list)) >= len(files) - 2  # a face each


def test_from_gallery_checks_the_model(recognizer: FaceRecognizer, shared_data: Path, tmp_path: Path) -> None:
    with Gallery.create(tmp_path / "g.db", recognizer.fingerprint, Threshold.fixed(0.4),
                        model=recognizer.model_path, detector=recognizer.detector_path) as gallery:
        again = FaceRecognizer.from_gallery(gallery)
        assert again.fingerprint == recognizer.fingerprint and again.threshold == Threshold.fixed(0.4)
        gallery.enroll("Aaron", [(recognizer.main_face(lfw(shared_data, "Aaron_Eckhart", 1)), None)],
                       recognizer.fingerprint)
        [decision] = recognizer.identify(lfw(shared_data, "Aaron_Eckhart", 1), gallery)
        assert decision.name == "Aaron" and decision.score == pytest.approx(1.0, abs=1e-6)
        gallery.model_path = str(shared_data / DETECTOR)  # as if the file had changed under the gallery
        with pytest.raises((GalleryModelMismatch, ValueError)):
            FaceRecognizer.from_gallery(gallery)


def test_auto_fetches_published_models_from_a_mirror(shared_data: Path, tmp_path: Path) -> None:
    auto = FaceRecognizer("auto", "auto", cache_dir=tmp_path / "cache", mirror=shared_data.as_uri())
    assert auto.model_path.parent == tmp_path / "cache" and auto.detector_path.parent == tmp_path / "cache"
    assert auto.fingerprint.weights_sha256 == "0c9ad2a83969fc82155706f7020e6926b4a1a90a5476fff4a5588dfe207f64a4"
    assert auto.threshold is not None and "FAR" in auto.threshold.source and "shipped" in auto.threshold.source
    assert auto.verify(lfw(shared_data, "George_W_Bush", 1), lfw(shared_data, "George_W_Bush", 2)).same
    offline = FaceRecognizer("auto", "auto", cache_dir=tmp_path / "cache", mirror="file:///nonexistent")
    assert offline.model_path == auto.model_path  # what a mirror fetched is found later under the same name
