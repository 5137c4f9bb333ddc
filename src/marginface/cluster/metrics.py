"""Clustering quality against true identities: pairwise and BCubed precision / recall / F, from contingency
counts (never N×N). Label -1 in either labelling means "not clustered": each such face is its own singleton."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from marginface.cluster.errors import ClusterInputError


@dataclass(frozen=True)
class PRF:
    """Precision, recall and their harmonic mean F."""

    precision: float
    recall: float
    f: float

    def to_dict(self) -> dict[str, float]:
        """JSON-ready dict."""
        return {"precision": self.precision, "recall": self.recall, "f": self.f}


def _f(p: float, r: float) -> float:
    return 0.0 if p + r == 0 else 2 * p * r / (p + r)


def singletons(labels: np.ndarray) -> np.ndarray:
    """Labels with every -1 replaced by a fresh label of its own (dense codes 0..C-1)."""
    labels = np.asarray(labels, np.int64)
    out = labels.copy()
    free = out < 0
    out[free] = out.max(initial=-1) + 1 + np.arange(int(free.sum()))
    return np.unique(out, return_inverse=True)[1].astype(np.int64)


def contingency(truth: np.ndarray, predicted: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(cell counts n_ij, true-cluster size a_i of each cell, predicted-cluster size b_j of each cell)."""
    truth, predicted = np.asarray(truth), np.asarray(predicted)
    if truth.shape != predicted.shape or truth.ndim != 1:
        raise ClusterInputError(f"truth and predicted must be (N,) arrays of the same length, found "
                                f"{truth.shape} and {predicted.shape}")
    t, p = singletons(truth), singletons(predicted)
    cells, counts = np.unique(t * (p.max(initial=0) + 1) + p, return_counts=True)
    ti, pj = cells // (p.max(initial=0) + 1), cells % (p.max(initial=0) + 1)
    return counts.astype(np.float64), np.bincount(t)[ti].astype(np.float64), np.bincount(p)[pj].astype(np.float64)


def pairwise_prf(truth: np.ndarray, predicted: np.ndarray) -> PRF:
    """Over face pairs: precision = same-person pairs among pairs put together; recall = put-together pairs
    among same-person pairs (1.0 where there are no pairs to count)."""
    n, a, b = contingency(truth, predicted)
    together = float((n * (n - 1) / 2).sum())
    t = singletons(truth)
    p = singletons(predicted)
    pred_pairs = float((np.bincount(p).astype(np.float64) * (np.bincount(p) - 1) / 2).sum())
    true_pairs = float((np.bincount(t).astype(np.float64) * (np.bincount(t) - 1) / 2).sum())
    precision = together / pred_pairs if pred_pairs else 1.0
    recall = together / true_pairs if true_pairs else 1.0
    return PRF(precision, recall, _f(precision, recall))


def bcubed_prf(truth: np.ndarray, predicted: np.ndarray) -> PRF:
    """BCubed (Bagga & Baldwin): per face, the share of its predicted cluster that is its person (precision)
    and of its person that is in its predicted cluster (recall), averaged over faces."""
    n, a, b = contingency(truth, predicted)
    total = n.sum()
    if total == 0:
        return PRF(1.0, 1.0, 1.0)
    precision = float((n * n / b).sum() / total)
    recall = float((n * n / a).sum() / total)
    return PRF(precision, recall, _f(precision, recall))


def cluster_count(labels: np.ndarray, min_size: int = 1) -> int:
    """Number of clusters (label >= 0) with at least `min_size` faces."""
    labels = np.asarray(labels, np.int64)
    sizes = np.bincount(labels[labels >= 0]) if (labels >= 0).any() else np.zeros(0, np.int64)
    return int((sizes >= max(min_size, 1)).sum())
