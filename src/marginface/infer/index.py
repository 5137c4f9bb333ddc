"""Top-k inner-product search over unit-vector templates: exact (one matrix product) or approximate (FAISS).

Every index has the same interface: `add(vectors, ids)` appends templates under caller-chosen int64 ids,
`remove(ids)` drops them, and `search(queries, k)` maps (N, D) float32 queries to (N, k) template ids and
cosine scores, best first. Missing results (fewer than k live templates, or an approximate index that found
fewer) come back as id −1 with score −inf. The approximate kinds need the optional extra `marginface[faiss]`.

- `exact`: brute force, one (N, D) × (D, M) product and argpartition; right up to ~10⁵–10⁶ templates.
- `hnsw`: FAISS HNSW graph over the flat vectors (no training, incremental adds); `ef_search` (default 256:
  recall@1 0.997 against exact at 10⁵ templates in bench/infer.py) trades speed for recall.
- `ivf`: FAISS IVF-Flat, trained on the first batch added (k-means into `nlist` cells) and retrained when
  it has grown four-fold; `nprobe` cells are scanned per query.

Removal in the FAISS indexes marks templates dead and filters them during the search (an IDSelector), and
rebuilds the index from the live vectors once more than half of what it holds is dead, since neither HNSW
graphs nor trained IVF cells shrink well in place.
"""

from __future__ import annotations

import logging
import math
from typing import Any, Protocol

import numpy as np

from marginface.errors import UsageError
from marginface.infer.search import Hit, TemplateIndex, exact_scores

log = logging.getLogger(__name__)

INDEX_KINDS = ("exact", "hnsw", "ivf")


class VectorIndex(Protocol):
    """What a gallery needs from a search structure (see module docstring)."""

    kind: str
    dim: int

    def __len__(self) -> int:
        """Number of live templates."""
        ...

    def add(self, vectors: np.ndarray, ids: np.ndarray) -> None:
        """Append (M, D) unit vectors under int64 ids."""
        ...

    def remove(self, ids: np.ndarray) -> int:
        """Drop templates by id; returns how many were found."""
        ...

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(N, k) int64 ids and (N, k) float32 scores of the best templates, best first."""
        ...

    def vectors(self, ids: np.ndarray) -> np.ndarray:
        """The stored (M, D) vectors of live templates `ids` (KeyError for an unknown id)."""
        ...


def _as_matrix(x: np.ndarray, dim: int | None, what: str) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    if x.ndim == 1:
        x = x[None, :]
    if x.ndim != 2 or (dim is not None and x.shape[1] != dim):
        expected = f"(N, {dim})" if dim is not None else "(N, D)"
        raise ValueError(f"{what}: expected a {expected} array, found shape {x.shape}")
    return np.ascontiguousarray(x)


def _as_ids(ids: np.ndarray, count: int) -> np.ndarray:
    ids = np.asarray(ids, dtype=np.int64).reshape(-1)
    if len(ids) != count:
        raise ValueError(f"index add: {count} vectors but {len(ids)} ids")
    if len(ids) and ids.min() < 0:
        raise ValueError(f"index add: ids must be >= 0, found {int(ids.min())}")
    return ids


def _pad(ids: np.ndarray, scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Widen (N, k') results to (N, k) with id −1 / score −inf."""
    if ids.shape[1] == k:
        return ids, scores
    n = ids.shape[0]
    out_ids = np.full((n, k), -1, np.int64)
    out_scores = np.full((n, k), -np.inf, np.float32)
    out_ids[:, : ids.shape[1]] = ids
    out_scores[:, : ids.shape[1]] = scores
    return out_ids, out_scores


def _lookup(ids: np.ndarray, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(rows sorted by their id, those ids): the table `_rows` searches."""
    order = rows[np.argsort(ids[rows], kind="stable")]
    return order, ids[order]


def _rows(table: tuple[np.ndarray, np.ndarray], wanted: np.ndarray) -> np.ndarray:
    """Row of each wanted id, through a `_lookup` table (KeyError naming an id that is not there)."""
    order, sorted_ids = table
    wanted = np.asarray(wanted, np.int64).reshape(-1)
    if len(wanted) == 0:
        return np.zeros(0, np.int64)
    if len(order) == 0:
        raise KeyError(f"template id {int(wanted[0])} is not in the index")
    pos = np.minimum(np.searchsorted(sorted_ids, wanted), len(order) - 1)
    missing = sorted_ids[pos] != wanted
    if missing.any():
        raise KeyError(f"template id {int(wanted[missing][0])} is not in the index")
    return order[pos]


def _check_k(k: int) -> None:
    if k < 1:
        raise ValueError(f"search: k must be >= 1, got {k}")


class ExactIndex:
    """Brute-force inner product: templates in one float32 matrix, top-k by argpartition."""

    kind = "exact"

    def __init__(self, dim: int) -> None:
        self.dim = dim
        self._vectors = np.zeros((0, dim), np.float32)
        self._ids = np.zeros(0, np.int64)
        self._order: tuple[np.ndarray, np.ndarray] | None = None  # id -> row table, built on first lookup

    def __len__(self) -> int:
        return len(self._ids)

    def add(self, vectors: np.ndarray, ids: np.ndarray) -> None:
        """Append templates (copied into the matrix)."""
        vectors = _as_matrix(vectors, self.dim, "index add")
        self._vectors = np.concatenate([self._vectors, vectors])
        self._ids = np.concatenate([self._ids, _as_ids(ids, len(vectors))])
        self._order = None

    def remove(self, ids: np.ndarray) -> int:
        """Drop the rows with these ids."""
        keep = ~np.isin(self._ids, np.asarray(ids, np.int64))
        removed = int(len(keep) - keep.sum())
        if removed:
            self._vectors, self._ids, self._order = self._vectors[keep], self._ids[keep], None
        return removed

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Exact top-k by one matrix product."""
        _check_k(k)
        queries = _as_matrix(queries, self.dim, "index search")
        kk = min(k, len(self._ids))
        if kk == 0:
            return _pad(np.zeros((len(queries), 0), np.int64), np.zeros((len(queries), 0), np.float32), k)
        scores = queries @ self._vectors.T  # (N, M)
        if kk < scores.shape[1]:
            top = np.argpartition(-scores, kk - 1, axis=1)[:, :kk]
        else:
            top = np.broadcast_to(np.arange(scores.shape[1]), (len(queries), scores.shape[1]))
        top_scores = np.take_along_axis(scores, top, axis=1)
        order = np.argsort(-top_scores, axis=1, kind="stable")
        top = np.take_along_axis(top, order, axis=1)
        return _pad(self._ids[top], np.take_along_axis(top_scores, order, axis=1).astype(np.float32), k)

    def vectors(self, ids: np.ndarray) -> np.ndarray:
        """Stored vectors of templates `ids`."""
        if self._order is None:
            self._order = _lookup(self._ids, np.arange(len(self._ids)))
        return self._vectors[_rows(self._order, ids)]


def import_faiss() -> Any:
    """The faiss module, or an ImportError that says how to install it."""
    try:
        import faiss
    except ImportError as err:
        raise ImportError("the 'hnsw' and 'ivf' gallery indexes need FAISS, which is not installed: "
                          "pip install 'marginface[faiss]' (or pip install faiss-cpu), or use index 'exact'") from err
    return faiss


class _FaissIndex:
    """Shared part of the FAISS indexes: id mapping, dead-template filtering, rebuild on heavy removal."""

    kind = ""

    def __init__(self, dim: int) -> None:
        self.dim = dim
        self._faiss = import_faiss()
        self._index: Any = None
        self._ids = np.zeros(0, np.int64)  # template id of each faiss row
        self._dead = np.zeros(0, bool)
        self._order: tuple[np.ndarray, np.ndarray] | None = None  # id -> row table, built on first lookup

    def __len__(self) -> int:
        return int(len(self._ids) - self._dead.sum())

    def _new_index(self, training: np.ndarray) -> Any:
        raise NotImplementedError

    def _search_params(self, selector: Any) -> Any:
        raise NotImplementedError

    def _outgrown(self) -> bool:
        """True when the index should be rebuilt for its current size (IVF cells trained on far fewer)."""
        return False

    def add(self, vectors: np.ndarray, ids: np.ndarray) -> None:
        """Append templates; the first batch also builds (and for IVF trains) the index."""
        vectors = _as_matrix(vectors, self.dim, "index add")
        ids = _as_ids(ids, len(vectors))
        if len(vectors) == 0:
            return
        if self._index is None:
            self._index = self._new_index(vectors)
        self._index.add(vectors)
        self._ids = np.concatenate([self._ids, ids])
        self._dead = np.concatenate([self._dead, np.zeros(len(ids), bool)])
        self._order = None
        if self._outgrown():
            self._rebuild()

    def remove(self, ids: np.ndarray) -> int:
        """Mark templates dead; rebuild from the live vectors when more than half are dead."""
        hit = np.isin(self._ids, np.asarray(ids, np.int64)) & ~self._dead
        self._dead |= hit
        self._order = None
        if self._dead.sum() * 2 > len(self._dead):
            self._rebuild()
        return int(hit.sum())

    def _rebuild(self) -> None:
        live = np.flatnonzero(~self._dead)
        log.info("rebuilding the %s index from %d live of %d templates", self.kind, len(live), len(self._dead))
        vectors = self._index.reconstruct_batch(live.astype(np.int64)) if len(live) else None
        ids = self._ids[live]
        self._index, self._ids, self._dead, self._order = None, np.zeros(0, np.int64), np.zeros(0, bool), None
        if vectors is not None:
            self.add(vectors, ids)

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Approximate top-k; dead templates are filtered inside FAISS."""
        _check_k(k)
        queries = _as_matrix(queries, self.dim, "index search")
        kk = min(k, len(self))
        if kk == 0:
            return _pad(np.zeros((len(queries), 0), np.int64), np.zeros((len(queries), 0), np.float32), k)
        if self._dead.any():
            dead = np.flatnonzero(self._dead).astype(np.int64)
            params = self._search_params(self._faiss.IDSelectorNot(self._faiss.IDSelectorBatch(dead)))
        else:
            params = self._search_params(None)
        scores, rows = self._index.search(queries, kk, params=params)
        found = rows >= 0
        ids = np.where(found, self._ids[np.where(found, rows, 0)], -1)
        return _pad(ids.astype(np.int64), np.where(found, scores, -np.inf).astype(np.float32), k)


    def vectors(self, ids: np.ndarray) -> np.ndarray:
        """Stored vectors of live templates `ids` (reconstructed from FAISS's flat storage)."""
        if self._order is None:  # live rows only, so a removed id is absent
            self._order = _lookup(self._ids, np.flatnonzero(~self._dead))
        rows = _rows(self._order, ids)
        return self._index.reconstruct_batch(rows.astype(np.int64)) if len(rows) else np.zeros((0, self.dim))


class HnswIndex(_FaissIndex):
    """FAISS HNSW (flat storage, inner product): `m` links per node, `ef_construction`, `ef_search`."""

    kind = "hnsw"

    def __init__(self, dim: int, m: int = 32, ef_construction: int = 80, ef_search: int = 256) -> None:
        super().__init__(dim)
        self.m, self.ef_construction, self.ef_search = m, ef_construction, ef_search

    def _new_index(self, training: np.ndarray) -> Any:
        index = self._faiss.IndexHNSWFlat(self.dim, self.m, self._faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = self.ef_construction
        return index

    def _search_params(self, selector: Any) -> Any:
        params = self._faiss.SearchParametersHNSW(efSearch=self.ef_search)
        if selector is not None:
            params.sel = selector
        self._selector = selector  # SWIG keeps only a raw pointer: hold the object for the search's duration
        return params


class IvfFlatIndex(_FaissIndex):
    """FAISS IVF-Flat (inner product): k-means into `nlist` cells (default ≈ √M, ≥ 39 points per cell)
    on the first batch added; `nprobe` cells scanned per query (default nlist / 4, at least 32: face
    templates mixed with structureless vectors need that many for recall@1 ≥ 0.99 against exact)."""

    kind = "ivf"

    def __init__(self, dim: int, nlist: int | None = None, nprobe: int | None = None) -> None:
        super().__init__(dim)
        self.requested_nlist, self.nprobe = nlist, nprobe
        self.nlist, self.trained_on = nlist, 0

    def _new_index(self, training: np.ndarray) -> Any:
        nlist = self.requested_nlist or max(1, min(int(math.sqrt(len(training))), len(training) // 39))
        quantizer = self._faiss.IndexFlatIP(self.dim)
        index = self._faiss.IndexIVFFlat(quantizer, self.dim, nlist, self._faiss.METRIC_INNER_PRODUCT)
        index.train(training)
        index.make_direct_map()  # lets _rebuild reconstruct the live vectors
        self._quantizer = quantizer  # keep the Python object alive as long as the index
        self.nlist, self.trained_on = nlist, len(training)
        return index

    def _outgrown(self) -> bool:
        """Retrain (k-means again, default nlist for the new size) once the index holds 4x what it was trained on."""
        return self.requested_nlist is None and len(self) > 4 * self.trained_on

    def _search_params(self, selector: Any) -> Any:
        nprobe = self.nprobe or min(self.nlist or 1, max(32, (self.nlist or 1) // 4))
        params = self._faiss.SearchParametersIVF(nprobe=nprobe)
        if selector is not None:
            params.sel = selector
        self._selector = selector
        return params


def make_index(kind: str, dim: int, **params: Any) -> VectorIndex:
    """A new empty index of `kind` ('exact', 'hnsw' or 'ivf'); FAISS kinds raise ImportError without faiss."""
    if kind == "exact":
        if params:
            raise UsageError(f"index 'exact' takes no parameters, got {sorted(params)}")
        return ExactIndex(dim)
    if kind == "hnsw":
        return HnswIndex(dim, **params)
    if kind == "ivf":
        return IvfFlatIndex(dim, **params)
    raise UsageError(f"unknown index kind {kind!r}; expected one of {', '.join(INDEX_KINDS)}")


def build_index(kind: str, vectors: np.ndarray, ids: np.ndarray | None = None, **params: Any) -> VectorIndex:
    """An index of `kind` holding `vectors` (ids default to their row numbers)."""
    vectors = _as_matrix(vectors, None, "build_index")
    index = make_index(kind, vectors.shape[1], **params)
    index.add(vectors, np.arange(len(vectors), dtype=np.int64) if ids is None else ids)
    return index


class IdentityIndex:
    """Identity-level top-k through any template index, with the interface of the gallery's exact
    `search.TemplateIndex` (add / remove_owner / search → Hit lists), so a Gallery can hold either.

    The template index proposes `overfetch × k` templates per query; their owners are ranked by the best
    proposed template, rescored with `search.exact_scores`, so any identity it returns carries the very score
    the exact path gives it whenever that identity's best template was among the proposals.
    """

    def __init__(self, kind: str, dim: int, overfetch: int = 4, **params: Any) -> None:
        self.kind, self.dim, self.overfetch = kind, dim, overfetch
        self._templates = make_index(kind, dim, **params)
        self._owner_of: dict[int, int] = {}

    def __len__(self) -> int:
        return len(self._templates)

    @property
    def identities(self) -> np.ndarray:
        """Distinct owner ids present, ascending."""
        return np.unique(np.fromiter(self._owner_of.values(), np.int64, len(self._owner_of)))

    def add(self, template_ids: np.ndarray, owners: np.ndarray, vectors: np.ndarray) -> None:
        """Append templates (unit float32 rows) with their ids and owner identities."""
        template_ids = np.asarray(template_ids, np.int64).reshape(-1)
        owners = np.asarray(owners, np.int64).reshape(-1)
        if len(template_ids) != len(owners):
            raise ValueError(f"{len(template_ids)} template ids but {len(owners)} owners")
        self._templates.add(vectors, template_ids)
        self._owner_of.update(zip(template_ids.tolist(), owners.tolist(), strict=True))

    def remove_owner(self, owner: int) -> None:
        """Drop every template of one identity."""
        ids = [t for t, o in self._owner_of.items() if o == owner]
        self._templates.remove(np.asarray(ids, np.int64))
        for template in ids:
            del self._owner_of[template]

    def search(self, queries: np.ndarray, k: int = 5) -> list[list[Hit]]:
        """Top-k identities per query (search.Hit lists), best first, ties broken by the lower owner id."""
        queries = _as_matrix(queries, self.dim, "identity search")
        if len(self) == 0 or k < 1:
            return [[] for _ in queries]
        proposed, _ = self._templates.search(queries, min(len(self), k * self.overfetch))
        answers = []
        for query, row in zip(queries, proposed, strict=True):
            ids = row[row >= 0]
            scores = exact_scores(query[None], self._templates.vectors(ids))[0]
            best: dict[int, float] = {}
            for template, score in zip(ids.tolist(), scores.tolist(), strict=True):
                owner = self._owner_of[template]
                best[owner] = max(score, best.get(owner, -np.inf))
            ranked = sorted(best.items(), key=lambda item: (-item[1], item[0]))[:k]
            answers.append([Hit(owner, score) for owner, score in ranked])
        return answers


def identity_index(kind: str, dim: int, **params: Any) -> TemplateIndex | IdentityIndex:
    """The gallery's search structure for `kind`: search.TemplateIndex for 'exact', else an IdentityIndex."""
    if kind == "exact" and not params:
        return TemplateIndex(dim)
    return IdentityIndex(kind, dim, **params)
