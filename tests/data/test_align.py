"""The Umeyama similarity fit (exact, reflection-free, degenerate input refused) and align_face onto the template."""

from __future__ import annotations

import math

import numpy as np
import pytest

from marginface.data import ARCFACE_TEMPLATE, align_face, umeyama


def test_umeyama_recovers_similarity() -> None:
    angle, scale, shift = 0.3, 1.7, np.array([12.0, -5.0])
    rotation = np.array([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]])
    src = np.random.default_rng(0).uniform(0, 100, (5, 2))
    dst = src @ (scale * rotation).T + shift
    m = umeyama(src, dst)
    np.testing.assert_allclose(m[:, :2], scale * rotation, atol=1e-10)
    np.testing.assert_allclose(m[:, 2], shift, atol=1e-9)


def test_umeyama_identity_on_template_and_reflection_free() -> None:
    m = umeyama(ARCFACE_TEMPLATE, ARCFACE_TEMPLATE)
    np.testing.assert_allclose(m, np.hstack([np.eye(2), np.zeros((2, 1))]), atol=1e-10)
    mirrored = ARCFACE_TEMPLATE * np.array([-1.0, 1.0])
    assert np.linalg.det(umeyama(mirrored, ARCFACE_TEMPLATE)[:, :2]) > 0  # never a reflection


def test_align_face_moves_landmarks_to_template() -> None:
    image = np.zeros((250, 250, 3), np.uint8)
    landmarks = ARCFACE_TEMPLATE * 1.5 + 40
    for x, y in landmarks:
        image[int(round(y)), int(round(x))] = 255
    crop = align_face(image, landmarks)
    assert crop.shape == (112, 112, 3)
    for x, y in ARCFACE_TEMPLATE:
        assert crop[int(round(y)) - 1:int(round(y)) + 2, int(round(x)) - 1:int(round(x)) + 2].max() > 0


def test_umeyama_rejects_degenerate() -> None:
    with pytest.raises(ValueError, match="identical"):
        umeyama(np.ones((5, 2)), ARCFACE_TEMPLATE)
