"""Offline face detection with 5 landmarks: YuNet through cv2.FaceDetectorYN, model file given by path."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from marginface.errors import InputError


@dataclass(frozen=True)
class Face:
    """A detected face: box (x, y, w, h), five (x, y) landmarks in template order, confidence."""

    box: np.ndarray
    landmarks: np.ndarray  # (5, 2): image-left eye, image-right eye, nose, image-left / right mouth corner
    score: float


class YuNetDetector:
    """YuNet face detector (ONNX) via OpenCV; landmarks come out in the alignment template's order."""

    def __init__(self, model_path: str | Path, score_threshold: float = 0.6, nms_threshold: float = 0.3,
                 top_k: int = 50) -> None:
        self.model_path = Path(model_path)
        if not self.model_path.is_file():
            raise FileNotFoundError(f"YuNet model {self.model_path} does not exist")
        try:
            self._detector = cv2.FaceDetectorYN.create(str(self.model_path), "", (320, 320), score_threshold,
                                                       nms_threshold, top_k)
        except cv2.error as err:
            raise InputError(f"{self.model_path}: not a model OpenCV can read ({_cv_reason(err)}); "
                             "expected a YuNet face_detection_yunet_*.onnx") from err
        self._size: tuple[int, int] = (320, 320)
        try:  # another ONNX network loads fine and only fails on its first image: find out now
            self._detector.detect(np.zeros((320, 320, 3), np.uint8))
        except cv2.error as err:
            raise InputError(f"{self.model_path} is not a YuNet face detector (its outputs do not match: "
                             f"{_cv_reason(err)})") from err

    def detect(self, rgb: np.ndarray) -> list[Face]:
        """All faces in an RGB uint8 image, best score first."""
        if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
            raise ValueError(f"expected an RGB uint8 (H, W, 3) image, got {rgb.dtype} {rgb.shape}")
        height, width = rgb.shape[:2]
        if (width, height) != self._size:
            self._detector.setInputSize((width, height))
            self._size = (width, height)
        _, found = self._detector.detect(cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
        if found is None:
            return []
        faces = [Face(row[:4].astype(np.float64), row[4:14].reshape(5, 2).astype(np.float64), float(row[14]))
                 for row in found]
        return sorted(faces, key=lambda f: -f.score)


def _cv_reason(err: cv2.error) -> str:
    """The informative line of an OpenCV error (its text spans several lines of C++ context)."""
    lines = [line.strip(" >") for line in str(err).splitlines() if line.strip(" >")]
    return (lines[-1] if lines else "OpenCV error")[:200]


def pick_main_face(faces: list[Face], image_shape: tuple[int, ...]) -> Face | None:
    """The face a photo is 'of': largest area, discounted by its centre's distance from the image centre."""
    if not faces:
        return None
    height, width = image_shape[:2]
    centre = np.array([width / 2.0, height / 2.0])
    half_diagonal = float(np.hypot(width, height)) / 2.0

    def rank(face: Face) -> float:
        x, y, w, h = face.box
        offset = float(np.hypot(*(np.array([x + w / 2, y + h / 2]) - centre))) / half_diagonal
        return w * h * (1.0 - 0.5 * min(offset, 1.0))

    return max(faces, key=rank)
