"""LFW unrestricted protocol at small scale: train on every identity that no held-out fold of pairs.txt uses.

LFW's ten folds of pairs.txt are identity-disjoint, so holding out folds and removing every identity they
mention from the training folder gives a verification test on people the model never saw. This module only
plans the split and lays out files (symbolic links to the raw photos, the pairs subset); detection,
alignment and packing are done by the existing commands over the folders it writes.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from marginface.data.folder import scan_identity_folder
from marginface.data.pairs import PairSetError, read_pairs_txt


@dataclass
class LfwSplit:
    """Training identities (with their photos) and the held-out folds' pairs and photos."""

    test_folds: list[int]
    num_folds: int
    per_fold: int
    train: dict[str, list[Path]]
    test_images: list[Path]
    test_identities: set[str]
    pair_lines: list[str] = field(repr=False)  # the held-out folds' lines of pairs.txt, in order

    def summary(self) -> dict:
        """JSON-ready counts of the split."""
        return {"test_folds": self.test_folds, "test_pairs": len(self.pair_lines),
                "test_identities": len(self.test_identities), "test_images": len(self.test_images),
                "train_identities": len(self.train), "train_images": sum(len(v) for v in self.train.values())}


def plan_lfw_split(pairs_path: str | Path, raw_root: str | Path, test_folds: list[int],
                   min_images: int = 2) -> LfwSplit:
    """Split LFW: held-out `test_folds` of pairs.txt vs training identities with >= `min_images` photos
    that none of those folds mentions. Raises PairSetError naming the fold when a fold does not exist."""
    pairs_path, raw_root = Path(pairs_path), Path(raw_root)
    pair_set = read_pairs_txt(pairs_path, raw_root, check_files=False)
    lines = [line.split() for line in pairs_path.read_text().splitlines() if line.strip()]
    bad = [f for f in test_folds if not 0 <= f < pair_set.num_folds]
    if bad or not test_folds:
        raise PairSetError(f"{pairs_path}: test folds {test_folds} must be non-empty and within "
                           f"0..{pair_set.num_folds - 1}")
    held = pair_set.subset(sorted(set(test_folds)))
    num_folds, per_fold = pair_set.num_folds, int((pair_set.folds == test_folds[0]).sum()) // 2
    test_images = [Path(p) for p in held.images]
    test_identities = {p.parent.name for p in test_images}
    body = lines[1:] if len(lines) == len(pair_set) + 1 else lines
    pair_lines = [" ".join(parts) for parts, fold in zip(body, pair_set.folds, strict=True) if fold in test_folds]
    names, items = scan_identity_folder(raw_root)
    photos: dict[str, list[Path]] = {name: [] for name in names}
    for path, label in items:
        photos[names[label]].append(path)
    train = {name: files for name, files in photos.items()
             if name not in test_identities and len(files) >= min_images}
    return LfwSplit(sorted(set(test_folds)), num_folds, per_fold, train, test_images, test_identities, pair_lines)


def link_photos(files: list[Path], raw_root: str | Path, out_root: str | Path) -> int:
    """Mirror `files` (under raw_root) into out_root/<identity>/<file> as symbolic links; returns the count.

    Links are per file, not per folder: the alignment step walks real directories only."""
    raw_root, out_root = Path(os.path.abspath(raw_root)), Path(out_root)
    for path in files:
        source = Path(os.path.abspath(path))  # absolute, but a link inside raw_root stays inside it
        target = out_root / source.relative_to(raw_root)
        target.parent.mkdir(parents=True, exist_ok=True)
        if not target.is_symlink():
            target.symlink_to(source)
    return len(files)


def write_split_files(split: LfwSplit, out: str | Path) -> tuple[Path, Path]:
    """Write out/test_pairs.txt (header 'folds per_fold', the held-out folds' lines) and out/split.json."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    pairs = out / "test_pairs.txt"
    pairs.write_text(f"{len(split.test_folds)}\t{split.per_fold}\n" + "\n".join(split.pair_lines) + "\n")
    info = out / "split.json"
    info.write_text(json.dumps({**split.summary(), "train_identity_names": sorted(split.train),
                                "test_identity_names": sorted(split.test_identities)}, indent=1) + "\n")
    return pairs, info
