"""New faces against faces already clustered: join an existing person or form new ones, without re-clustering.

The new faces' k nearest existing faces come from an index of the existing ones (one kNN query per new
face), their k nearest new faces from an index of the new ones. The method then runs on that local graph,
nodes = the new faces plus the existing faces they reached, with every clustered existing face fixed to
its label: a new face joins a person when its linkage to that person's reached faces passes the cut, two
existing people are never merged here (a full re-run may merge two people that new faces bridge: that
difference is measured in bench/cluster.py), and new people get labels above every existing one.
Existing faces left unclustered (-1) take part as free faces, so new faces can form a person with them;
their own labels are not returned (re-cluster to update them). Cost: O(M·(N + M)·D) for M new faces with
the exact index (or the index's search cost), never more than the M new faces' neighbourhoods.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

import numpy as np

from marginface.cluster.algorithms import DEFAULT_K, Graph, check_method, cluster_graph
from marginface.cluster.errors import ClusterInputError, check_embeddings, check_fixed, check_threshold
from marginface.cluster.graph import graph_index, knn_graph, pick_index, search_blocks
from marginface.infer.index import VectorIndex

log = logging.getLogger(__name__)


def existing_index(existing: np.ndarray, index: str = "auto") -> VectorIndex:
    """An index over existing faces (ids = rows) to pass to repeated assign_incremental calls."""
    x = check_embeddings(existing, "existing")
    return graph_index(x, pick_index(len(x), index))


def assign_incremental(existing: np.ndarray, existing_labels: np.ndarray, new: np.ndarray, *, threshold: float,
                       method: str = "average", cannot_link: Iterable[tuple[int, int]] = (), min_size: int = 1,
                       k: int = DEFAULT_K, index: str = "auto", searcher: VectorIndex | None = None) -> np.ndarray:
    """(M,) int64 labels of the M new faces: an existing label, a new label above every existing one, or -1.

    Args:
        existing: (N, D) unit embeddings already clustered; existing_labels their (N,) labels (-1 = none).
        new: (M, D) unit embeddings to place.
        cannot_link: (new face index, label) pairs: that new face never gets that label.
        searcher: an index over `existing` under ids 0..N-1 (existing_index), reused across calls.
    Other arguments as cluster_embeddings.
    """
    check_method(method)
    threshold = check_threshold(threshold)
    new = check_embeddings(new, "new")
    m = len(new)
    if m == 0:
        return np.zeros(0, np.int64)
    if len(existing) == 0:
        existing = np.zeros((0, new.shape[1]), np.float32)
        labels = np.zeros(0, np.int64)
    else:
        existing = check_embeddings(existing, "existing")
        labels = check_fixed(existing_labels, len(existing), "existing_labels")
    if existing.shape[1] != new.shape[1]:
        raise ClusterInputError(f"new faces have dimension {new.shape[1]}, existing faces {existing.shape[1]}")
    n = len(existing)
    if searcher is not None and len(searcher) != n:
        raise ClusterInputError(f"searcher holds {len(searcher)} faces, existing has {n}")
    kk = max(1, min(k, n)) if n else 0
    if n:
        searcher = searcher or graph_index(existing, pick_index(n, index), k)
        old_ids, old_scores = search_blocks(searcher, new, kk, max(1, (64 * 2**20) // (12 * n)))
    else:
        old_ids, old_scores = np.zeros((m, 0), np.int64), np.zeros((m, 0), np.float32)
    new_ids, new_scores = knn_graph(new, k, index="exact") if m > 1 else (np.zeros((m, 0), np.int64),
                                                                         np.zeros((m, 0), np.float32))
    reached = np.unique(old_ids[old_ids >= 0])
    local_of = np.full(n, -1, np.int64)
    local_of[reached] = m + np.arange(len(reached))
    # local graph: new faces 0..m-1, then the reached existing faces
    neighbours = np.concatenate([np.where(new_ids >= 0, new_ids, -1),
                                 np.where(old_ids >= 0, local_of[np.maximum(old_ids, 0)], -1)], axis=1)
    scores = np.concatenate([new_scores, old_scores], axis=1)
    order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    neighbours, scores = np.take_along_axis(neighbours, order, 1), np.take_along_axis(scores, order, 1)
    width = neighbours.shape[1]
    padded = np.full((m + len(reached), width), -1, np.int64)
    padded_scores = np.full((m + len(reached), width), -np.inf, np.float32)
    padded[:m], padded_scores[:m] = neighbours, scores
    graph = Graph.from_knn(padded, padded_scores)
    # A reached existing face of person L stands for |L| / (faces of L reached) faces, so a new face's average
    # linkage to L is over all of L's faces as in a batch run; the pairs the local graph does not hold are
    # credited with the new side's κ (the existing faces' own κ is set to 1, the upper bound).
    reached_labels = labels[reached]
    weight = np.ones(graph.n)
    known = reached_labels >= 0
    if known.any():
        totals = np.bincount(labels[labels >= 0])
        hits = np.bincount(reached_labels[known], minlength=len(totals))
        weight[m + np.flatnonzero(known)] = totals[reached_labels[known]] / hits[reached_labels[known]]
    kappa = graph.kappa.copy()
    kappa[m:] = 1.0
    graph = Graph(graph.n, graph.lo, graph.hi, graph.w, kappa, weight)
    fixed = np.concatenate([np.full(m, -1, np.int64), reached_labels])
    top = int(labels.max(initial=-1))
    links = [(int(face), int(label)) for face, label in cannot_link]
    for face, _ in links:
        if not 0 <= face < m:
            raise ClusterInputError(f"cannot_link: new face index {face} is outside [0, {m})")
    out = cluster_graph(graph, method=method, threshold=threshold, min_size=min_size, fixed=fixed,
                        cannot_link=links)[:m]
    fresh = out > top
    if fresh.any():  # new people numbered from just above every existing label, in order of first face
        first_new = max(top + 1, 0)
        codes = np.unique(out[fresh], return_inverse=True)[1]
        out[fresh] = first_new + codes
    log.info("incremental: %d new faces against %d existing: %d joined, %d new people, %d left out", m, n,
             int(((out >= 0) & (out <= top)).sum()), len(np.unique(out[out > top])), int((out < 0).sum()))
    return out
