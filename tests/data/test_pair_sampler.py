"""The identity-folder pair sampler: pairs.txt's fold structure, identity-disjoint folds, determinism."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from marginface.data.pair_sampler import sample_pairs
from marginface.data.pairs import PairSetError


def _folder(root: Path, sizes: list[int]) -> Path:
    for k, size in enumerate(sizes):
        folder = root / f"person_{k:03d}"
        folder.mkdir(parents=True)
        for i in range(size):
            (folder / f"{i}.png").write_bytes(b"not decoded by the sampler")
    return root


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    rng = np.random.default_rng(0)
    return _folder(tmp_path / "faces", [int(v) for v in rng.integers(1, 12, 60)])


def _identity(path: Path) -> str:
    return path.parent.name


def test_fold_structure_and_disjoint_identities(folder: Path) -> None:
    pairs = sample_pairs(folder, num_folds=10, pairs_per_fold=20, seed=3)
    assert pairs.num_folds == 10 and len(pairs) == 10 * 2 * 20
    for fold in range(10):
        keep = pairs.folds == fold
        assert pairs.issame[keep].sum() == 20 and (~pairs.issame[keep]).sum() == 20
        assert pairs.issame[keep][:20].all()  # same pairs first, as in pairs.txt
    fold_of: dict[str, int] = {}
    seen = set()
    for (a, b), same, fold in zip(pairs.pairs, pairs.issame, pairs.folds, strict=True):
        ia, ib = _identity(pairs.images[a]), _identity(pairs.images[b])
        assert (ia == ib) == bool(same) and a != b
        for name in (ia, ib):
            assert fold_of.setdefault(name, int(fold)) == fold, f"{name} appears in two folds"
        key = (min(a, b), max(a, b))
        assert key not in seen
        seen.add(key)
    assert [sorted(f) for f in pairs.meta["fold_identities"]] == pairs.meta["fold_identities"]
    assert sum(len(f) for f in pairs.meta["fold_identities"]) == 60


def test_deterministic_and_seeded(folder: Path) -> None:
    a, b = sample_pairs(folder, pairs_per_fold=15, seed=1), sample_pairs(folder, pairs_per_fold=15, seed=1)
    assert a.images == b.images
    np.testing.assert_array_equal(a.pairs, b.pairs)
    np.testing.assert_array_equal(a.folds, b.folds)
    c = sample_pairs(folder, pairs_per_fold=15, seed=2)
    as_names = {(a.images[i].as_posix(), a.images[j].as_posix()) for i, j in a.pairs}
    assert as_names != {(c.images[i].as_posix(), c.images[j].as_posix()) for i, j in c.pairs}


def test_capped_by_the_poorest_fold_and_spread_over_identities(tmp_path: Path) -> None:
    # 20 identities of 5 images, 10 folds: each fold has 2 identities → 20 same pairs, 25 different
    pairs = sample_pairs(_folder(tmp_path / "small", [5] * 20), num_folds=10, pairs_per_fold=300)
    assert pairs.meta["pairs_per_fold"] == 20 and len(pairs) == 400
    # dense case (20 of the 25 different pairs of each fold): drawn without repeats
    different = {(min(a, b), max(a, b)) for a, b in pairs.pairs[~pairs.issame]}
    assert len(different) == 200
    # round robin: one identity with 200 images does not crowd out three with 3 images each
    pairs = sample_pairs(_folder(tmp_path / "skewed", [200] + [3] * 3), num_folds=1, pairs_per_fold=8)
    same_ids = [_identity(pairs.images[a]) for a, _ in pairs.pairs[pairs.issame]]
    assert sorted(same_ids.count(name) for name in set(same_ids)) == [2, 2, 2, 2]


def test_errors_name_the_folder(tmp_path: Path) -> None:
    with pytest.raises(PairSetError, match="3 identities with images cannot fill 10 folds"):
        sample_pairs(_folder(tmp_path / "few", [4, 4, 4]))
    with pytest.raises(PairSetError, match=r"fold \d .* no identity with 2 or more images"):
        sample_pairs(_folder(tmp_path / "singles", [1] * 40))
    with pytest.raises(FileNotFoundError, match="missing"):
        sample_pairs(tmp_path / "missing")
    with pytest.raises(ValueError, match="pairs_per_fold must be >= 1"):
        sample_pairs(tmp_path / "few", pairs_per_fold=0)


def test_orl_gives_pairs_txt_like_folds(shared_data: Path) -> None:
    pairs = sample_pairs(shared_data / "orl_att_faces" / "att_faces")
    assert pairs.num_folds == 10 and pairs.meta["pairs_per_fold"] == 180 and len(pairs.images) == 400
