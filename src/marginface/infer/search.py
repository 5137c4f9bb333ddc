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
    """In-memory float32 template matrix with an owner identity per row, updated incrementally (amortised
    O(1) appends into a growing buffer; removal compacts)."""

    def __init__(self, dim: int) -> None:
        self.dim = dim
        self._buffer = np.zeros((0, dim), np.float32)
        self._owners = np.zeros(0, np.int64)
        self._ids = np.zeros(0, np.int64)
        self._size = 0
        self._grouping: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None

    def __len__(self) -> int:
        return self._size

    @property
    def matrix(self) -> np.ndarray:
        """(N, D) float32 view of the templates, in insertion order."""
        return self._buffer[:self._size]

    @property
    def ids(self) -> np.ndarray:
        """(N,) template id of each row."""
        return self._ids[:self._size]

    @property
    def owners(self) -> np.ndarray:
        """(N,) owner identity of each template row."""
        return self._owners[:self._size]

    @property
    def identities(self) -> np.ndarray:
        """Distinct owner ids present, ascending."""
        return np.unique(self.owners)

    def add(self, template_ids: np.ndarray, owners: np.ndarray, vectors: np.ndarray) -> None:
        """Append templates (unit float32 rows) with their ids and owner identities."""
        vectors = np.asarray(vectors, np.float32).reshape(-1, self.dim)
        template_ids = np.asarray(template_ids, np.int64).reshape(-1)
        owners = np.asarray(owners, np.int64).reshape(-1)
        if not len(vectors) == len(template_ids) == len(owners):
            raise ValueError(f"{len(vectors)} vectors, {len(template_ids)} ids and {len(owners)} owners differ")
        needed = self._size + len(vectors)
        if needed > len(self._buffer):
            capacity = max(needed, 2 * len(self._buffer), 64)
            self._buffer = _grow(self._buffer, capacity)
            self._owners = _grow(self._owners, capacity)
            self._ids = _grow(self._ids, capacity)
        self._buffer[self._size:needed] = vectors
        self._owners[self._size:needed] = owners
        self._ids[self._size:needed] = template_ids
        self._size = needed
        self._grouping = None

    def remove_owner(self, owner: int) -> None:
        """Drop every template of one identity."""
        self.remove_owners([owner])

    def remove_owners(self, owners: list[int] | np.ndarray) -> None:
        """Drop every template of these identities (one compaction for all)."""
        keep = np.flatnonzero(~np.isin(self.owners, np.asarray(owners, np.int64)))
        count = len(keep)
        self._buffer[:count] = self._buffer[keep]
        self._owners[:count] = self._owners[keep]
        self._ids[:count] = self._ids[keep]
        self._size = count
        self._grouping = None

    def _grouped(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(row order grouping templates by owner, group starts, owner of each group), cached."""
        if self._grouping is None:
            order = np.argsort(self.owners, kind="stable")
            owners = self.owners[order]
            starts = np.flatnonzero(np.r_[True, owners[1:] != owners[:-1]]) if len(owners) else np.zeros(0, np.int64)
            self._grouping = (order, starts, owners[starts])
        return self._grouping

    def identity_scores(self, queries: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(owner ids (I,), exact float64 best-template scores (Q, I)) for every identity."""
        order, starts, owners = self._grouped()
        queries = np.asarray(queries, np.float32).reshape(-1, self.dim)
        if len(order) == 0:
            return owners, np.zeros((len(queries), 0))
        scores = exact_scores(queries, self.matrix)[:, order]
        return owners, np.maximum.reduceat(scores, starts, axis=1)

    def search(self, queries: np.ndarray, k: int = 5) -> list[list[Hit]]:
        """Top-k identities per query by best template score, exact, ties broken by the lower owner id."""
        queries = np.asarray(queries, np.float32).reshape(-1, self.dim)
        order, starts, owners = self._grouped()
        if len(order) == 0 or k < 1:
            return [[] for _ in queries]
        fast = np.maximum.reduceat((queries @ self.matrix.T)[:, order], starts, axis=1)  # float32 candidates
        margin = 4.0 * self.dim * float(np.finfo(np.float32).eps)  # > twice float32 dot-product error
        ends = np.r_[starts[1:], len(order)]
        answers = []
        for row, query in zip(fast, queries, strict=True):
            kth = np.partition(row, len(row) - min(k, len(row)))[len(row) - min(k, len(row))]
            columns = np.flatnonzero(row >= kth - margin)
            exact = [float(exact_scores(query[None], self.matrix[order[starts[c]:ends[c]]]).max()) for c in columns]
            ranked = sorted(zip(exact, owners[columns].tolist(), strict=True), key=lambda t: (-t[0], t[1]))[:k]
            answers.append([Hit(int(owner), score) for score, owner in ranked])
        return answers


def _grow(array: np.ndarray, capacity: int) -> np.ndarray:
    grown = np.zeros((capacity, *array.shape[1:]), array.dtype)
    grown[:len(array)] = array
    return grown
