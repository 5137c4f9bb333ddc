"""`data check` library side: a full scan that lists every problem of a pack, a .bin or a folder with the
record key / offset / path, and reports a clean data set as clean."""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest

from marginface.data.check import check_data
from marginface.data.pack import pack_folder
from marginface.data.pairs import write_bin
from marginface.data.recordio import read_index
from marginface.data.synthetic import synthetic_pairs

from .helpers import write_identity_folder, write_raw_pack


def test_clean_pack_folder_and_bin(tmp_path: Path) -> None:
    folder = write_identity_folder(tmp_path / "faces", identities=3, per_identity=2)
    pack_folder(folder, tmp_path / "pack")
    write_bin(synthetic_pairs(4, 2, num_folds=1), tmp_path / "s.bin")
    calls = []
    cases = [(tmp_path / "pack", "recordio", 6), (folder, "folder", 6), (tmp_path / "s.bin", "bin", 8)]
    for path, kind, images in cases:
        report = check_data(path, progress=lambda done, total: calls.append((done, total)))
        assert (report.kind, report.images, report.decoded, report.ok) == (kind, images, images, True), report.problems
    assert calls[-1] == (8, 8)
    assert check_data(tmp_path / "pack" / "train.rec").per_identity == {0: 2, 1: 2, 2: 2}


def test_pack_problems_are_all_listed_with_keys(tmp_path: Path) -> None:
    labels = [0.0, 0.0, 2.7, 1.0, float("nan"), 1.0, 5.0, 2.0]
    pack = write_raw_pack(tmp_path / "p", labels, classes=4)
    rec = pack / "train.rec"
    offsets = read_index(pack / "train.idx")
    data = bytearray(rec.read_bytes())
    data[offsets[2] + 8 + 24:offsets[2] + 8 + 24 + 40] = bytes(40)  # record 2's PNG: undecodable
    data[offsets[6]:offsets[6] + 4] = b"XXXX"  # record 6: bad magic
    rec.write_bytes(bytes(data))
    report = check_data(pack)
    text = "\n".join(report.problems)
    assert not report.ok
    assert f"record 2 (offset {offsets[2]}): cannot decode image" in text
    assert "record 3 (offset" in text and "label 2.7 is not an integer class" in text
    assert "record 5 (offset" in text and "label is nan" in text
    assert f"bad magic 0x58585858 at byte offset {offsets[6]}" in text
    assert "record 7 (offset" in text and "label 5 is outside the class range [0, 4)" in text
    assert "1 of 4 identities have no image, e.g. label 3" in text
    assert report.problem_count == 7
    assert check_data(pack, keep=2).problems == report.problems[:2]


def test_pack_that_does_not_open_and_unindexed_bytes(tmp_path: Path) -> None:
    pack = write_raw_pack(tmp_path / "p", [0.0, 1.0], ranges=(1e9, 1e9 + 640))
    report = check_data(pack)
    assert "record 0 announces 999999999 images" in report.problems[0]
    assert report.images == 2  # the records are still scanned one by one
    pack = write_raw_pack(tmp_path / "q", [0.0, 1.0])
    with open(pack / "train.rec", "ab") as f:
        f.write(b"\0" * 16)
    size = (pack / "train.rec").stat().st_size
    assert check_data(pack).problems == [f"{pack / 'train.rec'}: bytes {size - 16}..{size} after the last indexed "
                                         f"record are not indexed"]


def test_folder_and_bin_problems(tmp_path: Path) -> None:
    folder = write_identity_folder(tmp_path / "faces", identities=2, per_identity=2)
    (folder / "id_00" / "bad.png").write_bytes(b"junk")
    (folder / "tab\tname").mkdir()
    (folder / "tab\tname" / "x.png").symlink_to(folder / "id_01" / "0.png")
    report = check_data(folder)
    text = "\n".join(report.problems)
    assert "bad.png: cannot decode image" in text
    assert "tab\\tname'" in text and "identity name contains a TAB" in text
    assert "x.png: the same file as" in text
    assert "identity folder without images of its own" in text
    (tmp_path / "hostile.bin").write_bytes(pickle.dumps(print))
    assert "refused or corrupt pickle" in check_data(tmp_path / "hostile.bin").problems[0]
    (tmp_path / "bad.bin").write_bytes(pickle.dumps(([b"junk", b"junk"], [True])))
    report = check_data(tmp_path / "bad.bin")
    assert report.problem_count == 2 and "bad.bin image 1 (pair 0): cannot decode" in report.problems[1]
    with pytest.raises(FileNotFoundError):
        check_data(tmp_path / "nowhere")
