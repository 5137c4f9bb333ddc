"""LFW split: held-out folds' identities never train; the pairs subset reads back as the same folds."""

from __future__ import annotations

from pathlib import Path

import pytest

from marginface.data.lfw_split import link_photos, plan_lfw_split, write_split_files
from marginface.data.pairs import PairSetError, read_pairs_txt

# Two folds of 1 same + 1 different pair; fold 0 uses A and B (and C, a singleton), fold 1 uses D and E.
PAIRS = "2\t1\nA\t1\t2\nB\t1\tC\t1\nD\t1\t2\nD\t2\tE\t1\n"
COUNTS = {"A": 2, "B": 3, "C": 1, "D": 2, "E": 2, "F": 4, "G": 1}


def _fake_lfw(root: Path) -> Path:
    raw = root / "raw"
    for name, count in COUNTS.items():
        (raw / name).mkdir(parents=True)
        for i in range(1, count + 1):
            (raw / name / f"{name}_{i:04d}.jpg").write_bytes(b"jpeg")
    (root / "pairs.txt").write_text(PAIRS)
    return raw


def test_split_holds_out_fold_identities_and_writes_pairs(tmp_path: Path) -> None:
    raw = _fake_lfw(tmp_path)
    split = plan_lfw_split(tmp_path / "pairs.txt", raw, [0], min_images=2)
    assert split.test_identities == {"A", "B", "C"}
    assert sorted(split.train) == ["D", "E", "F"]  # G has one photo; A, B, C are held out
    assert split.summary()["train_images"] == 8 and split.summary()["test_images"] == 4
    pairs, info = write_split_files(split, tmp_path / "out")
    assert "train_identity_names" in info.read_text()
    held = read_pairs_txt(pairs, raw)
    assert len(held) == 2 and held.num_folds == 1 and held.issame.tolist() == [True, False]
    assert link_photos(split.test_images, raw, tmp_path / "links") == 4
    assert (tmp_path / "links" / "B" / "B_0001.jpg").is_symlink()
    assert sorted(plan_lfw_split(tmp_path / "pairs.txt", raw, [0, 1], min_images=1).train) == ["F", "G"]


def test_split_rejects_missing_fold(tmp_path: Path) -> None:
    raw = _fake_lfw(tmp_path)
    with pytest.raises(PairSetError, match=r"test folds \[2\]"):
        plan_lfw_split(tmp_path / "pairs.txt", raw, [2])
