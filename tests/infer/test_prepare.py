"""FacePreprocessor and align_folder: non-112 models get rescaled crops (never centre-cropped), failures are named."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from marginface.data import decode_image
from marginface.data.align import ARCFACE_TEMPLATE, align_face
from marginface.data.synthetic import synthetic_face
from marginface.infer.detect import YuNetDetector
from marginface.infer.prepare import FacePreprocessor, align_folder


def test_aligned_112_crop_is_rescaled_for_a_128_model_not_centre_cropped() -> None:
    face = synthetic_face(7, 1, 0)  # an aligned 112x112 crop
    prep = FacePreprocessor(size=128)
    out = prep(face, "a.png")
    assert out.shape == (128, 128, 3)
    assert prep.rescaled == 1 and prep.fallbacks == 0 and prep.no_face == []
    # the same as aligning the crop's own landmarks (the template) to the template scaled to 128
    direct = align_face(face, ARCFACE_TEMPLATE, 128)
    assert np.abs(out.astype(int) - direct.astype(int)).mean() < 6


def test_photo_without_face_is_counted_and_named() -> None:
    prep = FacePreprocessor(size=112)
    out = prep(np.full((200, 160, 3), 90, np.uint8), "photos/empty.jpg")
    assert out.shape == (112, 112, 3)
    assert prep.fallbacks == 1 and prep.no_face == ["photos/empty.jpg"]
    assert prep(np.zeros((112, 112, 3), np.uint8)).shape == (112, 112, 3) and prep.fallbacks == 1


@pytest.fixture(scope="module")
def detector(shared_data: Path) -> YuNetDetector:
    return YuNetDetector(shared_data / "face_detection_yunet" / "face_detection_yunet_2023mar.onnx")


def test_align_folder_reports_no_face(tmp_path: Path, shared_data: Path, detector: YuNetDetector) -> None:
    raw = tmp_path / "raw"
    (raw / "Aaron_Eckhart").mkdir(parents=True)
    src = sorted((shared_data / "lfw" / "lfw-deepfunneled" / "Aaron_Eckhart").iterdir())[0]
    (raw / "Aaron_Eckhart" / "a.jpg").write_bytes(src.read_bytes())
    (raw / "Blank").mkdir()
    cv2.imwrite(str(raw / "Blank" / "b.png"), np.full((120, 120, 3), 200, np.uint8))
    (raw / "Blank" / "c.jpg").write_bytes(b"junk")
    report = align_folder(raw, tmp_path / "out", detector)
    assert (report.total, report.aligned) == (3, 1)
    assert report.no_face == ["Blank/b.png"] and report.unreadable == ["Blank/c.jpg"]
    assert decode_image((tmp_path / "out" / "Aaron_Eckhart" / "a.jpg").read_bytes()).shape == (112, 112, 3)
    assert "Blank/b.png" in (tmp_path / "out" / "no_face.txt").read_text()
