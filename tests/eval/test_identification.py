"""Identification: split protocol and CMC / DIR@FPIR on constructed embeddings."""

from __future__ import annotations

import numpy as np
import pytest

from marginface.eval.identification import evaluate_identification, split_gallery_probes


def test_split_protocol() -> None:
    labels = np.repeat(np.arange(10), 4)
    labels = np.r_[labels, [10]]  # a singleton identity is not eligible
    split = split_gallery_probes(labels, gallery_per_identity=1, min_images=2, unknown_fraction=0.3)
    assert len(split.gallery) == 7 and len(split.unknown_probes) == 12 and len(split.probes) == 21
    gallery_ids = set(split.gallery_labels.tolist())
    assert not gallery_ids & set(labels[split.unknown_probes].tolist())
    assert 10 not in gallery_ids


def test_perfect_embeddings_and_impostor_rejection() -> None:
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(20, 64))
    labels = np.repeat(np.arange(20), 5)
    embeddings = centres[labels] + 0.05 * rng.normal(size=(100, 64))
    split = split_gallery_probes(labels, unknown_fraction=0.5)
    result = evaluate_identification(embeddings, split)
    assert result.rank1 == 1.0 and result.cmc[-1] == 1.0
    assert result.dir_at_fpir["0.1"] == pytest.approx(1.0)
    assert result.dir_at_fpir["0.01"] is None  # 50 unknown probes cannot measure FPIR 1e-2


def test_random_embeddings_are_near_chance() -> None:
    rng = np.random.default_rng(1)
    labels = np.repeat(np.arange(50), 4)
    split = split_gallery_probes(labels, unknown_fraction=0.0)
    result = evaluate_identification(rng.normal(size=(200, 32)), split)
    assert result.rank1 < 0.15 and result.dir_at_fpir["0.1"] is None
