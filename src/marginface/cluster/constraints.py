"""User decisions every clustering run honours: faces fixed to a person and "not this person" links.

`Constraints` holds them per face; `allowed` answers whether two groups may become one, `finish` turns
groups of faces into output labels (fixed people keep their label, new people get labels above every fixed
and forbidden label, free groups below `min_size` become -1), and `enforce` imposes the decisions on the
labels of an algorithm that cannot take them into account while it runs (DBSCAN, HDBSCAN).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class Constraints:
    """Per face: its fixed label (-1 = free) and the labels it must never get."""

    fixed: np.ndarray
    forbid: dict[int, set[int]] = field(default_factory=dict)

    @property
    def active(self) -> bool:
        """Whether any face is fixed or has a cannot-link."""
        return bool(self.forbid) or bool((self.fixed >= 0).any())

    def first_new_label(self) -> int:
        """The lowest label no fixed or forbidden label can collide with."""
        top = int(self.fixed.max(initial=-1))
        for labels in self.forbid.values():
            top = max(top, max(labels))
        return top + 1


def allowed(fixed_a: int, forbid_a: set[int] | None, fixed_b: int, forbid_b: set[int] | None) -> bool:
    """Whether groups (fixed label, forbidden labels) a and b may merge: never two fixed people, never a
    group into a person one of its faces must not be."""
    if fixed_a >= 0 and fixed_b >= 0 and fixed_a != fixed_b:
        return False
    if fixed_a >= 0 and forbid_b and fixed_a in forbid_b:
        return False
    return not (fixed_b >= 0 and forbid_a and fixed_b in forbid_a)


def finish(groups: np.ndarray, constraints: Constraints, min_size: int) -> np.ndarray:
    """Output labels from group ids per face (any ints, -1 = none): a group holding fixed faces takes their
    label; other groups of at least `min_size` faces get new labels in order of their first face."""
    n = len(groups)
    groups = np.asarray(groups, np.int64)
    out = np.full(n, -1, np.int64)
    valid = groups >= 0
    if valid.any():
        codes, first, inverse, sizes = np.unique(groups[valid], return_index=True, return_inverse=True,
                                                 return_counts=True)
        rows = np.flatnonzero(valid)
        fixed = constraints.fixed[rows]
        group_fixed = np.full(len(codes), -1, np.int64)
        np.maximum.at(group_fixed, inverse, fixed)
        label_of = group_fixed.copy()
        new = np.flatnonzero((group_fixed < 0) & (sizes >= max(min_size, 1)))
        new = new[np.argsort(rows[first[new]], kind="stable")]
        label_of[new] = constraints.first_new_label() + np.arange(len(new))
        out[rows] = label_of[inverse]
    fixed_rows = constraints.fixed >= 0
    out[fixed_rows] = constraints.fixed[fixed_rows]
    return out


def enforce(raw: np.ndarray, constraints: Constraints) -> np.ndarray:
    """Group ids honouring the constraints, from an unconstrained clustering `raw` (-1 = noise): a raw
    cluster with fixed faces becomes the person most of them are fixed to (its other fixed faces keep their
    own person); free faces that must not be that person, and free noise, are left out (-1)."""
    raw = np.asarray(raw, np.int64)
    out = raw.copy()
    if not constraints.active:
        return out
    n = len(raw)
    groups = np.where(raw >= 0, raw, -1)
    offset = int(raw.max(initial=-1)) + 1  # fixed person L becomes group offset + L
    fixed = constraints.fixed
    for cluster in np.unique(groups[(fixed >= 0) & (groups >= 0)]):
        members = np.flatnonzero(groups == cluster)
        held = fixed[members][fixed[members] >= 0]
        person = int(np.bincount(held).argmax())
        out[members] = offset + person
    out[fixed >= 0] = offset + fixed[fixed >= 0]
    for face, labels in constraints.forbid.items():
        if fixed[face] < 0 and out[face] >= offset and int(out[face] - offset) in labels:
            out[face] = -1
    assert len(out) == n
    return out
