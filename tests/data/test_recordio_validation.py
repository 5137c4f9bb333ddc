"""RecordIO packs that lie: record 0 ranges, labels, `property` and .idx entries that disagree with the data
are refused at open (or at the record) with the file and the record key, before anything large is allocated."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from marginface.data import RecordIODataset, RecordIOError, RecordIOReader
from marginface.data.recordio import _read_index_lines, read_index

from .helpers import write_raw_pack

LABELS = [float(i // 4) for i in range(28)]  # 28 images of 7 identities: keys 1..28, identities 29..35


@pytest.mark.parametrize(("ranges", "message"), [
    ((1e9, 1e9 + 10), r"record 0 announces 999999999 images and \d+ identity records .* lists 36 records and "
                      r"the file holds \d+ bytes"),
    ((10, 20), r"record 0 announces keys 0\.\.19 .* key 20 lies beyond"),
    ((35, 45), r"record 0 announces 34 images and 10 identity records \(keys 0\.\.44\) but .* lists 36"),
    ((29.5, 36), r"record 0 announces identity range \[29\.5, 36\]; expected two integers"),
    ((float("nan"), 36), r"identity range \[nan, 36\]"),
    ((30, 20), r"expected 1 <= first <= end"),
])
def test_record0_ranges_that_disagree_with_the_index(tmp_path: Path, ranges, message: str) -> None:
    pack = write_raw_pack(tmp_path / "p", LABELS, ranges=ranges)
    with pytest.raises(RecordIOError, match=message) as err:
        RecordIODataset(pack)
    assert str(pack / "train.rec") in str(err.value)


def test_shifted_range_reads_identity_records_not_images(tmp_path: Path) -> None:
    # 28 images + 7 identity records = keys 0..35; [30, 36) keeps the key count but calls record 29 an image
    pack = write_raw_pack(tmp_path / "p", LABELS, ranges=(30, 36), property_text="6,112,112\n")
    with pytest.raises(RecordIOError, match=r"record 29, the last image record .* holds no image"):
        RecordIODataset(pack)
    # and [28, 35): record 28 (an image) would be read as the first identity record
    pack = write_raw_pack(tmp_path / "q", LABELS, ranges=(28, 36), property_text="8,112,112\n")
    with pytest.raises(RecordIOError, match=r"record 28 should be an identity record"):
        RecordIODataset(pack)


def test_property_disagreeing_with_identity_records(tmp_path: Path) -> None:
    pack = write_raw_pack(tmp_path / "p", LABELS, property_text="9,112,112\n")
    with pytest.raises(RecordIOError, match=r"property: 9 classes, but record 0 of .* announces 7 identity"):
        RecordIODataset(pack)


@pytest.mark.parametrize(("text", "message"), [
    (b"\x89PNG\x00\xff\xfe", r"expected 'num_classes,height,width', found binary data b'\\x89PNG"),
    (b"0,112,112\n", "the number of classes must be positive, found 0"),
    (b"-3,112,112\n", "the number of classes must be positive, found -3"),
    (b"", "expected 'num_classes,height,width', found ''"),
])
def test_bad_property_names_the_file(tmp_path: Path, text: bytes, message: str) -> None:
    pack = write_raw_pack(tmp_path / "p", LABELS, property_text=text)
    with pytest.raises(RecordIOError, match=message) as err:
        RecordIODataset(pack)
    assert str(pack / "property") in str(err.value)


@pytest.mark.parametrize(("bad", "message"), [
    (2.7, r"train\.rec record 3: label 2\.7 is not an integer class"),
    (float("nan"), r"train\.rec record 3: label is nan"),
    (9.0, r"train\.rec record 3: label 9 is outside the class range \[0, 3\)"),
    (-1.0, r"train\.rec record 3: label -1 is outside"),
])
def test_bad_labels_name_file_and_record_key(tmp_path: Path, bad: float, message: str) -> None:
    labels = [0.0, 0.0, bad, 1.0, 2.0, 2.0]
    pack = write_raw_pack(tmp_path / "p", labels, classes=3)
    dataset = RecordIODataset(pack)
    assert dataset[0].label == 0 and dataset[3].label == 1
    with pytest.raises(RecordIOError, match=message):
        dataset[2]
    with pytest.raises(RecordIOError, match=message):
        dataset.label_of(3)


def test_labels_checked_when_classes_come_from_the_labels(tmp_path: Path) -> None:
    labels = [0.0, 1.0, 2.5]
    pack = write_raw_pack(tmp_path / "p", labels, ranges=(4, 4), classes=0)  # no identity records
    (pack / "property").unlink()
    with pytest.raises(RecordIOError, match=r"record 3: label 2\.5 is not an integer class"):
        _ = RecordIODataset(pack).num_classes


@pytest.mark.parametrize(("edit", "message"), [
    (lambda idx: idx.replace("\n3\t", "\n3\t9", 1), r"key 3 points at byte offset 9\d+, past the end of"),
    (lambda idx: idx + "3\t0\n", r"repeats key 3"),
    (lambda idx: idx.replace("2\t", "2\t-", 1), r"negative key or offset"),
    (lambda idx: idx + "\x00\xffgarbage\n", r"is not 'key<TAB>offset'"),
])
def test_index_entries_outside_the_file_or_repeated(tmp_path: Path, edit, message: str) -> None:
    pack = write_raw_pack(tmp_path / "p", [0.0, 1.0, 1.0])
    idx = pack / "train.idx"
    idx.write_bytes(edit(idx.read_text()).encode("latin1"))
    with pytest.raises(RecordIOError, match=message) as err:
        RecordIOReader(pack / "train.rec")
    assert "train.idx" in str(err.value)


def test_index_offsets_too_close_for_a_record(tmp_path: Path) -> None:
    pack = write_raw_pack(tmp_path / "p", [0.0, 1.0, 1.0])
    index = read_index(pack / "train.idx")
    index[2] = index[1] + 4
    (pack / "train.idx").write_text("".join(f"{k}\t{v}\n" for k, v in index.items()))
    with pytest.raises(RecordIOError, match=r"keys 1 and 2 point at byte offsets \d+ and \d+, too close"):
        RecordIOReader(pack / "train.rec")


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(entries=st.lists(st.tuples(st.integers(0, 10**12), st.integers(0, 10**12)), max_size=30),
       noise=st.binary(max_size=12), cut=st.integers(0, 400))
def test_bulk_index_parse_agrees_with_the_line_parser(tmp_path: Path, entries, noise: bytes, cut: int) -> None:
    """The fast path for well-formed .idx files returns exactly what the line parser returns, and damaged
    files (noise spliced in) still raise only RecordIOError naming a line."""
    path = tmp_path / "t.idx"
    text = "".join(f"{k}\t{v}\n" for k, v in entries).encode()
    for data in (text, text[:cut] + noise + text[cut:]):
        path.write_bytes(data)
        try:
            expected = _read_index_lines(data, path)
        except RecordIOError:
            with pytest.raises(RecordIOError, match="t.idx: line"):
                read_index(path)
            continue
        assert read_index(path) == expected
