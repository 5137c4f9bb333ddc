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

from marginface.data.labels import find_pack_class_names
from marginface.data.samples import OnError, Sample, SampleDecoder
from marginface.data.staging import StagedOutputs
from marginface.errors import InputError

log = logging.getLogger(__name__)

MAGIC = 0xCED7230A
_MAGIC_BYTES = struct.pack("<I", MAGIC)
_IR_FORMAT = "<IfQQ"
_IR_SIZE = struct.calcsize(_IR_FORMAT)
_LENGTH_MASK = (1 << 29) - 1


class RecordIOError(InputError):
    """A .rec/.idx file is truncated or corrupt; the message names the file and the byte offset."""


@dataclass(frozen=True)
class IRHeader:
    """insightface/MXNet image-record header; `label` is a float or a float32 array (flag = its length)."""

    flag: int
    label: float | np.ndarray
    id: int
    id2: int


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
    """Parse a .idx file (lines 'key<TAB>offset') into {key: offset}; duplicate or negative entries are errors.

    A well-formed file is parsed in bulk (an ms1m-sized index in a few seconds); anything else goes through
    the line-by-line parser, which names the first bad line.
    """
    data = Path(idx_path).read_bytes()
    values = _parse_index_bulk(data)
    if values is not None:
        index = dict(zip(values[:, 0].tolist(), values[:, 1].tolist(), strict=True))
        if len(index) == len(values):
            return index
    return _read_index_lines(data, idx_path)


def _parse_index_bulk(data: bytes) -> np.ndarray | None:
    """(N, 2) keys and offsets when every line is exactly 'digits<TAB>digits', else None."""
    if not data:
        return np.zeros((0, 2), dtype=np.int64)
    if data.translate(None, b"0123456789\t\n"):
        return None  # signs, spaces, CR or junk: leave it to the line parser
    if not data.endswith(b"\n"):
        data += b"\n"
    raw = np.frombuffer(data, dtype=np.uint8)
    seps = np.flatnonzero((raw == 9) | (raw == 10))
    kinds = raw[seps]
    widths = np.diff(seps, prepend=-1) - 1  # digits in each field
    if len(seps) % 2 or np.any(kinds[0::2] != 9) or np.any(kinds[1::2] != 10) or widths.min() < 1 or \
            widths.max() > 18:
        return None  # not one TAB then one newline per line, an empty field, or a number too long for int64
    values = np.fromstring(data.decode("ascii"), dtype=np.int64, sep=" ")
    return values.reshape(-1, 2) if values.size == len(seps) else None


def _read_index_lines(data: bytes, idx_path: Path | str) -> dict[int, int]:
    index: dict[int, int] = {}
    for line_no, raw in enumerate(data.split(b"\n"), start=1):
        line = raw.strip()
        if not line:
            continue
        try:
            key_text, offset_text = line.split(b"\t")
            key, offset = int(key_text), int(offset_text)
        except ValueError as err:
            shown = line[:60].decode("ascii", "backslashreplace")
            raise RecordIOError(f"{idx_path}: line {line_no} is not 'key<TAB>offset': {shown!r}") from err
        if key < 0 or offset < 0:
            raise RecordIOError(f"{idx_path}: line {line_no} has a negative key or offset ({key}, {offset})")
        if key in index:
            raise RecordIOError(f"{idx_path}: line {line_no} repeats key {key} (first at offset {index[key]})")
        index[key] = offset
    return index


def check_index_extents(index: dict[int, int], size: int, rec_path: Path | str, idx_path: Path | str) -> None:
    """Every offset inside the .rec with room for a record header, no two records at the same place
    (vectorised: a 5 M-entry index takes well under a second)."""
    if not index:
        return
    offsets = np.fromiter(index.values(), dtype=np.int64, count=len(index))
    order = np.argsort(offsets, kind="stable")
    ordered = offsets[order]
    keys = None
    if ordered[-1] + 8 > size:
        keys = np.fromiter(index.keys(), dtype=np.int64, count=len(index))[order]
        first = int(np.flatnonzero(ordered + 8 > size)[0])
        raise RecordIOError(f"{idx_path}: key {keys[first]} points at byte offset {ordered[first]}, past the end "
                            f"of {rec_path} ({size} bytes)")
    close = np.flatnonzero(np.diff(ordered) < 8)
    if close.size:
        keys = np.fromiter(index.keys(), dtype=np.int64, count=len(index))[order]
        i = int(close[0])
        raise RecordIOError(f"{idx_path}: keys {keys[i]} and {keys[i + 1]} point at byte offsets {ordered[i]} and "
                            f"{ordered[i + 1]}, too close for two records of {rec_path}")


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
        size = self.rec_path.stat().st_size
        check_index_extents(self.index, size, self.rec_path, self.idx_path)
        ordered = sorted(self.index.values())
        # Each record's extent, so that a read is one pread of exactly its bytes.
        self._extent = {start: end - start for start, end in zip(ordered, ordered[1:] + [size], strict=False)}
        self._handle = None
        self._pid = -1
        if ordered:  # a cheap look at both ends: a wrong .idx or a truncated .rec shows here
            with open(self.rec_path, "rb") as handle:
                for offset in {ordered[0], ordered[-1]}:
                    read_record_at(handle, offset, self.rec_path)

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
        try:
            self._idx = open(self.idx_path, "w", encoding="ascii")  # noqa: SIM115
        except OSError:
            self._rec.close()
            raise

    def write(self, key: int, payload: bytes) -> None:
        """Append one record under `key`."""
        self._idx.write(f"{key}\t{self._rec.tell()}\n")
        self._rec.write(frame_record(payload))

    def close(self) -> None:
        """Flush and close both files (both are closed even when flushing one fails, e.g. on a full disk)."""
        try:
            self._rec.close()
        finally:
            self._idx.close()

    def __enter__(self) -> RecordIOWriter:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def write_property(path: str | Path, num_classes: int, size: int = 112) -> None:
    """insightface's `property` file: 'num_classes,height,width'."""
    Path(path).write_text(f"{num_classes},{size},{size}\n")


def read_property(path: str | Path) -> int:
    """Number of classes from a `property` file ('num_classes,height,width'); anything else names the file."""
    raw = Path(path).read_bytes()[:256]
    try:
        text = raw.decode("ascii").strip()
        classes = int(text.split(",")[0])
    except (UnicodeDecodeError, ValueError) as err:
        shown = repr(raw[:40].decode("ascii").strip()) if raw.isascii() else f"binary data {raw[:16]!r}"
        raise RecordIOError(f"{path}: expected 'num_classes,height,width', found {shown}") from err
    if classes <= 0:
        raise RecordIOError(f"{path}: the number of classes must be positive, found {classes}")
    return classes


def check_label(label: float | np.ndarray, num_classes: int | None, where: str) -> int:
    """The integer class of a header label; NaN, fractional or out-of-range values raise naming `where`."""
    value = float(label[0]) if isinstance(label, np.ndarray) else float(label)
    if not np.isfinite(value):
        raise RecordIOError(f"{where}: label is {value}, expected an integer class")
    if value != int(value):
        raise RecordIOError(f"{where}: label {value:g} is not an integer class")
    klass = int(value)
    if klass < 0 or num_classes is not None and klass >= num_classes:
        bound = f"[0, {num_classes})" if num_classes is not None else "[0, ...)"
        raise RecordIOError(f"{where}: label {klass} is outside the class range {bound}")
    return klass


@dataclass(frozen=True)
class FaceRecordLayout:
    """Where images and identity records live in an insightface pack: images are keys 1..first_identity-1,
    identity records first_identity..end_identity-1 (empty when record 0 carries no ranges)."""

    image_keys: Sequence[int]
    first_identity: int = 0
    end_identity: int = 0

    @property
    def identities(self) -> int:
        """Number of identity records."""
        return self.end_identity - self.first_identity


def read_layout(reader: RecordIOReader, property_classes: int | None = None,
                property_path: Path | None = None) -> FaceRecordLayout:
    """Validate record 0's identity ranges against the .idx keys, the .rec size and `property` before anything
    is allocated, and look at the records on both sides of the image/identity boundary."""
    rec, idx = reader.rec_path, reader.idx_path
    if 0 not in reader.index:
        return FaceRecordLayout(reader.keys)
    header0, _ = reader.read_header(0)
    if header0.flag == 0:  # a plain pack: record 0 is an image like the others
        return FaceRecordLayout(reader.keys)
    ranges = np.asarray(header0.label, dtype=np.float64)
    shown = "[" + ", ".join(f"{v:g}" for v in ranges[:2]) + "]"
    if ranges.size < 2 or not np.all(np.isfinite(ranges[:2])) or np.any(ranges[:2] != np.round(ranges[:2])):
        raise RecordIOError(f"{rec}: record 0 announces identity range {shown}; expected two integers "
                            f"[first identity record, end]")
    first, end = int(ranges[0]), int(ranges[1])
    if not 1 <= first <= end:
        raise RecordIOError(f"{rec}: record 0 announces identity records [{first}, {end}); expected "
                            f"1 <= first <= end")
    size = reader.rec_path.stat().st_size
    if end > len(reader.index) or end * 8 > size:
        raise RecordIOError(f"{rec}: record 0 announces {first - 1} images and {end - first} identity records "
                            f"(keys 0..{end - 1}) but {idx} lists {len(reader.index)} records and the file "
                            f"holds {size} bytes")
    inside = sum(1 for key in reader.index if key < end)
    if inside != end or len(reader.index) != end:
        stray = min((k for k in reader.index if k >= end), default=None)
        detail = f"key {stray} lies beyond" if stray is not None else f"only {inside} of the keys are in"
        raise RecordIOError(f"{rec}: record 0 announces keys 0..{end - 1} (images 1..{first - 1}, identities "
                            f"{first}..{end - 1}) but {idx} has {len(reader.index)} keys and {detail} that range")
    identities = end - first
    if property_classes is not None and identities and property_classes != identities:
        raise RecordIOError(f"{property_path}: {property_classes} classes, but record 0 of {rec} announces "
                            f"{identities} identity records [{first}, {end})")
    if first > 1:
        header, payload = reader.read_header(first - 1)
        if not payload:
            raise RecordIOError(f"{rec}: record {first - 1}, the last image record by record 0's range "
                                f"[{first}, {end}), holds no image (flag {header.flag}); the range disagrees "
                                f"with the records")
    for key in sorted({first, end - 1}) if identities else []:
        header, payload = reader.read_header(key)
        span = np.asarray(header.label, dtype=np.float64) if header.flag >= 2 else None
        valid = span is not None and bool(np.all(np.isfinite(span[:2]))) and (
            span[0] == span[1] or 1 <= span[0] < span[1] <= first)  # an empty class is written as [0, 0)
        if payload or not valid:
            raise RecordIOError(f"{rec}: record {key} should be an identity record [start, end) within images "
                                f"1..{first - 1} (record 0 announces identities [{first}, {end})), found flag "
                                f"{header.flag}, label {header.label}, {len(payload)} payload bytes")
    return FaceRecordLayout(range(1, first), first, end)


def write_face_records(
    out_dir: str | Path, images: Sequence[tuple[bytes, int]] | Iterator[tuple[bytes, int]], num_classes: int,
    size: int = 112,
) -> int:
    """Write train.rec/.idx/property the way insightface lays them out; `images` sorted by label.

    Every file is written under a temporary name and renamed only when all are complete (see StagedOutputs).
    Returns the number of image records written.
    """
    with StagedOutputs(out_dir) as staging:
        return stage_face_records(staging, images, num_classes, size)


def stage_face_records(
    staging: StagedOutputs, images: Sequence[tuple[bytes, int]] | Iterator[tuple[bytes, int]], num_classes: int,
    size: int = 112,
) -> int:
    """write_face_records into a StagedOutputs (so callers can stage more files with the pack)."""
    ranges: dict[int, list[int]] = {}
    body_rec, body_idx = staging.scratch("train.rec.body"), staging.scratch("train.idx.body")
    # Record 0 needs N, known only at the end: write images to a scratch file, then assemble.
    count = 0
    with RecordIOWriter(body_rec, body_idx) as writer:
        for key, (payload, label) in enumerate(images, start=1):
            if not 0 <= label < num_classes:
                raise RecordIOError(f"image {key}: label {label} is outside [0, {num_classes})")
            writer.write(key, pack_record(IRHeader(0, float(label), key, 0), payload))
            span = ranges.setdefault(label, [key, key + 1])
            span[1] = key + 1
            count = key
    first_identity = count + 1
    with RecordIOWriter(staging.path("train.rec"), staging.path("train.idx")) as writer:
        writer.write(0, pack_record(IRHeader(2, np.array([first_identity, first_identity + num_classes]), 0, 0), b""))
        with open(body_rec, "rb") as src:
            for key, offset in sorted(read_index(body_idx).items()):
                payload, _ = read_record_at(src, offset, body_rec)
                writer.write(key, payload)
        for label in range(num_classes):
            start, end = ranges.get(label, [0, 0])
            writer.write(first_identity + label, pack_record(IRHeader(2, np.array([start, end]), 0, 0), b""))
    write_property(staging.path("property"), num_classes, size)
    return count


def resolve_rec_paths(path: str | Path) -> tuple[Path, Path, Path]:
    """(train.rec, train.idx, property) from a directory or a .rec path (labels.json, if any, lies beside)."""
    path = Path(path)
    rec = path / "train.rec" if path.is_dir() else path
    return rec, rec.with_suffix(".idx"), rec.parent / "property"


def pack_class_names(rec: Path, num_classes: int) -> list[str]:
    """The class names of the pack whose train.rec is `rec` (see find_pack_class_names); a label file that
    names a different number of classes is a RecordIOError naming it."""
    names, source = find_pack_class_names(rec.parent, num_classes)
    if source is not None and len(names) != num_classes:
        raise RecordIOError(f"{source}: {len(names)} names for {num_classes} classes of {rec}")
    return names


class RecordIODataset(Dataset):
    """(uint8 112×112×3 RGB image, label) from an insightface-style train.rec (directory or .rec path).

    Opening checks the structure cheaply (index extents, both end records, record 0's ranges against the
    index, the file size and `property`); labels are checked as records are read (`marginface data check`
    reads everything up front). `class_names` come from the labels.json beside train.rec (`data pack`
    writes one); a pack without it (insightface's) names each class by its label.
    """

    def __init__(self, path: str | Path, on_error: OnError = "skip") -> None:
        rec, idx, prop = resolve_rec_paths(path)
        self.reader = RecordIOReader(rec, idx)
        property_classes = read_property(prop) if prop.is_file() else None
        self.layout = read_layout(self.reader, property_classes, prop)
        self.keys = self.layout.image_keys
        if not self.keys:
            raise RecordIOError(f"{rec}: the pack holds no image records")
        self.decoder = SampleDecoder(on_error=on_error)
        self._num_classes = property_classes or self.layout.identities or None
        self._class_names: list[str] | None = None

    @property
    def source(self) -> str:
        """The .rec file, for messages."""
        return str(self.reader.rec_path)

    @property
    def num_classes(self) -> int:
        """Identities: from `property`, else record 0's identity records, else the largest label + 1."""
        if self._num_classes is None:
            self._num_classes = max(self.label_of(k) for k in self.keys) + 1
        return self._num_classes

    @property
    def class_names(self) -> list[str]:
        """Identity name of each label: the pack's labels.json (or an older pack's labels.tsv), else the label."""
        if self._class_names is None:
            self._class_names = pack_class_names(self.reader.rec_path, self.num_classes)
        return self._class_names

    def label_of(self, key: int) -> int:
        """Integer label of record `key`, checked (finite, integral, in range) and named on error."""
        header, _ = self.reader.read_header(key)
        return check_label(header.label, self._num_classes, f"{self.reader.rec_path} record {key}")

    def __len__(self) -> int:
        return len(self.keys)

    def __getitem__(self, index: int) -> Sample | None:
        key = self.keys[index]
        header, payload = self.reader.read_header(key)
        where = f"{self.reader.rec_path} record {key}"
        return self.decoder(payload, check_label(header.label, self.num_classes, where), where)
