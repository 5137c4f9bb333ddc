"""Incremental assignment: the same people as a batch run, new labels above the old, constraints."""

from __future__ import annotations

import numpy as np
import pytest

from marginface.cluster import ClusterInputError, assign_incremental, cluster_embeddings
from marginface.cluster.incremental import existing_index
from marginface.cluster.metrics import bcubed_prf
from tests.cluster.conftest import blobs


@pytest.mark.parametrize("method", ["average", "chinese_whispers", "connected"])
def test_incremental_equals_batch_on_blobs(method: str) -> None:
    x, truth = blobs(people=10, per=8)
    batch = cluster_embeddings(x, method=method, threshold=0.5, k=10)
    labels = np.full(len(x), -1)
    parts = np.array_split(np.arange(len(x)), 4)
    labels[parts[0]] = cluster_embeddings(x[parts[0]], method=method, threshold=0.5, k=10)
    seen = parts[0]
    for part in parts[1:]:
        labels[part] = assign_incremental(x[seen], labels[seen], x[part], threshold=0.5, method=method, k=10)
        seen = np.concatenate([seen, part])
    assert bcubed_prf(batch, labels).f == 1.0 and bcubed_prf(truth, labels).f == 1.0


def test_new_people_get_labels_above_existing() -> None:
    x, truth = blobs(people=4, per=5)
    old = truth < 2
    labels = np.where(truth[old] == 0, 10, 20)
    new = assign_incremental(x[old], labels, x[~old], threshold=0.5, k=5)
    assert (new > 20).all() and len(set(new)) == 2
    again = assign_incremental(x[old], labels, x[old][:3], threshold=0.5, k=5)
    assert (again == labels[:3]).all()


def test_cannot_link_and_reused_index() -> None:
    x, truth = blobs(people=2, per=6)
    old = np.arange(len(x)) % 2 == 0
    labels = truth[old]
    searcher = existing_index(x[old], "exact")
    rest = np.flatnonzero(~old)
    pick = [rest[truth[rest] == 0][0], rest[truth[rest] == 1][0]]  # one new face of each person
    probe, person = x[pick], truth[pick]
    got = assign_incremental(x[old], labels, probe, threshold=0.5, k=5, searcher=searcher,
                             cannot_link=[(0, int(person[0]))])
    assert got[0] != person[0] and got[1] == person[1]


def test_empty_existing_and_errors() -> None:
    x, truth = blobs(people=2, per=4)
    got = assign_incremental(np.zeros((0, x.shape[1]), np.float32), np.zeros(0, int), x, threshold=0.5)
    assert bcubed_prf(truth, got).f == 1.0
    with pytest.raises(ClusterInputError, match="dimension"):
        assign_incremental(x, truth, x[:, :8] / np.linalg.norm(x[:, :8], axis=1, keepdims=True), threshold=0.5)
    with pytest.raises(ClusterInputError, match="existing_labels: expected shape"):
        assign_incremental(x, truth[:3], x, threshold=0.5)
