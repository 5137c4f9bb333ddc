"""Synthetic identities are deterministic and identity-stable; the Umeyama fit is exact on similarities."""

from __future__ import annotations

import math

import numpy as np
import pytest

from marginface.data import ARCFACE_TEMPLATE, SyntheticFaces, align_face, synthetic_face, synthetic_pairs, umeyama


def test_deterministic() -> None:
    np.testing.assert_array_equal(synthetic_face(1, 5, 3), synthetic_face(1, 5, 3))
    assert not np.array_equal(synthetic_face(1, 5, 3), synthetic_face(1, 5, 4))
    assert not np.array_equal(synthetic_face(1, 5, 3), synthetic_face(2, 5, 3))


def test_same_identity_closer_than_different() -> None:
    """Even raw pixels show identity structure: mean same-identity distance < different-identity distance."""
    def distance(a: np.ndarray, b: np.ndarray) -> float:
        return float(np.abs(a.astype(np.float32) - b.astype(np.float32)).mean())

    same = [distance(synthetic_face(0, k, 0), synthetic_face(0, k, 1)) for k in range(20)]
    diff = [distance(synthetic_face(0, k, 0), synthetic_face(0, k + 1, 1)) for k in range(20)]
    assert np.mean(same) < np.mean(diff)


def test_dataset_labels_and_held_out_pairs() -> None:
    ds = SyntheticFaces(4, 3, seed=0)
    assert len(ds) == 12 and ds[7].label == 2 and ds[7].image.shape == (112, 112, 3)
    pairs = synthetic_pairs(num_identities=20, pairs_per_fold=3, num_folds=2)
    assert len(pairs) == 12 and pairs.issame.sum() == 6 and pairs.num_folds == 2
    with pytest.raises(IndexError):
        ds[12]


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
