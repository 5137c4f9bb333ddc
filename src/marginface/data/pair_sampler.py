"""Verification pairs drawn from an identity folder when no pairs file exists, with pairs.txt's fold structure.

The sampler (seeded, deterministic for a given folder listing and arguments):

1. Identities (sub-folders with at least one image, sorted by name) are shuffled with `seed` and dealt
   round-robin into `num_folds` folds, so the folds are identity-disjoint, as LFW's ten are.
2. Every fold gets the same number n of same-identity and of different-identity pairs:
   n = min(pairs_per_fold, what the poorest fold can supply), and a PairSetError names the fold when a
   fold cannot supply even one of each.
3. Same pairs: each identity of the fold with ≥ 2 images gets its image pairs in a random order; the fold
   takes them round-robin over its identities (shuffled) until n are drawn, so identities with hundreds
   of images do not crowd out the others.
4. Different pairs: two distinct identities of the fold uniformly, one image of each uniformly, without
   repeating a pair; when n is more than half of the possible different pairs they are enumerated and
   drawn without replacement instead.

The result is an ordinary PairSet (images as paths), fold ids 0..num_folds−1, same pairs first in each
fold as in pairs.txt; `meta` records the folder, seed, n and the identities of each fold.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from marginface.data.folder import scan_identity_folder
from marginface.data.pairs import DEFAULT_FOLDS, PairSet, PairSetError
from marginface.errors import UsageError
from marginface.listing import first_of

log = logging.getLogger(__name__)
DEFAULT_PAIRS_PER_FOLD = 300


def _fold_identities(count: int, num_folds: int, seed: int) -> list[list[int]]:
    order = np.random.default_rng(seed).permutation(count)
    return [sorted(int(i) for i in order[f::num_folds]) for f in range(num_folds)]


def _same_pairs(members: list[np.ndarray], n: int, rng: np.random.Generator) -> list[tuple[int, int]]:
    queues = []
    for images in members:
        if len(images) >= 2:
            a, b = np.triu_indices(len(images), 1)
            order = rng.permutation(len(a))
            queues.append([(int(images[a[k]]), int(images[b[k]])) for k in order[:n]])
    rng.shuffle(queues)
    pairs: list[tuple[int, int]] = []
    depth = 0
    while len(pairs) < n:
        for queue in queues:
            if depth < len(queue) and len(pairs) < n:
                pairs.append(queue[depth])
        depth += 1
    return pairs


def _different_pairs(members: list[np.ndarray], n: int, possible: int,
                     rng: np.random.Generator) -> list[tuple[int, int]]:
    if 2 * n > possible:  # dense: enumerate every cross-identity pair, draw without replacement
        every = [(int(x), int(y)) for i in range(len(members)) for j in range(i + 1, len(members))
                 for x in members[i] for y in members[j]]
        return [every[k] for k in rng.choice(len(every), size=n, replace=False)]
    seen: set[tuple[int, int]] = set()
    pairs: list[tuple[int, int]] = []
    while len(pairs) < n:
        i, j = rng.choice(len(members), size=2, replace=False)
        pair = (int(rng.choice(members[i])), int(rng.choice(members[j])))
        key = (min(pair), max(pair))
        if key not in seen:
            seen.add(key)
            pairs.append(pair)
    return pairs


def sample_pairs(root: str | Path, num_folds: int = DEFAULT_FOLDS, pairs_per_fold: int = DEFAULT_PAIRS_PER_FOLD,
                 seed: int = 0) -> PairSet:
    """A verification PairSet from root/<identity>/<image>: num_folds identity-disjoint folds, each with
    pairs_per_fold same-identity and as many different-identity pairs (like pairs.txt's "10 300" header),
    fewer when the poorest fold cannot supply them (see the module docstring for the rules)."""
    root = Path(root)
    if num_folds < 1 or pairs_per_fold < 1:
        raise UsageError(f"num_folds and pairs_per_fold must be >= 1, found {num_folds} and {pairs_per_fold}")
    names, items = scan_identity_folder(root)
    labels = np.array([label for _, label in items])
    by_identity = [np.flatnonzero(labels == k) for k in range(len(names))]
    present = [k for k in range(len(names)) if len(by_identity[k])]
    if len(present) < 2 * num_folds:
        raise PairSetError(f"{root}: {len(present)} identities with images cannot fill {num_folds} folds "
                           f"(each needs at least 2 for different-identity pairs)")
    folds = [[present[i] for i in fold] for fold in _fold_identities(len(present), num_folds, seed)]
    capacity = []
    for f, fold in enumerate(folds):
        sizes = np.array([len(by_identity[k]) for k in fold])
        same = int(np.sum(sizes * (sizes - 1) // 2))
        different = int((sizes.sum() ** 2 - np.sum(sizes ** 2)) // 2)
        if same < 1:
            raise PairSetError(f"{root}: fold {f} ({first_of([names[k] for k in fold], 5, ', ')}) has no identity "
                               f"with 2 or more images, so no same-identity pair")
        capacity.append((same, different))
    n = min(pairs_per_fold, *(min(c) for c in capacity))
    if n < pairs_per_fold:
        log.info("%s: %d pairs of each kind per fold (asked %d; the poorest fold allows no more)", root, n,
                 pairs_per_fold)
    rng = np.random.default_rng(seed)
    pairs, issame, fold_ids = [], [], []
    for f, fold in enumerate(folds):
        members = [by_identity[k] for k in fold]
        same = _same_pairs(members, n, rng)
        different = _different_pairs(members, n, capacity[f][1], rng)
        pairs += same + different
        issame += [True] * n + [False] * n
        fold_ids += [f] * (2 * n)
    pair_array = np.asarray(pairs, dtype=np.int64)
    used, inverse = np.unique(pair_array.reshape(-1), return_inverse=True)
    meta = {"source": str(root), "sampler": "identity-folder", "seed": seed, "num_folds": num_folds,
            "pairs_per_fold": n, "fold_identities": [[names[k] for k in fold] for fold in folds]}
    return PairSet(root.name, [items[int(i)][0] for i in used], inverse.reshape(-1, 2).astype(np.int64),
                   np.asarray(issame, dtype=bool), np.asarray(fold_ids, dtype=np.int64), meta)
