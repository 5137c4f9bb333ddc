"""Synthetic identities are deterministic and identity-stable, with held-out verification pairs."""

from __future__ import annotations

import numpy as np
import pytest

from marginface.data import SyntheticFaces, synthetic_face, synthetic_pairs


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
