"""Synthetic faces for the clustering tests: well-separated people on the unit sphere."""

from __future__ import annotations

import numpy as np
import pytest


def blobs(people: int = 12, per: int = 8, dim: int = 32, noise: float = 0.05, seed: int = 0
          ) -> tuple[np.ndarray, np.ndarray]:
    """(unit embeddings, true labels): `people` random centres, `per` noisy faces each, shuffled."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((people, dim))
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    truth = np.repeat(np.arange(people), per)
    x = centres[truth] + noise * rng.standard_normal((len(truth), dim))
    order = rng.permutation(len(truth))
    x, truth = x[order], truth[order]
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32), truth


@pytest.fixture
def people() -> tuple[np.ndarray, np.ndarray]:
    """12 people x 8 faces in 32-d."""
    return blobs()
