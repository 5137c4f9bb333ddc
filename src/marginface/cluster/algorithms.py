"""`cluster_embeddings`: the one entry point, and the registry of methods it dispatches to by name.

Every method works from the same kNN graph (graph.knn_graph, never N×N) and the same cosine cut, and every
method honours the user's decisions (constraints.Constraints): the graph methods while they run, DBSCAN and
HDBSCAN by `constraints.enforce` on their result.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import numpy as np
from scipy import sparse

from marginface.cluster.constraints import Constraints, enforce, finish
from marginface.cluster.errors import (
    ClusterInputError,
    check_cannot_link,
    check_embeddings,
    check_fixed,
    check_threshold,
)
from marginface.cluster.graph import edge_list, knn_graph
from marginface.cluster.linkage import agglomerate
from marginface.cluster.whispers import chinese_whispers

log = logging.getLogger(__name__)

DEFAULT_K = 30


@dataclass(frozen=True)
class Graph:
    """A kNN graph as undirected edges plus each face's k-th neighbour score κ (and, for incremental
    assignment, how many faces of a known person each node stands for)."""

    n: int
    lo: np.ndarray
    hi: np.ndarray
    w: np.ndarray
    kappa: np.ndarray
    weight: np.ndarray | None = None

    @classmethod
    def from_knn(cls, neighbours: np.ndarray, scores: np.ndarray) -> Graph:
        """From (N, k) neighbour rows and cosine scores."""
        lo, hi, w = edge_list(neighbours, scores)
        if scores.shape[1]:
            last = scores[:, -1].astype(np.float64)
            kappa = np.where(np.isfinite(last), last, -1.0)
        else:
            kappa = np.full(len(scores), -1.0)
        return cls(len(neighbours), lo, hi, w, kappa)

    def distances(self, cut: float | None = None) -> sparse.csr_matrix:
        """Symmetric sparse cosine distances (1 − score) of the edges (at or above `cut`), zero diagonal
        stored as 1e-9 so that scikit-learn counts each face as its own neighbour."""
        keep = np.ones(len(self.w), bool) if cut is None else self.w >= cut
        lo, hi = self.lo[keep], self.hi[keep]
        d = np.maximum(1.0 - self.w[keep], 1e-9)
        diag = np.arange(self.n)
        return sparse.coo_matrix((np.concatenate([d, d, np.full(self.n, 1e-9)]),
                                  (np.concatenate([lo, hi, diag]), np.concatenate([hi, lo, diag]))),
                                 shape=(self.n, self.n)).tocsr()


Method = Callable[[Graph, float, int, Constraints], np.ndarray]  # -> group id per face


def _linkage(kind: str) -> Method:
    def run(graph: Graph, threshold: float, min_size: int, constraints: Constraints) -> np.ndarray:
        return agglomerate(graph.n, graph.lo, graph.hi, graph.w, graph.kappa, threshold, constraints, kind,
                           graph.weight)
    run.__doc__ = f"{kind} linkage over the graph's edges (linkage.agglomerate)."
    return run


def _whispers(graph: Graph, threshold: float, min_size: int, constraints: Constraints) -> np.ndarray:
    """Chinese Whispers on the edges at or above the cut."""
    return chinese_whispers(graph.n, graph.lo, graph.hi, graph.w, threshold, constraints)


def _dbscan(graph: Graph, threshold: float, min_size: int, constraints: Constraints) -> np.ndarray:
    """scikit-learn DBSCAN, eps = 1 − threshold (cosine distance), min_samples = min_size, on the graph."""
    from sklearn.cluster import DBSCAN

    raw = DBSCAN(eps=1.0 - threshold, min_samples=max(min_size, 1), metric="precomputed").fit_predict(
        graph.distances(threshold))
    return enforce(raw, constraints)


def _hdbscan(graph: Graph, threshold: float, min_size: int, constraints: Constraints) -> np.ndarray:
    """scikit-learn HDBSCAN (min_cluster_size = max(2, min_size)) on the graph's cosine distances (its
    components chained at distance 2, the largest); the threshold is not used (HDBSCAN picks its own cuts)."""
    from scipy.sparse.csgraph import connected_components
    from sklearn.cluster import HDBSCAN

    distances = graph.distances()
    count, component = connected_components(distances, directed=False)
    if count > 1:  # HDBSCAN needs one component: chain the components' first faces at the largest distance, 2
        heads = np.unique(component, return_index=True)[1]
        chain = sparse.coo_matrix((np.full(2 * (count - 1), 2.0), (np.concatenate([heads[:-1], heads[1:]]),
                                                                  np.concatenate([heads[1:], heads[:-1]]))),
                                  shape=distances.shape)
        distances = (distances + chain).tocsr()
    raw = HDBSCAN(min_cluster_size=max(2, min_size), metric="precomputed", copy=True).fit_predict(distances)
    return enforce(raw, constraints)


METHODS: dict[str, Method] = {
    "average": _linkage("average"),
    "average_known": _linkage("average_known"),
    "connected": _linkage("single"),
    "chinese_whispers": _whispers,
    "dbscan": _dbscan,
    "hdbscan": _hdbscan,
}


def check_method(method: str) -> Method:
    """The registered method, or ClusterInputError naming the choices."""
    if method not in METHODS:
        raise ClusterInputError(f"unknown clustering method {method!r}; expected one of {', '.join(METHODS)}")
    return METHODS[method]


def cluster_graph(graph: Graph, *, method: str, threshold: float, min_size: int = 1,
                  fixed: np.ndarray | None = None, cannot_link: Iterable[tuple[int, int]] = ()) -> np.ndarray:
    """Labels (see cluster_embeddings) from a graph already built."""
    run = check_method(method)
    threshold = check_threshold(threshold)
    if min_size < 1:
        raise ClusterInputError(f"min_size must be >= 1, got {min_size}")
    fixed = check_fixed(fixed, graph.n)
    constraints = Constraints(fixed, check_cannot_link(cannot_link, graph.n, fixed))
    groups = run(graph, threshold, min_size, constraints)
    labels = finish(groups, constraints, min_size)
    log.info("%s at %.4f: %d faces into %d clusters (%d left out)", method, threshold, graph.n,
             len(np.unique(labels[labels >= 0])), int((labels < 0).sum()))
    return labels


def cluster_embeddings(embeddings: np.ndarray, *, method: str, threshold: float, min_size: int = 1,
                       k: int = DEFAULT_K, fixed: np.ndarray | None = None,
                       cannot_link: Iterable[tuple[int, int]] = (), index: str = "auto") -> np.ndarray:
    """(N,) int64 person label per face of (N, D) unit embeddings; -1 = left unclustered.

    Args:
        method: a name in METHODS ('average' recommended).
        threshold: cosine similarity cut: groups whose linkage (or faces whose edge) is below it stay apart.
        min_size: free clusters with fewer faces are left out (-1); DBSCAN's min_samples.
        k: neighbours per face in the kNN graph.
        fixed: (N,) labels a user gave (-1 = free): kept as they are; free faces may join them; two fixed
            people are never merged. New people get labels above every fixed and cannot-link label.
        cannot_link: (face index, label) pairs: that face never gets that label.
        index: the kNN search ('auto', 'exact', 'hnsw', 'ivf'; see graph.knn_graph).
    """
    check_method(method)
    check_threshold(threshold)
    x = check_embeddings(embeddings)
    if len(x) == 0:
        return np.zeros(0, np.int64)
    neighbours, scores = knn_graph(x, k, index=index)
    return cluster_graph(Graph.from_knn(neighbours, scores), method=method, threshold=threshold,
                         min_size=min_size, fixed=fixed, cannot_link=cannot_link)
