"""The one error clustering raises for inputs it cannot use, and the checks that raise it."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from marginface.errors import InputError

UNIT_TOLERANCE = 1e-3  # float32 unit rows are within ~1e-6 of norm 1; a real mistake is far beyond this


class ClusterInputError(InputError):
    """Embeddings, labels, constraints or a setting that clustering cannot use; the message names which."""


def check_embeddings(x: np.ndarray, what: str = "embeddings") -> np.ndarray:
    """`x` as a C-contiguous (N, D) float32 array of finite unit rows, or ClusterInputError."""
    x = np.asarray(x)
    if x.ndim != 2 or x.shape[1] == 0:
        raise ClusterInputError(f"{what}: expected an (N, D) array, found shape {x.shape}")
    if not np.issubdtype(x.dtype, np.floating):
        raise ClusterInputError(f"{what}: expected floating-point values, found dtype {x.dtype}")
    x = np.ascontiguousarray(x, dtype=np.float32)
    bad = ~np.isfinite(x).all(axis=1)
    if bad.any():
        raise ClusterInputError(f"{what}: row {int(np.flatnonzero(bad)[0])} holds NaN or inf "
                                f"({int(bad.sum())} such rows)")
    norms = np.linalg.norm(x, axis=1)
    off = np.abs(norms - 1.0) > UNIT_TOLERANCE
    if off.any():
        row = int(np.flatnonzero(off)[0])
        raise ClusterInputError(f"{what}: rows must be unit vectors (cosine geometry); row {row} has norm "
                                f"{norms[row]:.4g} ({int(off.sum())} such rows): normalise them first")
    return x


def check_threshold(threshold: float) -> float:
    """A cosine similarity cut in (-1, 1], or ClusterInputError."""
    value = float(threshold)
    if not np.isfinite(value) or not -1.0 < value <= 1.0:
        raise ClusterInputError(f"threshold is a cosine similarity cut in (-1, 1], got {threshold!r}")
    return value


def check_fixed(fixed: np.ndarray | None, n: int, what: str = "fixed") -> np.ndarray:
    """(N,) int64 user-fixed labels (-1 = free), or ClusterInputError."""
    if fixed is None:
        return np.full(n, -1, np.int64)
    arr = np.asarray(fixed)
    if arr.shape != (n,):
        raise ClusterInputError(f"{what}: expected shape ({n},) (one label per face), found {arr.shape}")
    if arr.size and not np.issubdtype(arr.dtype, np.integer):
        raise ClusterInputError(f"{what}: expected integer labels, found dtype {arr.dtype}")
    arr = arr.astype(np.int64)
    if arr.size and arr.min() < -1:
        raise ClusterInputError(f"{what}: labels are >= 0 (or -1 for free), found {int(arr.min())}")
    return arr


def check_cannot_link(pairs: Iterable[tuple[int, int]], n: int, fixed: np.ndarray) -> dict[int, set[int]]:
    """{face: labels it must never get} from (face index, label) pairs, or ClusterInputError."""
    out: dict[int, set[int]] = {}
    for pair in pairs:
        try:
            face, label = (int(v) for v in pair)
        except (TypeError, ValueError) as err:
            raise ClusterInputError(f"cannot_link: expected (face index, label) pairs, found {pair!r}") from err
        if not 0 <= face < n:
            raise ClusterInputError(f"cannot_link: face index {face} is outside [0, {n})")
        if label < 0:
            raise ClusterInputError(f"cannot_link: label must be >= 0, found {label} for face {face}")
        if fixed[face] == label:
            raise ClusterInputError(f"cannot_link: face {face} is fixed to label {label} and also forbidden it")
        out.setdefault(face, set()).add(label)
    return out
