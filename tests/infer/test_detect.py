"""YuNet detection + alignment on real LFW photos, and the model fetcher against a local file."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from marginface.data import decode_image
from marginface.fileio import sha256_file
from marginface.infer.detect import YuNetDetector, pick_main_face
from marginface.infer.prepare import align_folder
from marginface.infer.published import fetch_model


@pytest.fixture(scope="module")
def detector(shared_data: Path) -> YuNetDetector:
    return YuNetDetector(shared_data / "face_detection_yunet" / "face_detection_yunet_2023mar.onnx")


def test_detects_lfw_face_with_ordered_landmarks(shared_data: Path, detector: YuNetDetector) -> None:
    path = sorted((shared_data / "lfw" / "lfw-deepfunneled" / "Aaron_Eckhart").iterdir())[0]
    rgb = decode_image(path.read_bytes())
    face = pick_main_face(detector.detect(rgb), rgb.shape)
    assert face is not None and face.score > 0.6
    left_eye, right_eye, nose, mouth_left, mouth_right = face.landmarks
    assert left_eye[0] < right_eye[0] and mouth_left[0] < mouth_right[0]
    assert left_eye[1] < nose[1] < mouth_left[1]
    assert abs(nose[0] - 125) < 40 and abs(nose[1] - 125) < 40  # deep-funneled faces are centred


def test_no_face_in_blank_image(detector: YuNetDetector) -> None:
    assert detector.detect(np.full((200, 200, 3), 128, np.uint8)) == []


def test_align_folder_reports_no_face(tmp_path: Path, shared_data: Path, detector: YuNetDetector) -> None:
    raw = tmp_path / "raw"
    (raw / "Aaron_Eckhart").mkdir(parents=True)
    src = sorted((shared_data / "lfw" / "lfw-deepfunneled" / "Aaron_Eckhart").iterdir())[0]
    (raw / "Aaron_Eckhart" / "a.jpg").write_bytes(src.read_bytes())
    (raw / "Blank").mkdir()
    import cv2

    cv2.imwrite(str(raw / "Blank" / "b.png"), np.full((120, 120, 3), 200, np.uint8))
    (raw / "Blank" / "c.jpg").write_bytes(b"junk")
    report = align_folder(raw, tmp_path / "out", detector)
    assert (report.total, report.aligned) == (3, 1)
    assert report.no_face == ["Blank/b.png"] and report.unreadable == ["Blank/c.jpg"]
    assert decode_image((tmp_path / "out" / "Aaron_Eckhart" / "a.jpg").read_bytes()).shape == (112, 112, 3)
    assert "Blank/b.png" in (tmp_path / "out" / "no_face.txt").read_text()


def test_fetch_model_uses_cache_and_checks_hash(tmp_path: Path) -> None:
    source = tmp_path / "model.onnx"
    source.write_bytes(b"weights")
    digest = sha256_file(source)
    cached = fetch_model(source.as_uri(), digest, tmp_path / "cache")
    assert cached.read_bytes() == b"weights"
    source.unlink()  # a second call must not need the source any more
    assert fetch_model(source.as_uri(), digest, tmp_path / "cache") == cached
    other = tmp_path / "other.onnx"
    other.write_bytes(b"tampered")
    with pytest.raises(ValueError, match="sha256"):
        fetch_model(other.as_uri(), digest, tmp_path / "cache2")


def test_fetch_model_unreachable_names_url_and_offline_target(tmp_path: Path) -> None:
    """Offline, the error names the URL, the expected hash and where to put the file; no partial file stays."""
    missing = (tmp_path / "gone" / "model.onnx").as_uri()
    with pytest.raises(OSError, match="cannot download .*model.onnx.*sha256 abc.*cache"):
        fetch_model(missing, "abc", tmp_path / "cache")
    assert list((tmp_path / "cache").iterdir()) == []
