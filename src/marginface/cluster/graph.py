"""The k-nearest-neighbour graph of unit embeddings, built through marginface.infer.index in row blocks.

Never an N×N matrix: the exact kind scores one block of rows against all N at a time (block rows chosen so a
block's scores stay under `block_bytes`), the FAISS kinds search their own graph / cells. Each face's own
row is removed from its neighbour list; missing neighbours are index -1 with score -inf.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from marginface.cluster.errors import ClusterInputError, check_embeddings
from marginface.infer.index import INDEX_KINDS, VectorIndex, build_index

log = logging.getLogger(__name__)

AUTO_EXACT_MAX = 50_000  # 'auto' searches exactly up to this many faces, with HNSW beyond
DEFAULT_BLOCK_BYTES = 64 * 2**20
HNSW_GRAPH_EF = 64  # efSearch for graph building (the gallery's 256 buys top-1 recall a graph does not need)
# A smaller HNSW graph than the gallery's (m 32, efConstruction 80) for clustering: it builds and searches
# faster and still finds the neighbours above the cut, which is what a clustering graph needs; what it misses
# more often are neighbours far below the cut (bench/cluster.py's scale part measures LFW quality with it).
HNSW_GRAPH_PARAMS = {"m": 24, "ef_construction": 60}


def graph_index(embeddings: np.ndarray, kind: str, k: int = 30, **params: Any) -> VectorIndex:
    """An index over `embeddings` (ids = rows) built for kNN-graph queries of `k` neighbours."""
    if kind == "hnsw":
        params = {**HNSW_GRAPH_PARAMS, "ef_search": max(HNSW_GRAPH_EF, 2 * (k + 1)), **params}
    return build_index(kind, embeddings, **params)


def pick_index(n: int, index: str) -> str:
    """The index kind for `n` faces ('auto': exact up to AUTO_EXACT_MAX, else hnsw)."""
    if index == "auto":
        return "exact" if n <= AUTO_EXACT_MAX else "hnsw"
    if index not in INDEX_KINDS:
        raise ClusterInputError(f"unknown index {index!r}; expected auto or one of {', '.join(INDEX_KINDS)}")
    return index


def search_blocks(searcher: VectorIndex, queries: np.ndarray, k: int, rows_per_block: int
                  ) -> tuple[np.ndarray, np.ndarray]:
    """(M, k) ids and scores of `queries` in `searcher`, `rows_per_block` queries at a time."""
    ids = np.empty((len(queries), k), np.int64)
    scores = np.empty((len(queries), k), np.float32)
    for start in range(0, len(queries), rows_per_block):
        stop = min(start + rows_per_block, len(queries))
        ids[start:stop], scores[start:stop] = searcher.search(queries[start:stop], k)
    return ids, scores


def _drop_self(ids: np.ndarray, scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """(N, k) lists without each row's own id (the last entry dropped where the row's own id was absent)."""
    n = len(ids)
    is_self = ids == np.arange(n)[:, None]
    absent = ~is_self.any(axis=1)
    is_self[absent, -1] = True  # drop the weakest where self was not returned (duplicates, approximate index)
    keep = ~is_self
    return ids[keep].reshape(n, k), scores[keep].reshape(n, k)


def knn_graph(embeddings: np.ndarray, k: int, *, index: str = "auto", block_bytes: int = DEFAULT_BLOCK_BYTES,
              searcher: VectorIndex | None = None, **index_params: Any) -> tuple[np.ndarray, np.ndarray]:
    """(N, k) int64 neighbour rows and (N, k) float32 cosine scores of each face's k nearest other faces,
    best first. `index`: 'exact', 'hnsw', 'ivf' or 'auto'; `searcher`: an index already holding these
    embeddings under ids 0..N-1 (then `index` is not built)."""
    x = check_embeddings(embeddings)
    n = len(x)
    if k < 1:
        raise ClusterInputError(f"k (neighbours per face) must be >= 1, got {k}")
    k = min(k, max(n - 1, 0))
    if k == 0:
        return np.zeros((n, 0), np.int64), np.zeros((n, 0), np.float32)
    if searcher is None:  # a graph needs its k best, not the gallery's top-1 recall: a smaller graph and beam
        searcher = graph_index(x, pick_index(n, index), k, **index_params)
    rows_per_block = max(1, min(n, block_bytes // (4 * 3 * n)))  # scores, argpartition indices, copies
    ids, scores = search_blocks(searcher, x, k + 1, rows_per_block)
    log.info("kNN graph: %d faces, k=%d, %s index", n, k, searcher.kind)
    return _drop_self(ids, scores, k)


def edge_list(neighbours: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Undirected edges (i < j, each once) of a kNN graph with their scores, sorted by (i, j)."""
    n, k = neighbours.shape
    src = np.repeat(np.arange(n, dtype=np.int64), k)
    dst = neighbours.reshape(-1)
    w = scores.reshape(-1).astype(np.float64)
    ok = (dst >= 0) & (dst != src) & np.isfinite(w)
    src, dst, w = src[ok], dst[ok], w[ok]
    lo, hi = np.minimum(src, dst), np.maximum(src, dst)
    key = lo * max(n, 1) + hi
    key, first = np.unique(key, return_index=True)
    return lo[first], hi[first], w[first]
