"""Template indexes: exact top-k against a sort, FAISS recall@1 against exact, removal, missing faiss."""

from __future__ import annotations

import sys

import numpy as np
import pytest

from marginface.infer.index import ExactIndex, build_index, make_index


def _unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


@pytest.fixture(scope="module")
def templates() -> np.ndarray:
    return _unit(np.random.default_rng(0).standard_normal((4000, 64)))


def _probes(templates: np.ndarray, count: int = 300, noise: float = 1.0, seed: int = 1) -> np.ndarray:
    """Noisy copies of the first `count` templates (cosine to their source about 0.7, like same-person pairs)."""
    rng = np.random.default_rng(seed)
    return _unit(templates[:count] + noise * _unit(rng.standard_normal((count, templates.shape[1]))))


def test_exact_matches_a_full_sort(templates: np.ndarray) -> None:
    ids = np.arange(len(templates), dtype=np.int64) * 10 + 7  # ids are not row numbers
    index = build_index("exact", templates, ids)
    queries = _unit(np.random.default_rng(2).standard_normal((25, 64)))
    found_ids, found_scores = index.search(queries, 5)
    full = queries @ templates.T
    expected_rows = np.argsort(-full, axis=1)[:, :5]
    np.testing.assert_array_equal(found_ids, ids[expected_rows])
    np.testing.assert_allclose(found_scores, np.take_along_axis(full, expected_rows, axis=1), rtol=1e-5)
    assert found_scores.dtype == np.float32 and found_ids.dtype == np.int64


def test_exact_pads_when_k_exceeds_the_templates() -> None:
    index = ExactIndex(3)
    ids, scores = index.search(np.eye(3, dtype=np.float32)[:1], 2)
    assert ids.tolist() == [[-1, -1]] and np.isneginf(scores).all()
    index.add(np.eye(3, dtype=np.float32)[:2], np.array([5, 6]))
    ids, scores = index.search(np.eye(3, dtype=np.float32)[1], 4)
    assert ids.tolist() == [[6, 5, -1, -1]]
    assert scores[0, :2].tolist() == [1.0, 0.0] and np.isneginf(scores[0, 2:]).all()


def test_exact_remove_drops_rows(templates: np.ndarray) -> None:
    index = build_index("exact", templates[:100])
    assert index.remove(np.array([3, 4, 999])) == 2 and len(index) == 98
    ids, _ = index.search(templates[3:5], 1)
    assert not np.isin(ids, [3, 4]).any()


def test_input_errors_name_the_problem() -> None:
    index = make_index("exact", 8)
    with pytest.raises(ValueError, match=r"expected a \(N, 8\) array, found shape \(2, 5\)"):
        index.add(np.zeros((2, 5), np.float32), np.arange(2))
    with pytest.raises(ValueError, match="2 vectors but 3 ids"):
        index.add(np.zeros((2, 8), np.float32), np.arange(3))
    with pytest.raises(ValueError, match="k must be >= 1"):
        index.search(np.zeros((1, 8), np.float32), 0)
    with pytest.raises(ValueError, match="unknown index kind 'annoy'"):
        make_index("annoy", 8)


@pytest.mark.parametrize("kind", ["hnsw", "ivf"])
def test_faiss_recall_at_1_against_exact(kind: str, templates: np.ndarray) -> None:
    pytest.importorskip("faiss")
    queries = _probes(templates)
    exact_ids, exact_scores = build_index("exact", templates).search(queries, 1)
    ids, scores = build_index(kind, templates).search(queries, 1)
    recall = float(np.mean(ids[:, 0] == exact_ids[:, 0]))
    assert recall >= 0.98, f"{kind} recall@1 {recall:.3f} vs exact"
    same = ids[:, 0] == exact_ids[:, 0]
    np.testing.assert_allclose(scores[same, 0], exact_scores[same, 0], atol=1e-5)


def test_hnsw_recall_on_uniform_random_queries(templates: np.ndarray) -> None:
    pytest.importorskip("faiss")
    queries = _unit(np.random.default_rng(3).standard_normal((200, 64)))
    exact_ids, _ = build_index("exact", templates).search(queries, 1)
    ids, _ = build_index("hnsw", templates).search(queries, 1)
    assert np.mean(ids[:, 0] == exact_ids[:, 0]) >= 0.98


@pytest.mark.parametrize("kind", ["hnsw", "ivf"])
def test_faiss_remove_filters_then_rebuilds(kind: str, templates: np.ndarray) -> None:
    pytest.importorskip("faiss")
    data = templates[:2000]
    ids = np.arange(2000, dtype=np.int64) + 100
    index = build_index(kind, data, ids)
    assert index.remove(ids[:50]) == 50 and len(index) == 1950
    found, _ = index.search(data[:50], 3)
    assert not np.isin(found, ids[:50]).any()
    assert index.remove(ids[:1200]) == 1150 and len(index) == 800  # more than half dead: rebuilt
    found, scores = index.search(data[1200:1300], 1)
    assert np.mean(found[:, 0] == ids[1200:1300]) >= 0.98
    assert not np.isin(found, ids[:1200]).any()
    index.add(data[:5], ids[:5])  # added back after the rebuild
    found, _ = index.search(data[:5], 1)
    assert found[:, 0].tolist() == ids[:5].tolist()


def test_missing_faiss_gives_an_install_hint(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "faiss", None)  # makes `import faiss` raise ImportError
    for kind in ("hnsw", "ivf"):
        with pytest.raises(ImportError, match=r"pip install 'marginface\[faiss\]'.*or use index 'exact'"):
            make_index(kind, 16)
    assert len(build_index("exact", _unit(np.ones((2, 16))))) == 2  # exact needs no faiss


def _gallery(seed: int = 4, identities: int = 300, per_identity: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """Templates clustered by identity (several per person) and their owners."""
    rng = np.random.default_rng(seed)
    centres = _unit(rng.standard_normal((identities, 64)))
    vectors = _unit(np.repeat(centres, per_identity, axis=0)
                    + 0.6 * _unit(rng.standard_normal((identities * per_identity, 64))))
    return vectors, np.repeat(np.arange(identities) * 3 + 1, per_identity)


def test_vectors_returns_the_stored_rows(templates: np.ndarray) -> None:
    pytest.importorskip("faiss")
    for kind in ("exact", "hnsw", "ivf"):
        index = build_index(kind, templates[:500], np.arange(500) + 1000)
        np.testing.assert_array_equal(index.vectors(np.array([1499, 1000])), templates[[499, 0]])
        index.remove(np.array([1000]))
        with pytest.raises(KeyError, match="template id 1000"):
            index.vectors(np.array([1000]))


@pytest.mark.parametrize("kind", ["exact", "hnsw", "ivf"])
def test_identity_index_gives_the_gallery_exact_answers(kind: str) -> None:
    pytest.importorskip("faiss")
    from marginface.infer.index import IdentityIndex
    from marginface.infer.search import TemplateIndex

    vectors, owners = _gallery()
    ids = np.arange(len(vectors)) + 50
    exact, approx = TemplateIndex(64), IdentityIndex(kind, 64)
    for index in (exact, approx):
        index.add(ids[:600], owners[:600], vectors[:600])  # incremental adds
        index.add(ids[600:], owners[600:], vectors[600:])
    queries = _unit(vectors[::3][:200] + 0.5 * _unit(np.random.default_rng(5).standard_normal((200, 64))))
    want, got = exact.search(queries, 3), approx.search(queries, 3)
    same_top = [w[0] == g[0] for w, g in zip(want, got, strict=True)]  # Hit equality: owner and exact score
    assert np.mean(same_top) >= 0.99
    assert len(approx) == len(exact) == len(vectors)
    exact.remove_owner(int(owners[0]))
    approx.remove_owner(int(owners[0]))
    assert int(owners[0]) not in approx.identities.tolist() and len(approx) == len(vectors) - 3
    assert all(hit.identity != owners[0] for row in approx.search(queries[:5], 3) for hit in row)
    assert [row[0] for row in approx.search(queries[1:20], 1)] == [row[0] for row in exact.search(queries[1:20], 1)]


def test_identity_index_factory_uses_the_gallery_exact_path_for_exact() -> None:
    from marginface.infer.index import IdentityIndex, identity_index
    from marginface.infer.search import TemplateIndex

    assert isinstance(identity_index("exact", 8), TemplateIndex)
    assert isinstance(identity_index("exact", 8, overfetch=2), IdentityIndex)
    empty = IdentityIndex("exact", 8)
    assert empty.search(np.ones((2, 8), np.float32), 3) == [[], []]


@pytest.mark.parametrize("kind", ["exact", "hnsw", "ivf"])
def test_a_gallery_searched_through_an_index_matches_the_exact_gallery(kind: str, tmp_path) -> None:
    pytest.importorskip("faiss")
    from marginface.infer.gallery import Gallery, GalleryModelMismatch
    from marginface.infer.recognizer import ModelFingerprint
    from marginface.infer.thresholds import Threshold

    fingerprint = ModelFingerprint("ab" * 32, 112, "NCHW", "RGB", 127.5, 127.5, 64)
    vectors, owners = _gallery(identities=40, per_identity=2)
    with Gallery.create(tmp_path / "g.db", fingerprint, Threshold.fixed(0.3), model="m.onnx", detector=None) as g:
        for vector, owner in zip(vectors[:60], owners[:60], strict=True):
            g.add(f"person {owner}", vector, fingerprint=fingerprint)
        with Gallery.open(tmp_path / "g.db", index=kind) as search:
            queries = _unit(vectors[::2] + 0.5 * _unit(np.random.default_rng(6).standard_normal((40, 64))))
            assert search.stats()["templates"] == 60
            want, got = g.search(queries, 2), search.search(queries, 2, fingerprint)
            assert [w[0] for w in want] == [h[0] for h in got]  # name and exact score
            for vector, owner in zip(vectors[60:], owners[60:], strict=True):
                g.add(f"person {owner}", vector, fingerprint=fingerprint)  # another connection's enrolments
            assert [row[0].name for row in search.search(queries[-10:], 1)] == [f"person {o}" for o in owners[-20::2]]
            assert search.stats()["templates"] == len(vectors)
            other = ModelFingerprint("cd" * 32, 112, "NCHW", "RGB", 127.5, 127.5, 64)
            with pytest.raises(GalleryModelMismatch):
                search.search(queries[:1], 1, other)


def test_ivf_retrains_when_it_outgrows_its_cells(templates: np.ndarray) -> None:
    pytest.importorskip("faiss")
    index = build_index("ivf", templates[:100])
    assert index.nlist == 2 and index.trained_on == 100
    for start in range(100, 2000, 100):  # a gallery growing by enrolment
        index.add(templates[start:start + 100], np.arange(start, start + 100))
    assert index.trained_on > 400 and index.nlist > 2 and len(index) == 2000
    found, _ = index.search(templates[:300], 1)
    assert np.mean(found[:, 0] == np.arange(300)) >= 0.99
