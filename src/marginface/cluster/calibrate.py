"""The clustering cut from an eval report at a FAR, and the all-pairs report that calibrates it.

A cut is a Threshold (marginface.infer.thresholds) read from a report's verification set at a FAR:
`cluster_threshold(report, far=...)`. `pairs_report` writes such a report from any labelled set of
embeddings, scoring every pair once (blocks of rows, never N×N at once) and keeping only the genuine scores
and the highest impostor scores the FARs need; the threshold at a FAR is computed as
marginface.eval.verification.impostor_threshold does (the lowest score accepted that lets at most
floor(FAR·impostors) impostor pairs through).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from marginface.cluster.errors import ClusterInputError, check_embeddings
from marginface.eval.verification import not_measurable
from marginface.infer.thresholds import Threshold

DEFAULT_FARS = (1e-3, 1e-4, 1e-5, 1e-6)


def cluster_threshold(report: str | Path, *, far: float | None = None, fpir: float | None = None,
                      set_name: str | None = None) -> Threshold:
    """The cosine cut calibrated in `report` at `far` (a verification set) or `fpir` (identification)."""
    return Threshold.from_report(report, far=far, fpir=fpir, set_name=set_name)


def _top(values: np.ndarray, count: int) -> np.ndarray:
    """The `count` largest of `values` (all of them when fewer), unordered."""
    if count >= len(values):
        return values
    return np.partition(values, len(values) - count)[len(values) - count:]


def all_pairs_scores(embeddings: np.ndarray, labels: np.ndarray, keep_impostors: int,
                     block_bytes: int = 64 * 2**20) -> tuple[np.ndarray, np.ndarray, int]:
    """(every genuine pair's score, the `keep_impostors` highest impostor scores, impostor pair count)."""
    x = check_embeddings(embeddings)
    labels = np.asarray(labels)
    if labels.shape != (len(x),):
        raise ClusterInputError(f"labels: expected shape ({len(x)},), found {labels.shape}")
    n = len(x)
    rows = max(1, block_bytes // (8 * max(n, 1)))
    genuine, top, impostors = [], np.zeros(0, np.float32), 0
    for start in range(0, n, rows):
        stop = min(n, start + rows)
        scores = x[start:stop] @ x[start:].T
        upper = np.arange(start, n)[None, :] > np.arange(start, stop)[:, None]
        same = labels[start:stop, None] == labels[None, start:]
        genuine.append(scores[upper & same])
        other = scores[upper & ~same]
        impostors += len(other)
        top = _top(np.concatenate([top, _top(other, keep_impostors)]), keep_impostors)
    return np.concatenate(genuine) if genuine else np.zeros(0, np.float32), np.sort(top)[::-1], impostors


def pairs_report(embeddings: np.ndarray, labels: np.ndarray, name: str, fars: tuple[float, ...] = DEFAULT_FARS,
                 ) -> dict:
    """An eval report (the `marginface eval --out` layout that Threshold.from_report reads) with one
    verification set: every pair of the labelled embeddings, thresholds and TAR at each FAR."""
    n = len(embeddings)
    impostor_pairs = n * (n - 1) // 2  # an upper bound, for how many scores to keep
    keep = int(np.floor(max(fars) * impostor_pairs + 1e-9)) + 1
    genuine, top, impostors = all_pairs_scores(embeddings, labels, keep)
    thresholds: dict[str, float | None] = {}
    tars: dict[str, float | None] = {}
    notes: dict[str, str] = {}
    for far in fars:
        key = f"{far:g}"
        allowed = int(np.floor(far * impostors + 1e-9))
        if allowed < 1:
            thresholds[key], tars[key], notes[key] = None, None, not_measurable(impostors, "impostor pairs",
                                                                                "FAR", far)
            continue
        value = float(np.nextafter(np.float64(top[allowed]), np.inf)) if allowed < len(top) else -1.0
        thresholds[key] = value
        tars[key] = float(np.mean(genuine >= value)) if len(genuine) else None
    entry = {"name": name, "protocol": "all pairs", "faces": n, "identities": int(len(np.unique(labels))),
             "genuine_pairs": int(len(genuine)), "impostor_pairs": impostors, "threshold_at_far": thresholds,
             "tar_at_far": tars, "far_notes": notes}
    return {"verification": [entry]}


def write_pairs_report(path: str | Path, embeddings: np.ndarray, labels: np.ndarray, name: str,
                       fars: tuple[float, ...] = DEFAULT_FARS) -> Path:
    """pairs_report written as JSON to `path` (its folder created)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(pairs_report(embeddings, labels, name, fars), indent=2) + "\n")
    return path
