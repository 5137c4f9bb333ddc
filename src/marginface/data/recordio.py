"""MXNet RecordIO (`train.rec` + `train.idx` + `property`) read and written in pure Python, no MXNet.

Record framing (dmlc-core): uint32 magic 0xCED7230A, uint32 lrec = cflag << 29 | length, payload, zero
padding to 4 bytes. A payload that contains the magic at a 4-byte-aligned offset is split there into parts
(cflag 1 = first, 2 = middle, 3 = last) and the reader puts the magic back between them.
Payload (mx.recordio.pack): IRHeader struct '<IfQQ' (flag, label, id, id2); when flag > 0 a float32 label
array of `flag` entries follows, then the encoded image. insightface's record 0 has flag 2 and label
(N + 1, N + 1 + C): images are records 1..N; records N+1..N+C give each identity's [start, end) range.
"""

from __future__ import annotations

import logging
import os
import struct
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from torch.utils.data import Dataset

from marginface.data.samples import OnError, Sample, SampleDecoder

log = logging.getLogger(__name__)

MAGIC = 0xCED7230A
_MAGIC_BYTES = struct.pack("<I", MAGIC)
_IR_FORMAT = "<IfQQ"
_IR_SIZE = struct.calcsize(_IR_FORMAT)
_LENGTH_MASK = (1 << 29) - 1


class RecordIOError(ValueError):
    """A .rec/.idx file is truncated or corrupt; the message names the file and the byte offset."""


@dataclass(frozen=True)
class IRHeader:
    """insightface/MXNet image-record header; `label` is a float or a float32 array (flag = its length)."""

    flag: int
    label: float | np.ndarray
    id: int
    id2: int

    @property
    def class_label(self) -> int:
        """The integer class of an image record (the first entry when the label is an array)."""
        return int(self.label[0] if isinstance(self.label, np.ndarray) else self.label)


def pack_record(header: IRHeader, payload: bytes) -> bytes:
    """mx.recordio.pack: header struct, optional label array, then the payload."""
    if isinstance(header.label, np.ndarray | list | tuple):
        labels = np.asarray(header.label, dtype=np.float32)
        head = struct.pack(_IR_FORMAT, labels.size, 0.0, header.id, header.id2)
        return head + labels.tobytes() + payload
    return struct.pack(_IR_FORMAT, 0, float(header.label), header.id, header.id2) + payload


def unpack_record(record: bytes, where: str = "<record>") -> tuple[IRHeader, bytes]:
    """mx.recordio.unpack: (header, payload); raises RecordIOError when the record is too short."""
    if len(record) < _IR_SIZE:
        raise RecordIOError(f"{where}: record of {len(record)} bytes is shorter than the {_IR_SIZE}-byte IRHeader")
    flag, label, rid, rid2 = struct.unpack_from(_IR_FORMAT, record)
    offset = _IR_SIZE
    if flag > 0:
        end = offset + 4 * flag
        if len(record) < end:
            raise RecordIOError(f"{where}: header announces {flag} labels but the record ends at byte {len(record)}")
        return IRHeader(flag, np.frombuffer(record[offset:end], dtype=np.float32).copy(), rid, rid2), record[end:]
    return IRHeader(flag, label, rid, rid2), record[offset:]


def _frame(cflag: int, part: bytes) -> bytes:
    pad = (-len(part)) % 4
    return _MAGIC_BYTES + struct.pack("<I", (cflag << 29) | len(part)) + part + b"\0" * pad


def frame_record(payload: bytes) -> bytes:
    """The on-disk bytes of one record, split at aligned magic numbers exactly as dmlc-core does."""
    parts: list[bytes] = []
    start = 0
    aligned = np.frombuffer(payload[: len(payload) // 4 * 4], dtype="<u4")
    for index in np.flatnonzero(aligned == MAGIC):
        cut = int(index) * 4
        parts.append(_frame(1 if start == 0 else 2, payload[start:cut]))
        start = cut + 4
    parts.append(_frame(3 if start else 0, payload[start:]))
    return b"".join(parts)


def read_record_at(handle, offset: int, path: Path | str) -> tuple[bytes, int]:
    """Read the (possibly multi-part) record starting at `offset`; returns (payload, next offset)."""
    chunks: list[bytes] = []
    position = offset
    while True:
        handle.seek(position)
        head = handle.read(8)
        if len(head) < 8:
            raise RecordIOError(f"{path}: truncated record header at byte offset {position}")
        magic, lrec = struct.unpack("<II", head)
        if magic != MAGIC:
            raise RecordIOError(f"{path}: bad magic 0x{magic:08x} at byte offset {position} (corrupt record)")
        cflag, length = lrec >> 29, lrec & _LENGTH_MASK
        if cflag in (2, 3) and not chunks or cflag in (0, 1) and chunks:
            raise RecordIOError(f"{path}: unexpected continuation flag {cflag} at byte offset {position}")
        data = handle.read(length)
        if len(data) < length:
            raise RecordIOError(
                f"{path}: record at byte offset {position} announces {length} bytes but only {len(data)} remain"
            )
        position += 8 + length + (-length) % 4
        chunks.append(data)
        if cflag in (0, 3):
            return _MAGIC_BYTES.join(chunks), position


def scan_offsets(path: Path | str) -> list[int]:
    """Byte offset of every record in a .rec file, by walking it (rebuilds a lost .idx)."""
    offsets: list[int] = []
    size = os.path.getsize(path)
    with open(path, "rb") as handle:
        position = 0
        while position < size:
            offsets.append(position)
            _, position = read_record_at(handle, position, path)
    return offsets


def read_index(idx_path: Path | str) -> dict[int, int]:
    """Parse a .idx file (lines 'key<TAB>offset') into {key: offset}."""
    index: dict[int, int] = {}
    with open(idx_path, encoding="ascii") as f:
        for line_no, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                key, offset = line.split("\t")
                index[int(key)] = int(offset)
            except ValueError as err:
                raise RecordIOError(f"{idx_path}: line {line_no} is not 'key<TAB>offset': {line.strip()!r}") from err
    return index


class RecordIOReader:
    """Random access to a .rec by key through its .idx (rebuilt by scanning when missing).

    The file handle is opened lazily and reopened after a fork, so DataLoader workers each get their own.
    """

    def __init__(self, rec_path: str | Path, idx_path: str | Path | None = None) -> None:
        self.rec_path = Path(rec_path)
        if not self.rec_path.is_file():
            raise FileNotFoundError(f"RecordIO file {self.rec_path} does not exist")
        self.idx_path = Path(idx_path) if idx_path else self.rec_path.with_suffix(".idx")
        if self.idx_path.is_file():
            self.index = read_index(self.idx_path)
        else:
            log.warning("%s is missing: rebuilding the index by scanning %s", self.idx_path, self.rec_path)
            self.index = dict(enumerate(scan_offsets(self.rec_path)))
        ordered = sorted(self.index.values())
        size = self.rec_path.stat().st_size
        # Each record's extent, so that a read is one pread of exactly its bytes.
        self._extent = {start: end - start for start, end in zip(ordered, ordered[1:] + [size], strict=False)}
        self._handle = None
        self._pid = -1

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_handle"], state["_pid"] = None, -1
        return state

    @property
    def keys(self) -> list[int]:
        """All record keys in file order."""
        return sorted(self.index, key=self.index.__getitem__)

    def read(self, key: int) -> bytes:
        """The payload of record `key`."""
        if key not in self.index:
            raise KeyError(f"{self.idx_path}: no record with key {key}")
        if self._handle is None or self._pid != os.getpid():
            self._handle = open(self.rec_path, "rb")  # noqa: SIM115 - kept open across reads
            self._pid = os.getpid()
        offset = self.index[key]
        extent = self._extent.get(offset, 0)
        blob = os.pread(self._handle.fileno(), extent, offset) if extent >= 8 else b""
        if len(blob) >= 8:
            magic, lrec = struct.unpack_from("<II", blob)
            length = lrec & _LENGTH_MASK
            if magic == MAGIC and lrec >> 29 == 0 and 8 + length <= len(blob):
                return blob[8:8 + length]  # the common single-part record
        payload, _ = read_record_at(self._handle, offset, self.rec_path)  # multi-part, or an error to report
        return payload

    def read_header(self, key: int) -> tuple[IRHeader, bytes]:
        """(IRHeader, image bytes) of record `key`."""
        return unpack_record(self.read(key), f"{self.rec_path} record {key} (offset {self.index[key]})")

    def close(self) -> None:
        """Close the file handle (reopened on the next read)."""
        if self._handle is not None:
            self._handle.close()
            self._handle = None


class RecordIOWriter:
    """Appends records to a .rec and writes the matching .idx; use as a context manager."""

    def __init__(self, rec_path: str | Path, idx_path: str | Path | None = None) -> None:
        self.rec_path = Path(rec_path)
        self.idx_path = Path(idx_path) if idx_path else self.rec_path.with_suffix(".idx")
        self._rec = open(self.rec_path, "wb")  # noqa: SIM115
        self._idx = open(self.idx_path, "w", encoding="ascii")  # noqa: SIM115

    def write(self, key: int, payload: bytes) -> None:
        """Append one record under `key`."""
        self._idx.write(f"{key}\t{self._rec.tell()}\n")
        self._rec.write(frame_record(payload))

    def close(self) -> None:
        """Flush and close both files."""
        self._rec.close()
        self._idx.close()

    def __enter__(self) -> RecordIOWriter:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def write_property(path: str | Path, num_classes: int, size: int = 112) -> None:
    """insightface's `property` file: 'num_classes,height,width'."""
    Path(path).write_text(f"{num_classes},{size},{size}\n")


def read_property(path: str | Path) -> int:
    """Number of classes from a `property` file."""
    text = Path(path).read_text().strip()
    try:
        return int(text.split(",")[0])
    except ValueError as err:
        raise RecordIOError(f"{path}: expected 'num_classes,height,width', found {text!r}") from err


def write_face_records(
    out_dir: str | Path, images: Sequence[tuple[bytes, int]] | Iterator[tuple[bytes, int]], num_classes: int,
    size: int = 112,
) -> int:
    """Write train.rec/.idx/property the way insightface lays them out; `images` sorted by label.

    Returns the number of image records written.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    ranges: dict[int, list[int]] = {}
    tmp_rec, tmp_idx = out / "train.rec.tmp", out / "train.idx.tmp"
    # Record 0 needs N, known only at the end: write images to a temporary file, then assemble.
    count = 0
    with RecordIOWriter(tmp_rec, tmp_idx) as writer:
        for key, (payload, label) in enumerate(images, start=1):
            if not 0 <= label < num_classes:
                raise ValueError(f"image {key}: label {label} is outside [0, {num_classes})")
            writer.write(key, pack_record(IRHeader(0, float(label), key, 0), payload))
            span = ranges.setdefault(label, [key, key + 1])
            span[1] = key + 1
            count = key
    first_identity = count + 1
    with RecordIOWriter(out / "train.rec", out / "train.idx") as writer:
        writer.write(0, pack_record(IRHeader(2, np.array([first_identity, first_identity + num_classes]), 0, 0), b""))
        with open(tmp_rec, "rb") as src:
            for key, offset in sorted(read_index(tmp_idx).items()):
                payload, _ = read_record_at(src, offset, tmp_rec)
                writer.write(key, payload)
        for label in range(num_classes):
            start, end = ranges.get(label, [0, 0])
            writer.write(first_identity + label, pack_record(IRHeader(2, np.array([start, end]), 0, 0), b""))
    tmp_rec.unlink()
    tmp_idx.unlink()
    write_property(out / "property", num_classes, size)
    return count


def resolve_rec_paths(path: str | Path) -> tuple[Path, Path, Path]:
    """(train.rec, train.idx, property) from a directory or a .rec path."""
    path = Path(path)
    rec = path / "train.rec" if path.is_dir() else path
    return rec, rec.with_suffix(".idx"), rec.parent / "property"


class RecordIODataset(Dataset):
    """(uint8 112×112×3 RGB image, label) from an insightface-style train.rec (directory or .rec path)."""

    def __init__(self, path: str | Path, flip: bool = False, on_error: OnError = "skip") -> None:
        rec, idx, prop = resolve_rec_paths(path)
        self.reader = RecordIOReader(rec, idx)
        header0, _ = self.reader.read_header(0) if 0 in self.reader.index else (None, b"")
        if header0 is not None and header0.flag > 0:
            first_identity = int(header0.label[0])
            self.keys = list(range(1, first_identity))
            missing = [k for k in (1, first_identity - 1) if k not in self.reader.index]
            if missing:
                raise RecordIOError(f"{rec}: record 0 announces images 1..{first_identity - 1} but key {missing[0]} "
                                    f"is not in {self.reader.idx_path}")
        else:
            self.keys = self.reader.keys
        self.decoder = SampleDecoder(on_error=on_error, flip=flip)
        self._num_classes = read_property(prop) if prop.is_file() else None

    @property
    def num_classes(self) -> int:
        """Identities, from `property` (or the largest label + 1 when the file is absent)."""
        if self._num_classes is None:
            self._num_classes = int(max(self.label_of(k) for k in self.keys)) + 1
        return self._num_classes

    def label_of(self, key: int) -> int:
        """Integer label of record `key` (the first entry when the label is an array)."""
        return self.reader.read_header(key)[0].class_label

    def __len__(self) -> int:
        return len(self.keys)

    def __getitem__(self, index: int) -> Sample | None:
        key = self.keys[index]
        header, payload = self.reader.read_header(key)
        return self.decoder(payload, header.class_label, f"{self.reader.rec_path} record {key}")
