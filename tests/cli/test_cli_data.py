"""`marginface data pack|bin|align` end to end on files in tmp_path."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from marginface.cli import main
from marginface.data import RecordIODataset, read_bin, read_pairs_txt

from ..data.helpers import write_identity_folder


def test_data_pack(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = write_identity_folder(tmp_path / "faces", identities=2, per_identity=3)
    assert main(["data", "pack", str(folder), str(tmp_path / "rec")]) == 0
    assert "packed 6 images of 2 identities" in capsys.readouterr().out
    assert len(RecordIODataset(tmp_path / "rec")) == 6
    assert json.loads((tmp_path / "rec" / "labels.json").read_text())["1"] == "id_01"


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


def test_data_lfw_split_end_to_end(tmp_path: Path, shared_data: Path, capsys: pytest.CaptureFixture[str]) -> None:
    lfw = shared_data / "lfw" / "lfw-deepfunneled"
    raw = tmp_path / "raw"
    for name, count in (("Aaron_Peirsol", 2), ("Abdullah_Gul", 2), ("Adrien_Brody", 2)):
        (raw / name).mkdir(parents=True)
        for i in range(1, count + 1):
            (raw / name / f"{name}_{i:04d}.jpg").symlink_to(lfw / name / f"{name}_{i:04d}.jpg")
    pairs = tmp_path / "pairs.txt"
    pairs.write_text("2 1\nAaron_Peirsol 1 2\nAaron_Peirsol 1 Abdullah_Gul 1\nAdrien_Brody 1 2\n"
                     "Adrien_Brody 1 Abdullah_Gul 2\n")
    detector = shared_data / "face_detection_yunet" / "face_detection_yunet_2023mar.onnx"
    out = tmp_path / "out"
    assert main(["data", "lfw-split", str(raw), str(pairs), str(out), "--detector", str(detector),
                 "--test-folds", "0"]) == 0
    assert "packed 2 images of 1 identities" in capsys.readouterr().out  # Adrien_Brody only
    assert len(RecordIODataset(out / "rec")) == 2
    held = read_pairs_txt(out / "test_pairs.txt", out / "test")
    assert held.issame.tolist() == [True, False] and len(held.images) == 3
