"""kNN graph: exact neighbours without an N×N matrix."""

from __future__ import annotations

import tracemalloc

import numpy as np

from marginface.cluster.graph import edge_list, knn_graph
from tests.cluster.conftest import blobs


def test_exact_neighbours_match_brute_force() -> None:
    x, _ = blobs(people=5, per=10)
    ids, scores = knn_graph(x, 6, index="exact", block_bytes=4096)  # many small blocks
    full = x @ x.T
    np.fill_diagonal(full, -np.inf)
    best = np.sort(full, axis=1)[:, ::-1][:, :6]
    assert np.allclose(scores, best, atol=1e-6)
    assert not (ids == np.arange(len(x))[:, None]).any()


def test_edges_undirected_and_unique() -> None:
    x, _ = blobs(people=3, per=6)
    lo, hi, w = edge_list(*knn_graph(x, 4, index="exact"))
    assert (lo < hi).all() and len(set(zip(lo.tolist(), hi.tolist(), strict=True))) == len(lo)


def test_no_n_by_n_allocation() -> None:
    rng = np.random.default_rng(0)
    n = 8_000  # an N×N float32 matrix would be 244 MiB, three times the limit below
    x = rng.standard_normal((n, 16)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    tracemalloc.start()
    ids, _ = knn_graph(x, 5, index="exact", block_bytes=16 * 2**20)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert ids.shape == (n, 5)
    assert peak < 80 * 2**20, f"peak {peak / 2**20:.0f} MiB; an N×N float32 matrix is {n**2 * 4 / 2**20:.0f} MiB"
