"""Pairwise and BCubed metrics against O(N²) references on random labellings."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from marginface.cluster.errors import ClusterInputError
from marginface.cluster.metrics import bcubed_prf, cluster_count, pairwise_prf, singletons


def brute_pairwise(truth: np.ndarray, pred: np.ndarray) -> tuple[float, float]:
    t, p = singletons(truth), singletons(pred)
    same_t = same_p = both = 0
    for i, j in itertools.combinations(range(len(t)), 2):
        same_t += t[i] == t[j]
        same_p += p[i] == p[j]
        both += (t[i] == t[j]) and (p[i] == p[j])
    return (both / same_p if same_p else 1.0), (both / same_t if same_t else 1.0)


def brute_bcubed(truth: np.ndarray, pred: np.ndarray) -> tuple[float, float]:
    t, p = singletons(truth), singletons(pred)
    precision = np.mean([np.mean(t[p == p[i]] == t[i]) for i in range(len(t))])
    recall = np.mean([np.mean(p[t == t[i]] == p[i]) for i in range(len(t))])
    return float(precision), float(recall)


labelling = st.lists(st.integers(-1, 5), min_size=1, max_size=40)


@settings(max_examples=60, deadline=None)
@given(labelling, st.data())
def test_metrics_match_brute_force(truth: list[int], data) -> None:
    pred = data.draw(st.lists(st.integers(-1, 5), min_size=len(truth), max_size=len(truth)))
    t, p = np.array(truth), np.array(pred)
    pw, bc = pairwise_prf(t, p), bcubed_prf(t, p)
    assert (pw.precision, pw.recall) == pytest.approx(brute_pairwise(t, p))
    assert (bc.precision, bc.recall) == pytest.approx(brute_bcubed(t, p))


def test_perfect_and_minus_one_singletons() -> None:
    truth = np.array([0, 0, 1, 1, 2])
    assert bcubed_prf(truth, truth).f == 1.0 and pairwise_prf(truth, truth).f == 1.0
    # -1 is a singleton each, never one big cluster
    assert pairwise_prf(np.array([0, 1, 2]), np.array([-1, -1, -1])).precision == 1.0
    assert bcubed_prf(np.array([0, 1, 2]), np.array([-1, -1, -1])).f == 1.0
    assert cluster_count(np.array([3, 3, -1, 7])) == 2 and cluster_count(np.array([3, 3, -1, 7]), 2) == 1


def test_shape_mismatch_is_an_input_error() -> None:
    with pytest.raises(ClusterInputError, match="same length"):
        pairwise_prf(np.zeros(3), np.zeros(4))
