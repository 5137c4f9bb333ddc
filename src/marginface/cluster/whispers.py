"""Chinese Whispers (Biemann 2006): label propagation on the graph's edges at or above the cut.

Every free face starts as its own label (or, next to a face a user fixed, as that person); in random
order, each takes the label with the largest summed edge weight among its neighbours, until no label
changes (or `iterations` rounds). Faces a user fixed hold their person's label throughout, and a face
never takes a person it must not be, so the decisions are honoured while it runs, not after.
"""

from __future__ import annotations

import numpy as np
from scipy import sparse

from marginface.cluster.constraints import Constraints


def chinese_whispers(n: int, lo: np.ndarray, hi: np.ndarray, w: np.ndarray, threshold: float,
                     constraints: Constraints, iterations: int = 20, seed: int = 0) -> np.ndarray:
    """(N,) group id per face (a face index, or N + fixed label for a person the user fixed)."""
    keep = w >= threshold
    lo, hi, w = lo[keep], hi[keep], w[keep]
    graph = sparse.coo_matrix((np.concatenate([w, w]), (np.concatenate([lo, hi]), np.concatenate([hi, lo]))),
                              shape=(n, n)).tocsr()
    fixed = constraints.fixed
    label = np.where(fixed >= 0, n + fixed, np.arange(n)).astype(np.int64)
    forbidden = {face: {n + value for value in values} for face, values in constraints.forbid.items()}
    free = np.flatnonzero((fixed < 0) & (np.diff(graph.indptr) > 0))
    rng = np.random.default_rng(seed)
    indptr, indices, weights = graph.indptr, graph.indices, graph.data
    if (fixed >= 0).any():  # seed: a free face next to a fixed person starts as its strongest such neighbour's
        to_fixed = graph[:, np.flatnonzero(fixed >= 0)].tocsr()
        seeded = np.flatnonzero((np.diff(to_fixed.indptr) > 0) & (fixed < 0))
        for face in seeded.tolist():
            row = to_fixed.getrow(face)
            order = np.argsort(-row.data)
            for column in row.indices[order].tolist():
                candidate = int(label[np.flatnonzero(fixed >= 0)[column]])
                if candidate not in forbidden.get(face, ()):
                    label[face] = candidate
                    break
    for _ in range(iterations):
        changed = 0
        for face in rng.permutation(free).tolist():
            start, stop = indptr[face], indptr[face + 1]
            votes: dict[int, float] = {}
            for j, weight in zip(indices[start:stop].tolist(), weights[start:stop].tolist(), strict=True):
                votes[int(label[j])] = votes.get(int(label[j]), 0.0) + weight
            banned = forbidden.get(face)
            if banned:
                votes = {lab: v for lab, v in votes.items() if lab not in banned}
            if not votes:
                continue
            best = max(votes.items(), key=lambda item: (item[1], -item[0]))[0]
            if best != label[face]:
                label[face] = best
                changed += 1
        if changed == 0:
            break
    return label
