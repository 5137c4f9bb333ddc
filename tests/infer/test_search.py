"""Exact template search: scores independent of batch and gallery layout, top-k equal to brute force."""

from __future__ import annotations

import numpy as np

from marginface.infer.search import TemplateIndex, exact_scores, unit_rows


def _data(seed: int = 0, n: int = 500, dim: int = 64, owners: int = 40):
    rng = np.random.default_rng(seed)
    return unit_rows(rng.normal(size=(n, dim))), rng.integers(0, owners, n), unit_rows(rng.normal(size=(30, dim)))


def test_scores_do_not_depend_on_batch_or_row_order() -> None:
    templates, _, queries = _data()
    full = exact_scores(queries, templates)
    one_by_one = np.concatenate([exact_scores(q, templates) for q in queries])
    order = np.random.default_rng(1).permutation(len(templates))
    shuffled = exact_scores(queries, templates[order])[:, np.argsort(order)]
    np.testing.assert_array_equal(full, one_by_one)
    np.testing.assert_array_equal(full, shuffled)
    np.testing.assert_array_equal(full[:, 7], exact_scores(queries, templates[7:8])[:, 0])


def test_search_equals_brute_force_best_template_per_identity() -> None:
    templates, owners, queries = _data()
    index = TemplateIndex(templates.shape[1])
    index.add(np.arange(250), owners[:250], templates[:250])  # incremental
    index.add(np.arange(250, 500), owners[250:], templates[250:])
    scores = exact_scores(queries, templates)
    ids, per_identity = index.identity_scores(queries)
    for q, hits in enumerate(index.search(queries, k=5)):
        best = {o: scores[q, owners == o].max() for o in np.unique(owners)}
        expected = sorted(best.items(), key=lambda t: (-t[1], t[0]))[:5]
        assert [(h.identity, h.score) for h in hits] == [(int(o), s) for o, s in expected]
        np.testing.assert_array_equal(per_identity[q], [best[o] for o in ids])
    index.remove_owner(int(owners[0]))
    assert int(owners[0]) not in index.identities and len(index) == int(np.sum(owners != owners[0]))


def test_near_ties_are_ranked_by_exact_scores() -> None:
    """Two identities closer than float32 resolution: the exact rescoring still orders them correctly."""
    dim = 128
    base = unit_rows(np.random.default_rng(2).normal(size=dim))[0]
    nudged = base.copy()
    nudged[0] += np.float32(2e-7)
    index = TemplateIndex(dim)
    index.add(np.array([0, 1]), np.array([5, 9]), np.stack([nudged, base]))
    [hits] = index.search(base, k=2)
    exact = exact_scores(base, np.stack([nudged, base]))[0]
    assert [h.identity for h in hits] == ([9, 5] if exact[1] > exact[0] else [5, 9])
    assert [h.score for h in hits] == sorted(exact.tolist(), reverse=True)
