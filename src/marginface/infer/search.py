"""Exact cosine search over identity templates, shared by the gallery and by evaluation (one code path).

Templates and queries are unit float32 vectors. A float32 matrix product over every template finds the
candidates fast; candidates' scores are then recomputed in float64 by a row-by-row sum of products whose
order depends only on the dimension, so a score never depends on batch size, gallery size or row order.
A score returned here is therefore bit-identical wherever it is computed (eval, CLI, HTTP).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


def unit_rows(x: np.ndarray) -> np.ndarray:
    """Rows of `x` scaled to unit L2 norm, as float32 (zero rows stay zero)."""
    x = np.asarray(x, np.float32)
    if x.ndim == 1:
        x = x[None, :]
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), np.float32(1e-12))


def exact_scores(queries: np.ndarray, templates: np.ndarray) -> np.ndarray:
    """(Q, N) float64 cosine scores: exact float32 products, each row summed by numpy's pairwise sum over a
    contiguous row of D, so a pair's score does not depend on Q, N or where the template sits."""
    q = np.asarray(queries, np.float32).reshape(-1, np.shape(templates)[-1]).astype(np.float64)
    t = np.ascontiguousarray(np.asarray(templates, np.float32), dtype=np.float64)
    out = np.empty((len(q), len(t)))
    for i, query in enumerate(q):
        out[i] = (t * query).sum(axis=1)
    return out


@dataclass(frozen=True)
class Hit:
    """One identity in a ranked answer: its column in the index and its best template score."""

    identity: int
    score: float


class TemplateIndex:
    """In-memory float32 template matrix with an owner identity per row, updated incrementally."""

    def __init__(self, dim: int) -> None:
        self.dim = dim
        self._matrix = np.zeros((0, dim), np.float32)
        self._owners = np.zeros(0, np.int64)
        self._ids = np.zeros(0, np.int64)
        self._sorted: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None

    def __len__(self) -> int:
        return len(self._ids)

    @property
    def identities(self) -> np.ndarray:
        """Distinct owner ids present, ascending."""
        return np.unique(self._owners)

    def add(self, template_ids: np.ndarray, owners: np.ndarray, vectors: np.ndarray) -> None:
        """Append templates (unit float32 rows) with their ids and owner identities."""
        vectors = np.asarray(vectors, np.float32).reshape(-1, self.dim)
        template_ids = np.asarray(template_ids, np.int64).reshape(-1)
        owners = np.asarray(owners, np.int64).reshape(-1)
        if not len(vectors) == len(template_ids) == len(owners):
            raise ValueError(f"{len(vectors)} vectors, {len(template_ids)} ids and {len(owners)} owners differ")
        self._matrix = np.concatenate([self._matrix, vectors])
        self._owners = np.concatenate([self._owners, owners])
        self._ids = np.concatenate([self._ids, template_ids])
        self._sorted = None

    def remove_owner(self, owner: int) -> None:
        """Drop every template of one identity."""
        keep = self._owners != owner
        self._matrix, self._owners, self._ids = self._matrix[keep], self._owners[keep], self._ids[keep]
        self._sorted = None

    def _grouped(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(row order grouping templates by owner, group starts, owner of each group), cached."""
        if self._sorted is None:
            order = np.argsort(self._owners, kind="stable")
            owners = self._owners[order]
            starts = np.flatnonzero(np.r_[True, owners[1:] != owners[:-1]]) if len(owners) else np.zeros(0, np.int64)
            self._sorted = (order, starts, owners[starts])
        return self._sorted

    def identity_scores(self, queries: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(owner ids (I,), exact float64 best-template scores (Q, I)) for every identity."""
        order, starts, owners = self._grouped()
        queries = np.asarray(queries, np.float32).reshape(-1, self.dim)
        if len(order) == 0:
            return owners, np.zeros((len(queries), 0))
        scores = exact_scores(queries, self._matrix[order])
        return owners, np.maximum.reduceat(scores, starts, axis=1)

    def search(self, queries: np.ndarray, k: int = 5) -> list[list[Hit]]:
        """Top-k identities per query by best template score, exact, ties broken by the lower owner id."""
        queries = np.asarray(queries, np.float32).reshape(-1, self.dim)
        order, starts, owners = self._grouped()
        if len(order) == 0 or k < 1:
            return [[] for _ in queries]
        fast = np.maximum.reduceat(queries @ self._matrix[order].T, starts, axis=1)  # float32, for candidates
        margin = 4.0 * self.dim * float(np.finfo(np.float32).eps)  # > twice float32 dot-product error
        ends = np.r_[starts[1:], len(order)]
        answers = []
        for row, query in zip(fast, queries, strict=True):
            kth = np.partition(row, len(row) - min(k, len(row)))[len(row) - min(k, len(row))]
            columns = np.flatnonzero(row >= kth - margin)
            exact = [float(exact_scores(query[None], self._matrix[order[starts[c]:ends[c]]]).max()) for c in columns]
            ranked = sorted(zip(exact, owners[columns].tolist(), strict=True), key=lambda t: (-t[0], t[1]))[:k]
            answers.append([Hit(int(owner), score) for score, owner in ranked])
        return answers
