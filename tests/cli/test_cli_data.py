"""`marginface data pack|bin|align` end to end on files in tmp_path."""

from __future__ import annotations

from pathlib import Path

import pytest

from marginface.cli import main
from marginface.data import RecordIODataset, read_bin

from ..data.helpers import write_identity_folder


def test_data_pack(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = write_identity_folder(tmp_path / "faces", identities=2, per_identity=3)
    assert main(["data", "pack", str(folder), str(tmp_path / "rec")]) == 0
    assert "packed 6 images of 2 identities" in capsys.readouterr().out
    assert len(RecordIODataset(tmp_path / "rec")) == 6
    assert (tmp_path / "rec" / "labels.tsv").read_text().splitlines()[1] == "1\tid_01"


def test_data_bin_from_lfw_pairs(tmp_path: Path, shared_data: Path) -> None:
    pairs = tmp_path / "pairs.txt"
    lines = (shared_data / "lfw" / "pairs.txt").read_text().splitlines()
    pairs.write_text("\n".join(["1 2", *lines[1:3], *lines[301:303]]) + "\n")
    assert main(["data", "bin", str(pairs), str(shared_data / "lfw" / "lfw-deepfunneled"),
                 str(tmp_path / "mini.bin")]) == 0
    loaded = read_bin(tmp_path / "mini.bin", num_folds=1)
    assert loaded.issame.tolist() == [True, True, False, False]


def test_data_errors_are_reported(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["data", "pack", str(tmp_path / "missing"), str(tmp_path / "out")]) == 2
    assert "missing does not exist" in capsys.readouterr().err
