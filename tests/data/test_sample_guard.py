"""Undecodable data ends training instead of looping: require_samples stops on an empty epoch or a run of
empty batches, naming the data set and the counts; per-image warnings stop after the first few; SubstituteBadSamples
keeps the batch size and counts what it replaced."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from torch.utils.data import DataLoader

from marginface.data import ImageDecodeError, ImageFolderDataset, RecordIODataset, collate
from marginface.data.recordio import write_face_records
from marginface.data.samples import WARN_FIRST, NoUsableSamples, SubstituteBadSamples, require_samples

from .helpers import write_identity_folder


def _junk_pack(out: Path, count: int = 40) -> Path:
    write_face_records(out, [(b"junk %d" % i, i // 10) for i in range(count)], count // 10)
    return out


def test_all_undecodable_pack_stops_with_counts(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    dataset = RecordIODataset(_junk_pack(tmp_path / "p"))
    with caplog.at_level(logging.WARNING):
        with pytest.raises(NoUsableSamples, match=r"train\.rec: a whole epoch brought no decodable image "
                                                  r"\(all 40 images were undecodable\)"):
            list(require_samples(DataLoader(dataset, batch_size=8, collate_fn=collate), dataset))
    skips = [r for r in caplog.records if "skipping" in r.getMessage()]
    assert len(skips) == WARN_FIRST and "further skipped images are only counted" in skips[-1].getMessage()
    with pytest.raises(NoUsableSamples, match=r"no decodable image in 3 batches in a row \(24 of 24 images"):
        list(require_samples(DataLoader(dataset, batch_size=8, collate_fn=collate), dataset, max_empty_in_row=3))


def test_partly_bad_data_passes_and_is_counted_once(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    root = write_identity_folder(tmp_path / "f", identities=2, per_identity=3)
    for i in range(8):
        (root / "id_00" / f"bad{i}.png").write_bytes(b"junk")
    dataset = ImageFolderDataset(root)
    with caplog.at_level(logging.WARNING):
        batches = list(require_samples(DataLoader(dataset, batch_size=2, collate_fn=collate), dataset, 20))
    assert sum(len(b.labels) for b in batches) == 6
    assert "8 of 14 images in this epoch were undecodable and skipped" in caplog.text


def test_substitution_names_the_data_set(tmp_path: Path) -> None:
    dataset = SubstituteBadSamples(RecordIODataset(_junk_pack(tmp_path / "p", 20)), max_tries=4)
    with pytest.raises(ValueError, match=r"train\.rec: 4 consecutive undecodable samples starting at index 0"):
        dataset[0]


def test_substitute_keeps_batch_size_and_counts(tmp_path: Path) -> None:
    root = write_identity_folder(tmp_path / "f", identities=2, per_identity=3)
    (root / "id_00" / "0_bad.png").write_bytes(b"junk")
    dataset = SubstituteBadSamples(ImageFolderDataset(root))
    assert dataset.num_classes == 2  # attributes pass through
    batch = collate([dataset[i] for i in range(len(dataset))])
    assert len(batch.labels) == 7 and batch.skipped == 1
    bad_root = tmp_path / "g" / "x"
    bad_root.mkdir(parents=True)
    (bad_root / "a.png").write_bytes(b"junk")
    with pytest.raises(ImageDecodeError, match="consecutive undecodable"):
        SubstituteBadSamples(ImageFolderDataset(tmp_path / "g"), max_tries=3)[0]
