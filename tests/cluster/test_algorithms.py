"""Every registered method: blobs recovered exactly, constraints honoured, clear errors."""

from __future__ import annotations

import numpy as np
import pytest

from marginface.cluster import METHODS, ClusterInputError, cluster_embeddings
from marginface.cluster.metrics import bcubed_prf, pairwise_prf
from marginface.errors import InputError
from tests.cluster.conftest import blobs

SETTINGS = {"dbscan": {"min_size": 3}, "hdbscan": {"min_size": 2}}


@pytest.mark.parametrize("method", sorted(METHODS))
def test_blobs_recovered_exactly(method: str, people) -> None:
    x, truth = people
    labels = cluster_embeddings(x, method=method, threshold=0.5, k=10, **SETTINGS.get(method, {}))
    assert labels.dtype == np.int64 and labels.shape == truth.shape
    assert bcubed_prf(truth, labels).f == 1.0 and pairwise_prf(truth, labels).f == 1.0


@pytest.mark.parametrize("method", sorted(METHODS))
def test_fixed_labels_kept_and_never_merged(method: str) -> None:
    x, truth = blobs(people=4, per=6)
    fixed = np.full(len(x), -1)
    a = np.flatnonzero(truth == 0)
    b = np.flatnonzero(truth == 1)
    fixed[a[:2]] = 7      # the user named two faces of person 0 "7"
    fixed[a[2]] = 9       # and, wrongly, one more face of person 0 "9": 7 and 9 must stay apart
    fixed[b[0]] = 3
    labels = cluster_embeddings(x, method=method, threshold=0.5, k=10, fixed=fixed, **SETTINGS.get(method, {}))
    assert (labels[fixed >= 0] == fixed[fixed >= 0]).all()
    assert set(labels[b]) == {3}                                 # free faces joined their fixed person
    assert set(labels[a]) <= {7, 9, -1} and (labels[a] == 7).sum() >= 2
    new = labels[(fixed < 0) & ~np.isin(truth, [0, 1])]
    assert (new[new >= 0] > 9).all()                             # new people above every fixed label


@pytest.mark.parametrize("method", sorted(METHODS))
def test_cannot_link_respected(method: str) -> None:
    x, truth = blobs(people=3, per=6)
    fixed = np.full(len(x), -1)
    members = np.flatnonzero(truth == 0)
    fixed[members[0]] = 5
    banned = int(members[1])
    labels = cluster_embeddings(x, method=method, threshold=0.5, k=10, fixed=fixed, cannot_link=[(banned, 5)],
                                **SETTINGS.get(method, {}))
    assert labels[banned] != 5
    assert labels[members[0]] == 5
    assert labels[banned] >= 0 or method in ("dbscan", "hdbscan")  # still placed: with others, not with 5


def test_cannot_link_label_not_fixed_is_never_used() -> None:
    x, truth = blobs(people=3, per=5)
    labels = cluster_embeddings(x, method="average", threshold=0.5, k=8, cannot_link=[(0, 0), (1, 1), (2, 2)])
    assert labels[0] != 0 and labels[1] != 1 and labels[2] != 2 and labels.min() >= 3


def test_min_size_leaves_small_clusters_out() -> None:
    x, truth = blobs(people=3, per=5)
    lone = np.random.default_rng(1).standard_normal((1, x.shape[1])).astype(np.float32)
    x = np.concatenate([x, lone / np.linalg.norm(lone)])
    labels = cluster_embeddings(x, method="average", threshold=0.5, k=8, min_size=2)
    assert labels[-1] == -1 and (labels[:-1] >= 0).all()


def test_average_does_not_chain_what_single_linkage_chains() -> None:
    # a path of faces, each close to the next but the ends far apart: single linkage joins the whole path
    angles = np.linspace(0, np.pi / 2, 12)
    x = np.stack([np.cos(angles), np.sin(angles)], axis=1).astype(np.float32)
    single = cluster_embeddings(x, method="connected", threshold=0.95, k=11)
    average = cluster_embeddings(x, method="average", threshold=0.95, k=11)
    assert len(set(single)) == 1 and len(set(average)) > 1


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"method": "kmeans"}, "unknown clustering method 'kmeans'; expected one of average"),
    ({"threshold": 1.5}, "threshold is a cosine similarity cut"),
    ({"threshold": float("nan")}, "threshold is a cosine similarity cut"),
    ({"min_size": 0}, "min_size must be >= 1"),
    ({"k": 0}, "k .* must be >= 1"),
    ({"fixed": np.zeros(3)}, "fixed: expected shape"),
    ({"cannot_link": [(999, 1)]}, "face index 999 is outside"),
])
def test_errors_name_the_problem(kwargs: dict, message: str, people) -> None:
    x, _ = people
    args = {"method": "average", "threshold": 0.5, **kwargs}
    with pytest.raises(ClusterInputError, match=message) as err:
        cluster_embeddings(x, **args)
    assert isinstance(err.value, InputError)


def test_bad_embeddings_rejected(people) -> None:
    x, _ = people
    with pytest.raises(ClusterInputError, match="expected an \\(N, D\\) array"):
        cluster_embeddings(x[0], method="average", threshold=0.5)
    bad = x.copy()
    bad[3, 0] = np.nan
    with pytest.raises(ClusterInputError, match="row 3 holds NaN"):
        cluster_embeddings(bad, method="average", threshold=0.5)
    with pytest.raises(ClusterInputError, match="row 0 has norm 2"):
        cluster_embeddings(x * 2, method="average", threshold=0.5)
    with pytest.raises(ClusterInputError, match="fixed to label 4 and also forbidden"):
        fixed = np.full(len(x), -1)
        fixed[0] = 4
        cluster_embeddings(x, method="average", threshold=0.5, fixed=fixed, cannot_link=[(0, 4)])


def test_empty_and_single_face() -> None:
    assert cluster_embeddings(np.zeros((0, 4), np.float32), method="average", threshold=0.5).shape == (0,)
    one = np.array([[1.0, 0, 0, 0]], np.float32)
    assert cluster_embeddings(one, method="average", threshold=0.5).tolist() == [0]
