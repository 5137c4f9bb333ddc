"""5-point face alignment: least-squares similarity transform (Umeyama) to the standard 112×112 template."""

from __future__ import annotations

import cv2
import numpy as np

# (x, y) of left eye, right eye, nose tip, left and right mouth corners in the 112 × 112 crop
# (left/right as seen in the image).
ARCFACE_TEMPLATE = np.array(
    [[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366], [41.5493, 92.3655], [70.7299, 92.2041]],
    dtype=np.float64,
)


def umeyama(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """2×3 similarity (rotation, uniform scale, translation) minimising Σ‖T(src_i) − dst_i‖² (Umeyama 1991)."""
    src, dst = np.asarray(src, np.float64), np.asarray(dst, np.float64)
    if src.shape != dst.shape or src.ndim != 2 or src.shape[1] != 2 or len(src) < 2:
        raise ValueError(f"need matching (N >= 2, 2) point sets, got {src.shape} and {dst.shape}")
    mu_s, mu_d = src.mean(0), dst.mean(0)
    s, d = src - mu_s, dst - mu_d
    var_s = (s**2).sum() / len(src)
    if var_s <= 0:
        raise ValueError("source points are all identical: no similarity transform exists")
    cov = d.T @ s / len(src)
    u, sigma, vt = np.linalg.svd(cov)
    sign = np.eye(2)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:
        sign[1, 1] = -1
    rotation = u @ sign @ vt
    scale = np.trace(np.diag(sigma) @ sign) / var_s
    translation = mu_d - scale * rotation @ mu_s
    return np.hstack([scale * rotation, translation[:, None]])


def alignment_matrix(landmarks: np.ndarray, size: int = 112) -> np.ndarray:
    """Similarity taking five (x, y) landmarks onto the template scaled to `size`."""
    landmarks = np.asarray(landmarks, np.float64).reshape(5, 2)
    return umeyama(landmarks, ARCFACE_TEMPLATE * (size / 112.0))


def align_face(image: np.ndarray, landmarks: np.ndarray, size: int = 112) -> np.ndarray:
    """Warp `image` so that its five landmarks land on the template; returns a size × size crop."""
    matrix = alignment_matrix(landmarks, size)
    return cv2.warpAffine(image, matrix, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)
