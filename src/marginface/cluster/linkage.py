"""Agglomerative clustering over the edges of a kNN graph, never a full N×N distance matrix.

Average linkage between groups A and B is the mean cosine over all |A|·|B| pairs. The graph knows only the
pairs where one face is among the other's k nearest; every other pair (i, j) has a cosine of at most
min(κ_i, κ_j), κ being a face's k-th neighbour score. `average` credits each unknown pair with the smaller
of the two groups' mean κ: exact whenever all pairs are known, an estimate of the upper bound otherwise, so
a lookalike with a few strong edges into a large person is not merged on those edges alone (its unknown
pairs count at its own low κ) while two halves of a large person, whose κ stay high, still are.
`average_known` averages the known edges only (what scikit-learn does with a connectivity graph); `single`
merges along every edge above the cut (connected components). Merges stop when no pair of groups whose
linkage is at least the threshold may merge; `Constraints` veto merges as they come.
"""

from __future__ import annotations

import heapq
import logging

import numpy as np
from scipy import sparse
from scipy.sparse.csgraph import connected_components

from marginface.cluster.constraints import Constraints, allowed

log = logging.getLogger(__name__)

LINKAGES = ("average", "average_known", "single")


class _Groups:
    """Union-find over faces with per-group size, κ sum, fixed label, forbidden labels and links."""

    def __init__(self, n: int, lo: np.ndarray, hi: np.ndarray, w: np.ndarray, kappa: np.ndarray,
                 constraints: Constraints, weight: np.ndarray | None = None) -> None:
        self.parent = np.arange(n)
        weight = np.ones(n) if weight is None else np.asarray(weight, np.float64)
        self.size = weight.tolist()  # faces a node stands for (1, or more for a sample of a known person)
        self.kappa = (kappa.astype(np.float64) * weight).tolist()  # sum of κ over the faces
        self.fixed = constraints.fixed.tolist()
        self.forbid: dict[int, set[int]] = {face: set(labels) for face, labels in constraints.forbid.items()}
        both = sparse.coo_matrix((np.concatenate([w, w]), (np.concatenate([lo, hi]), np.concatenate([hi, lo]))),
                                 shape=(n, n)).tocsr()
        self.indptr, self.indices, self.weights = both.indptr, both.indices, both.data
        self.links: dict[int, dict[int, list[float]]] = {}  # root -> {root: [sum of known cosines, count]}

    def find(self, x: int) -> int:
        """Root of x's group (path halving)."""
        parent = self.parent
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return int(x)

    def adjacency(self, root: int) -> dict[int, list[float]]:
        """The group's links, built from the graph on first use (a face that never merged)."""
        found = self.links.get(root)
        if found is not None:
            return found
        out: dict[int, list[float]] = {}
        start, stop = self.indptr[root], self.indptr[root + 1]
        for j, w in zip(self.indices[start:stop].tolist(), self.weights[start:stop].tolist(), strict=True):
            other = self.find(j)
            if other == root:
                continue
            if other in out:
                out[other][0] += w
                out[other][1] += 1
            elif other in self.links:
                out[other] = self.links[other][root]  # one shared [sum, count] per pair of groups
            else:
                out[other] = [w, 1.0]
        self.links[root] = out
        return out

    def may_merge(self, a: int, b: int) -> bool:
        """Whether the constraints let groups a and b merge."""
        return allowed(self.fixed[a], self.forbid.get(a), self.fixed[b], self.forbid.get(b))

    def merge(self, a: int, b: int) -> int:
        """Merge groups a and b; returns the surviving root (the one with more links)."""
        la, lb = self.adjacency(a), self.adjacency(b)
        if len(la) < len(lb):
            a, b, la, lb = b, a, lb, la
        la.pop(b, None)
        for c, link in lb.items():
            if c == a:
                continue
            other = self.adjacency(c)
            del other[b]
            mine = la.get(c)
            if mine is None:
                la[c] = link
                other[a] = link
            else:
                mine[0] += link[0]
                mine[1] += link[1]
        del self.links[b]
        self.parent[b] = a
        self.size[a] += self.size[b]
        self.kappa[a] += self.kappa[b]
        if self.fixed[b] >= 0:
            self.fixed[a] = self.fixed[b]
        if b in self.forbid:
            self.forbid.setdefault(a, set()).update(self.forbid.pop(b))
        return a

    def score(self, a: int, b: int, link: list[float], linkage: str) -> float:
        """The linkage of groups a and b given their known-edge [sum, count]."""
        if linkage == "average_known":
            return link[0] / link[1]
        pairs = self.size[a] * self.size[b]
        unknown = min(self.kappa[a] / self.size[a], self.kappa[b] / self.size[b])
        return (link[0] + (pairs - link[1]) * unknown) / pairs


def agglomerate(n: int, lo: np.ndarray, hi: np.ndarray, w: np.ndarray, kappa: np.ndarray, threshold: float,
                constraints: Constraints, linkage: str = "average", weight: np.ndarray | None = None) -> np.ndarray:
    """(N,) group id (a root face) per face after merging every allowed pair of groups whose linkage
    reaches `threshold`, best first. `weight`: how many faces each node stands for (default 1 each)."""
    if linkage == "single" and not constraints.active:
        keep = w >= threshold
        graph = sparse.coo_matrix((np.ones(int(keep.sum())), (lo[keep], hi[keep])), shape=(n, n))
        return connected_components(graph, directed=False)[1].astype(np.int64)
    groups = _Groups(n, lo, hi, w, kappa, constraints, weight)
    fixed = constraints.fixed
    for label in np.unique(fixed[fixed >= 0]):  # a person the user fixed starts as one group
        members = np.flatnonzero(fixed == label).tolist()
        root = members[0]
        for face in members[1:]:
            root = groups.merge(groups.find(root), groups.find(face))
    if linkage == "single":
        order = np.argsort(-w, kind="stable")
        for e in order[w[order] >= threshold].tolist():
            a, b = groups.find(int(lo[e])), groups.find(int(hi[e]))
            if a != b and groups.may_merge(a, b):
                groups.merge(a, b)
        return np.array([groups.find(i) for i in range(n)], np.int64)
    heap: list[tuple[float, int, int]] = []
    for e in np.flatnonzero(w >= threshold).tolist():
        a, b = groups.find(int(lo[e])), groups.find(int(hi[e]))
        if a != b:
            link = groups.adjacency(a)[b]
            value = groups.score(a, b, link, linkage)
            if value >= threshold:
                heap.append((-value, a, b))
    heapq.heapify(heap)
    merges = 0
    while heap:
        value, a, b = heapq.heappop(heap)
        if groups.parent[a] != a or groups.parent[b] != b:
            continue
        link = groups.links.get(a, {}).get(b) if a in groups.links else groups.adjacency(a).get(b)
        if link is None or groups.score(a, b, link, linkage) != -value or not groups.may_merge(a, b):
            continue
        root = groups.merge(a, b)
        merges += 1
        for c, link in groups.links[root].items():
            score = groups.score(root, c, link, linkage)
            if score >= threshold:
                heapq.heappush(heap, (-score, root, c))
    log.debug("%s linkage: %d merges at threshold %.4f", linkage, merges, threshold)
    return np.array([groups.find(i) for i in range(n)], np.int64)
