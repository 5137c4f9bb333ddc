"""RecordIO: framing, IRHeader, folder → rec → dataset round trip, rebuilt index, corrupt input."""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from marginface.data import ImageFolderDataset, RecordIODataset, RecordIOError, RecordIOReader, RecordIOWriter
from marginface.data.pack import pack_folder
from marginface.data.recordio import MAGIC, IRHeader, pack_record, read_index, unpack_record

from .helpers import write_identity_folder


def test_folder_to_rec_round_trip(tmp_path: Path) -> None:
    folder = write_identity_folder(tmp_path / "faces", identities=3, per_identity=4)
    report = pack_folder(folder, tmp_path / "rec")
    assert (report.images, report.classes, report.skipped) == (12, 3, [])
    assert (tmp_path / "rec" / "property").read_text().strip() == "3,112,112"
    from_folder = ImageFolderDataset(folder)
    from_rec = RecordIODataset(tmp_path / "rec")
    assert len(from_rec) == len(from_folder) == 12
    assert from_rec.num_classes == 3
    for i in range(12):
        a, b = from_folder[i], from_rec[i]
        assert a.label == b.label
        np.testing.assert_array_equal(a.image, b.image)
    # record 0 and the identity records follow insightface's layout
    reader = RecordIOReader(tmp_path / "rec" / "train.rec")
    header0, _ = reader.read_header(0)
    assert header0.flag == 2 and list(header0.label) == [13.0, 16.0]
    header_id1, _ = reader.read_header(14)
    assert list(header_id1.label) == [5.0, 9.0]


def test_payload_containing_magic_is_split_and_restored(tmp_path: Path) -> None:
    magic = struct.pack("<I", MAGIC)
    payloads = [b"abcd" + magic + b"efgh" + magic + b"xy", magic, b"", b"abc", magic * 3 + b"z"]
    with RecordIOWriter(tmp_path / "t.rec") as writer:
        for key, payload in enumerate(payloads):
            writer.write(key, payload)
    reader = RecordIOReader(tmp_path / "t.rec")
    for key, payload in enumerate(payloads):
        assert reader.read(key) == payload


def test_missing_idx_is_rebuilt(tmp_path: Path) -> None:
    folder = write_identity_folder(tmp_path / "faces", identities=2, per_identity=3)
    pack_folder(folder, tmp_path / "rec")
    original = read_index(tmp_path / "rec" / "train.idx")
    (tmp_path / "rec" / "train.idx").unlink()
    reader = RecordIOReader(tmp_path / "rec" / "train.rec")
    assert reader.index == original
    assert len(RecordIODataset(tmp_path / "rec")) == 6


def test_truncated_record_names_offset(tmp_path: Path) -> None:
    with RecordIOWriter(tmp_path / "t.rec") as writer:
        for key in range(3):
            writer.write(key, bytes([65 + key]) * 100)
    data = (tmp_path / "t.rec").read_bytes()
    (tmp_path / "t.rec").write_bytes(data[:-40])
    with pytest.raises(RecordIOError, match="byte offset 216"):  # opening looks at the last record
        RecordIOReader(tmp_path / "t.rec")
    (tmp_path / "t.rec").write_bytes(data[:108] + b"\0" * 4 + data[112:])  # the middle record's magic
    reader = RecordIOReader(tmp_path / "t.rec")
    assert reader.read(0) == b"A" * 100 and reader.read(2) == b"C" * 100
    with pytest.raises(RecordIOError, match="byte offset 108"):
        reader.read(1)


def test_corrupt_magic_names_offset(tmp_path: Path) -> None:
    with RecordIOWriter(tmp_path / "t.rec") as writer:
        writer.write(0, b"x" * 8)
    (tmp_path / "t.rec").write_bytes(b"\0\0\0\0" + (tmp_path / "t.rec").read_bytes()[4:])
    with pytest.raises(RecordIOError, match="bad magic .* byte offset 0"):
        RecordIOReader(tmp_path / "t.rec").read(0)


def test_header_pack_unpack() -> None:
    header, payload = unpack_record(pack_record(IRHeader(0, 17.0, 5, 0), b"img"))
    assert (header.flag, header.label, header.id, payload) == (0, 17.0, 5, b"img")
    header, payload = unpack_record(pack_record(IRHeader(0, np.array([3.0, 9.0]), 0, 0), b""))
    assert header.flag == 2 and list(header.label) == [3.0, 9.0] and payload == b""


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.binary(max_size=300), cut=st.integers(0, 400))
def test_random_bytes_only_raise_documented_errors(tmp_path: Path, data: bytes, cut: int) -> None:
    path = tmp_path / "fuzz.rec"
    with RecordIOWriter(path) as writer:
        writer.write(0, pack_record(IRHeader(0, 1.0, 0, 0), data))
    blob = path.read_bytes()
    for candidate in (data, blob[:cut], blob[: len(blob) // 2] + data):
        path.write_bytes(candidate)
        (tmp_path / "fuzz.idx").unlink(missing_ok=True)
        try:
            reader = RecordIOReader(path)
            for key in reader.index:
                unpack_record(reader.read(key))
        except RecordIOError:
            pass


def test_dataset_with_dataloader_workers(tmp_path: Path) -> None:
    from torch.utils.data import DataLoader

    from marginface.data import collate

    folder = write_identity_folder(tmp_path / "faces", identities=3, per_identity=4)
    pack_folder(folder, tmp_path / "rec")
    dataset = RecordIODataset(tmp_path / "rec")
    dataset[0]  # the parent opens its handle first: each worker must open its own after the fork
    batches = list(DataLoader(dataset, batch_size=5, num_workers=2, collate_fn=collate))
    assert sorted(sum((b.labels.tolist() for b in batches), [])) == sorted(i // 4 for i in range(12))
