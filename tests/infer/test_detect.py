"""YuNet detection on real LFW photos: ordered landmarks, and nothing found in a blank image."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from marginface.data import decode_image
from marginface.infer.detect import YuNetDetector, pick_main_face


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
