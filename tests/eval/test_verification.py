"""Verification metrics against brute force and hand-worked cases."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from marginface.eval.verification import (
    auc_score,
    best_threshold_exact,
    best_threshold_grid,
    equal_error_rate,
    evaluate_verification,
    kfold_accuracy,
    roc_curve,
    tar_at_far,
)


def _brute_best(scores: np.ndarray, issame: np.ndarray) -> float:
    candidates = np.r_[np.unique(scores) - 1e-9, scores.max() + 1]
    return max(float(np.mean((scores > t) == issame)) for t in candidates)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(st.integers(-20, 20), st.booleans()), min_size=1, max_size=60))
def test_exact_search_is_optimal(data) -> None:
    scores = np.array([s / 20 for s, _ in data])
    issame = np.array([b for _, b in data])
    threshold, accuracy = best_threshold_exact(scores, issame)
    assert accuracy == pytest.approx(_brute_best(scores, issame))
    assert np.mean((scores > threshold) == issame) == pytest.approx(accuracy)


def test_exact_never_worse_than_grid_on_training_data() -> None:
    rng = np.random.default_rng(0)
    issame = rng.random(600) < 0.5
    scores = np.where(issame, rng.normal(0.5, 0.2, 600), rng.normal(0.1, 0.2, 600))
    assert best_threshold_exact(scores, issame)[1] >= best_threshold_grid(scores, issame)[1]


def test_kfold_uses_other_folds() -> None:
    # fold 0 is separable at 0.5, fold 1 at −0.5: each fold's threshold comes from the other one.
    scores = np.array([0.6, 0.4, 0.7, 0.3, -0.4, -0.6, -0.3, -0.7])
    issame = np.array([True, False, True, False, True, False, True, False])
    folds = np.array([0, 0, 0, 0, 1, 1, 1, 1])
    results = kfold_accuracy(scores, issame, folds)
    assert results[0].threshold == pytest.approx(-0.5)
    assert results[0].accuracy == 0.5 and results[1].accuracy == 0.5


def test_roc_auc_eer_on_known_case() -> None:
    scores = np.array([0.9, 0.8, 0.7, 0.6])
    issame = np.array([True, False, True, False])
    far, tar, _ = roc_curve(scores, issame)
    np.testing.assert_allclose(far, [0, 0, 0.5, 0.5, 1.0])
    np.testing.assert_allclose(tar, [0, 0.5, 0.5, 1.0, 1.0])
    assert auc_score(far, tar) == pytest.approx(0.75)
    assert equal_error_rate(far, tar) == pytest.approx(0.5)
    perfect = np.array([0.9, 0.8, 0.1, 0.0]), np.array([True, True, False, False])
    far, tar, _ = roc_curve(*perfect)
    assert auc_score(far, tar) == 1.0 and equal_error_rate(far, tar) == 0.0


def test_tar_at_far_and_unmeasurable_targets() -> None:
    rng = np.random.default_rng(1)
    negatives, positives = rng.normal(0, 0.1, 1000), rng.normal(0.6, 0.1, 1000)
    scores = np.r_[positives, negatives]
    issame = np.r_[np.ones(1000, bool), np.zeros(1000, bool)]
    tar = tar_at_far(scores, issame, 1e-2)
    threshold = np.sort(negatives)[::-1][10]
    assert tar == pytest.approx(np.mean(positives > threshold))
    assert np.sum(negatives > threshold) <= 10
    assert tar_at_far(scores, issame, 1e-4) is None
    result = evaluate_verification(scores, issame, np.arange(2000) % 10)
    assert result.tar_at_far["0.0001"] is None and "needs at least 10000" in result.far_notes["0.0001"]
    assert result.tar_at_far["0.001"] is not None
    assert len(result.folds) == 10 and 0.99 < result.accuracy_mean <= 1.0


def test_non_finite_scores_rejected() -> None:
    with pytest.raises(ValueError, match=r"score\[1\] = nan"):
        best_threshold_exact(np.array([0.1, np.nan]), np.array([True, False]))


def test_report_roc_starts_at_the_smallest_measurable_far_and_thresholds_are_marked() -> None:
    """The plots do not draw FAR below 1 / impostor pairs, and the histogram names the chosen thresholds."""
    from marginface.eval.report import measurable_roc, score_thresholds

    rng = np.random.default_rng(0)
    issame = np.array([True] * 300 + [False] * 300)
    scores = np.where(issame, rng.normal(0.6, 0.1, 600), rng.normal(0.1, 0.1, 600))
    result = evaluate_verification(scores, issame, np.repeat(np.arange(2), 300))
    far, tar, smallest = measurable_roc(result)
    assert smallest == 1 / 300
    assert far.min() >= smallest and far.max() == 1.0 and len(far) == len(tar)
    labels = [label for label, _, _ in score_thresholds(result)]
    assert labels[0].startswith("best accuracy")
    assert any(label.startswith("FAR 0.01:") for label in labels)
