"""Verification metrics: k-fold best-threshold accuracy (exact or arcface_torch's grid), ROC, AUC, EER, TAR@FAR.

Scores are cosine similarities (higher = more alike). The exact search evaluates every distinct score as
a threshold (sort + cumulative counts, O(n log n)) and places the chosen threshold halfway to the next
lower distinct score. arcface_torch instead tries squared-distance thresholds 0, 0.01, …, 3.99 on
‖e1 − e2‖² = 2 − 2·cos, i.e. cosine steps of 0.005, and keeps the first best: on the training folds it can
never beat the exact search; held-out accuracies of the two usually agree within a pair or two per fold.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from marginface.errors import InputError

ThresholdSearch = Literal["exact", "grid"]
DEFAULT_FARS = (1e-1, 1e-2, 1e-3, 1e-4, 1e-5, 1e-6)


@dataclass
class FoldResult:
    """Held-out accuracy of one fold and the threshold chosen on the others."""

    fold: int
    accuracy: float
    threshold: float


@dataclass
class VerificationResult:
    """Every verification number for one pair set."""

    accuracy_mean: float
    accuracy_std: float
    folds: list[FoldResult]
    auc: float
    eer: float
    tar_at_far: dict[str, float | None]
    far_notes: dict[str, str] = field(default_factory=dict)
    roc: dict[str, list[float]] = field(default_factory=dict)
    num_pairs: int = 0
    num_same: int = 0
    threshold_search: str = "exact"
    threshold_at_far: dict[str, float | None] = field(default_factory=dict)  # lowest accepted score per FAR
    accuracy_threshold: float | None = None  # best-accuracy threshold over all pairs (k-fold rule, every fold)

    def to_dict(self) -> dict:
        """JSON-ready dict."""
        return {
            "accuracy_mean": self.accuracy_mean, "accuracy_std": self.accuracy_std,
            "folds": [vars(f) for f in self.folds], "auc": self.auc, "eer": self.eer,
            "tar_at_far": self.tar_at_far, "far_notes": self.far_notes, "num_pairs": self.num_pairs,
            "num_same": self.num_same, "threshold_search": self.threshold_search,
            "threshold_at_far": self.threshold_at_far, "accuracy_threshold": self.accuracy_threshold,
        }


def _check(scores: np.ndarray, issame: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    scores, issame = np.asarray(scores, np.float64), np.asarray(issame, bool)
    if scores.shape != issame.shape or scores.ndim != 1:
        raise ValueError(f"scores and issame must be matching 1-D arrays, got {scores.shape} and {issame.shape}")
    if not np.all(np.isfinite(scores)):
        bad = int(np.flatnonzero(~np.isfinite(scores))[0])
        raise InputError(f"score[{bad}] = {scores[bad]} is not finite")
    return scores, issame


def best_threshold_exact(scores: np.ndarray, issame: np.ndarray) -> tuple[float, float]:
    """(threshold, accuracy) maximising accuracy of 'same iff score > threshold' over all distinct cuts."""
    scores, issame = _check(scores, issame)
    order = np.argsort(-scores, kind="stable")
    s, y = scores[order], issame[order]
    distinct_end = np.flatnonzero(np.r_[s[1:] != s[:-1], True])  # last index of each distinct score
    accept_same = np.cumsum(y)[distinct_end]  # same pairs accepted when cutting below that score
    accept_diff = (distinct_end + 1) - accept_same
    correct = accept_same + (len(s) - issame.sum() - accept_diff)
    correct_none = len(s) - issame.sum()  # threshold above every score: all rejected
    best = int(np.argmax(correct))
    if correct_none >= correct[best]:
        return float(s[0] + 1e-6), float(correct_none / len(s))
    upper = s[distinct_end[best]]
    lower = s[distinct_end[best] + 1] if distinct_end[best] + 1 < len(s) else upper - 1e-6
    return float((upper + lower) / 2.0), float(correct[best] / len(s))


def best_threshold_grid(scores: np.ndarray, issame: np.ndarray) -> tuple[float, float]:
    """arcface_torch's search: squared distance 2 − 2·cos against thresholds 0:0.01:4, first maximum."""
    scores, issame = _check(scores, issame)
    distance = 2.0 - 2.0 * scores
    grid = np.arange(0, 4, 0.01)
    accuracy = np.array([np.mean((distance < t) == issame) for t in grid])
    best = int(np.argmax(accuracy))
    return float(1.0 - grid[best] / 2.0), float(accuracy[best])


def _accuracy_at(scores: np.ndarray, issame: np.ndarray, threshold: float, search: ThresholdSearch) -> float:
    if search == "grid":  # the grid's rule is strict on distance: same iff 2 − 2cos < t
        return float(np.mean(((2.0 - 2.0 * scores) < 2.0 - 2.0 * threshold) == issame))
    return float(np.mean((scores > threshold) == issame))


def kfold_accuracy(scores: np.ndarray, issame: np.ndarray, folds: np.ndarray,
                   search: ThresholdSearch = "exact") -> list[FoldResult]:
    """For each fold: threshold chosen on the other folds, accuracy measured on this one."""
    scores, issame = _check(scores, issame)
    folds = np.asarray(folds)
    finder = best_threshold_exact if search == "exact" else best_threshold_grid
    results = []
    for fold in np.unique(folds):
        test = folds == fold
        train = ~test if (~test).any() else test  # a single fold is tuned and measured on itself
        threshold, _ = finder(scores[train], issame[train])
        results.append(FoldResult(int(fold), _accuracy_at(scores[test], issame[test], threshold, search), threshold))
    return results


def roc_curve(scores: np.ndarray, issame: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(FAR, TAR, thresholds) at every distinct score, from accept-nothing to accept-everything."""
    scores, issame = _check(scores, issame)
    positives, negatives = int(issame.sum()), int((~issame).sum())
    if positives == 0 or negatives == 0:
        raise InputError(f"ROC needs both same and different pairs, got {positives} same, {negatives} different")
    order = np.argsort(-scores, kind="stable")
    s, y = scores[order], issame[order]
    ends = np.flatnonzero(np.r_[s[1:] != s[:-1], True])
    tp, fp = np.cumsum(y)[ends], (ends + 1) - np.cumsum(y)[ends]
    far = np.r_[0.0, fp / negatives]
    tar = np.r_[0.0, tp / positives]
    return far, tar, np.r_[np.inf, s[ends]]


def auc_score(far: np.ndarray, tar: np.ndarray) -> float:
    """Area under the ROC curve (trapezoids; ties are handled by the curve's grouping)."""
    return float(np.sum(np.diff(far) * (tar[1:] + tar[:-1]) / 2.0))


def equal_error_rate(far: np.ndarray, tar: np.ndarray) -> float:
    """EER: where FAR equals FRR = 1 − TAR, linearly interpolated between curve points."""
    frr = 1.0 - tar
    diff = far - frr  # increasing from −1 to +1 along the curve
    i = int(np.searchsorted(diff, 0.0))
    if i == 0:
        return float(far[0])
    d0, d1 = diff[i - 1], diff[i]
    t = 0.0 if d1 == d0 else -d0 / (d1 - d0)
    return float(far[i - 1] + t * (far[i] - far[i - 1]))


def impostor_threshold(impostor_scores: np.ndarray, rate: float, accept_all: float) -> float | None:
    """The lowest accepted score (accept iff score >= it) at the strictest cut that lets at most
    floor(rate·N) of the N impostor scores through: just above the highest rejected impostor (the k-th
    highest, k = floor(rate·N) + 1); `accept_all` when every impostor may pass; None when rate·N < 1 (that
    rate cannot be measured on N impostors, see `not_measurable`). Shared by FAR (verification) and FPIR
    (identification)."""
    ordered = np.sort(np.asarray(impostor_scores, np.float64))[::-1]
    allowed = int(np.floor(rate * len(ordered) + 1e-9))
    if allowed < 1:
        return None
    if allowed >= len(ordered):
        return float(accept_all)
    return float(np.nextafter(ordered[allowed], np.inf))


def not_measurable(count: int, impostors: str, rate_name: str, rate: float) -> str:
    """The report note for a rate that `impostor_threshold` cannot measure on `count` impostors."""
    return f"not measurable: {count} {impostors}, {rate_name} {rate:g} needs at least {round(1 / rate)}"


def threshold_at_far(scores: np.ndarray, issame: np.ndarray, far_target: float) -> float | None:
    """The lowest score accepted (accept iff score >= it) at the strictest cut whose false accepts are at most
    far_target·N_impostor; None when there are fewer than 1/far_target impostor pairs."""
    scores, issame = _check(scores, issame)
    return impostor_threshold(scores[~issame], far_target, accept_all=scores.min())


def tar_at_far(scores: np.ndarray, issame: np.ndarray, far_target: float) -> float | None:
    """TAR at the strictest threshold whose false accepts are at most far_target·N_impostor; None when
    there are fewer than 1/far_target impostor pairs (that FAR cannot be measured)."""
    threshold = threshold_at_far(scores, issame, far_target)
    if threshold is None:
        return None
    return float(np.mean(np.asarray(scores, np.float64)[np.asarray(issame, bool)] >= threshold))


def evaluate_verification(scores: np.ndarray, issame: np.ndarray, folds: np.ndarray,
                          search: ThresholdSearch = "exact", fars: tuple[float, ...] = DEFAULT_FARS,
                          ) -> VerificationResult:
    """All verification metrics for one set of pair scores."""
    scores, issame = _check(scores, issame)
    fold_results = kfold_accuracy(scores, issame, folds, search)
    accuracies = np.array([f.accuracy for f in fold_results])
    far, tar, _ = roc_curve(scores, issame)
    negatives = int((~issame).sum())
    tars: dict[str, float | None] = {}
    thresholds: dict[str, float | None] = {}
    notes: dict[str, str] = {}
    for target in fars:
        key = f"{target:g}"
        thresholds[key] = threshold_at_far(scores, issame, target)
        tars[key] = tar_at_far(scores, issame, target)
        if tars[key] is None:
            notes[key] = not_measurable(negatives, "impostor pairs", "FAR", target)
    step = max(1, len(far) // 2000)  # keep the stored curve small
    return VerificationResult(
        accuracy_mean=float(accuracies.mean()), accuracy_std=float(accuracies.std()), folds=fold_results,
        auc=auc_score(far, tar), eer=equal_error_rate(far, tar), tar_at_far=tars, far_notes=notes,
        roc={"far": far[::step].tolist() + [1.0], "tar": tar[::step].tolist() + [1.0]},
        num_pairs=len(scores), num_same=int(issame.sum()), threshold_search=search,
        threshold_at_far=thresholds, accuracy_threshold=_overall_threshold(scores, issame, search),
    )


def _overall_threshold(scores: np.ndarray, issame: np.ndarray, search: ThresholdSearch) -> float:
    """The k-fold rule's threshold chosen on every pair, as a lowest accepted score (score >= it)."""
    if search == "grid":  # same iff 2 - 2cos < t, i.e. cos > 1 - t/2
        return float(np.nextafter(best_threshold_grid(scores, issame)[0], np.inf))
    return float(np.nextafter(best_threshold_exact(scores, issame)[0], np.inf))
