"""Full scan of a data set before a long run (`marginface data check`): a RecordIO pack, a verification .bin
or an identity folder. Every record header and framing, every image decode, every label against the class
range and its identity record; counts per identity. Problems are collected (the first `keep` in full, all
counted), never raised, so one run lists everything that is wrong.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from marginface.data.folder import survey_identity_folder
from marginface.data.image import ImageDecodeError, decode_image
from marginface.data.pairs import PairSetError, read_bin
from marginface.data.recordio import (
    FaceRecordLayout,
    RecordIOError,
    RecordIOReader,
    check_label,
    pack_class_names,
    read_layout,
    read_property,
    read_record_at,
    resolve_rec_paths,
    unpack_record,
)
from marginface.errors import InputError

Progress = Callable[[int, int], None]


@dataclass
class CheckReport:
    """What a scan found: counts, images per identity, and the problems (first `keep` kept, all counted)."""

    path: Path
    kind: str  # "recordio" | "bin" | "folder"
    images: int = 0
    decoded: int = 0
    per_identity: Counter = field(default_factory=Counter)
    identities: int = 0  # classes the data set declares (property, identity records, folders)
    problems: list[str] = field(default_factory=list)
    problem_count: int = 0
    notes: list[str] = field(default_factory=list)
    keep: int = 50

    @property
    def ok(self) -> bool:
        """True when the scan found no problem."""
        return self.problem_count == 0

    def problem(self, message: str) -> None:
        """Record one problem (its text is kept while fewer than `keep` are)."""
        self.problem_count += 1
        if len(self.problems) < self.keep:
            self.problems.append(message)


def check_data(path: str | Path, progress: Progress | None = None, keep: int = 50) -> CheckReport:
    """Scan a pack directory / .rec file, a .bin file or an identity folder, whichever `path` is."""
    path = Path(path)
    if path.is_file() and path.suffix == ".bin":
        return check_bin(path, progress, keep)
    if path.is_file() and path.suffix in (".rec", ".idx"):
        return check_pack(path.with_suffix(".rec"), progress, keep)
    if path.is_dir() and (path / "train.rec").is_file():
        return check_pack(path, progress, keep)
    if path.is_dir():
        return check_folder(path, progress, keep)
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist")
    raise InputError(f"{path}: expected a pack directory, a .rec or .bin file, or an identity folder")


def _decodes(data: bytes, where: str, report: CheckReport) -> bool:
    try:
        decode_image(data, where)
    except ImageDecodeError as err:
        report.problem(str(err))
        return False
    report.decoded += 1
    return True


def check_pack(path: str | Path, progress: Progress | None = None, keep: int = 50) -> CheckReport:
    """Every record of a RecordIO pack: framing and gaps, headers, image decodes, labels in range and inside
    their identity's [start, end) record, identities without images, bytes the index does not cover."""
    rec, idx, prop = resolve_rec_paths(path)
    report = CheckReport(rec, "recordio", keep=keep)
    try:
        reader = RecordIOReader(rec, idx)
    except (RecordIOError, OSError) as err:
        report.problem(str(err))
        return report
    classes = None
    if prop.is_file():
        try:
            classes = read_property(prop)
        except (RecordIOError, OSError) as err:
            report.problem(str(err))
    else:
        report.notes.append(f"{prop} is missing (classes are taken from the identity records or labels)")
    try:
        layout = read_layout(reader, classes, prop)
    except RecordIOError as err:
        report.problem(str(err))
        layout = FaceRecordLayout(reader.keys)  # still scan every record, without the identity ranges
    classes = classes or layout.identities or None
    report.identities = classes or 0
    ranges: dict[int, tuple[float, float]] = {}
    for klass in range(layout.identities):  # identity records first, so each image is checked as it is read
        try:
            header, _ = reader.read_header(layout.first_identity + klass)
            ranges[klass] = tuple(np.asarray(header.label, np.float64).reshape(-1)[:2].tolist())
        except RecordIOError as err:
            report.problem(str(err))
    order = sorted(reader.index.items(), key=lambda item: item[1])
    size = rec.stat().st_size
    with open(rec, "rb") as handle:
        expected = 0
        for done, (key, offset) in enumerate(order, start=1):
            if progress is not None:
                progress(done, len(order))
            if offset != expected:
                what = "are not indexed" if offset > expected else "overlap the previous record"
                report.problem(f"{rec}: bytes {expected}..{offset} before record {key} {what}")
            where = f"{rec} record {key} (offset {offset})"
            try:
                payload, expected = read_record_at(handle, offset, rec)
                header, image = unpack_record(payload, where)
            except RecordIOError as err:
                report.problem(str(err))
                expected = offset + 8
                continue
            if layout.first_identity and (key == 0 or key >= layout.first_identity):
                continue  # record 0 and identity records: checked by read_layout and above
            if header.flag >= 2 and not image:
                continue  # a range record outside a valid layout (the layout problem is already listed)
            report.images += 1
            _decodes(image, where, report)
            try:
                klass = check_label(header.label, classes, where)
            except RecordIOError as err:
                report.problem(str(err))
                continue
            report.per_identity[klass] += 1
            span = ranges.get(klass)
            if span is not None and len(span) == 2 and not span[0] <= key < span[1]:
                report.problem(f"{where}: label {klass}, but identity record {layout.first_identity + klass} "
                               f"gives that identity records [{span[0]:g}, {span[1]:g})")
        if order and expected < size:
            report.problem(f"{rec}: bytes {expected}..{size} after the last indexed record are not indexed")
    _check_label_map(rec, classes or max(report.per_identity, default=-1) + 1, report)
    if classes:
        empty = [c for c in range(classes) if not report.per_identity[c]]
        if empty:
            report.problem(f"{rec}: {len(empty)} of {classes} identities have no image, e.g. label {empty[0]}")
    return report


def _check_label_map(rec: Path, classes: int, report: CheckReport) -> None:
    """The pack's label file (if any) must read and name exactly `classes` identities, as training requires."""
    try:
        pack_class_names(rec, classes)
    except (ValueError, OSError) as err:  # RecordIOError is a ValueError
        report.problem(str(err))


def check_bin(path: str | Path, progress: Progress | None = None, keep: int = 50) -> CheckReport:
    """A verification .bin: loads safely, image count = 2 × flags, every image decodes."""
    path = Path(path)
    report = CheckReport(path, "bin", keep=keep)
    try:
        pair_set = read_bin(path)
    except PairSetError as err:
        report.problem(str(err))
        return report
    report.images = len(pair_set.images)
    same = int(pair_set.issame.sum())
    report.notes.append(f"{len(pair_set)} pairs: {same} same, {len(pair_set) - same} different")
    for index, data in enumerate(pair_set.images):
        _decodes(data, f"{path} image {index} (pair {index // 2})", report)  # type: ignore[arg-type]
        if progress is not None:
            progress(index + 1, report.images)
    return report


def check_folder(path: str | Path, progress: Progress | None = None, keep: int = 50) -> CheckReport:
    """An identity folder: names with control characters (refused by `data pack`), photos under two
    identities, identities without images, unreadable or undecodable files."""
    path = Path(path)
    report = CheckReport(path, "folder", keep=keep)
    try:
        scan = survey_identity_folder(path)
    except ValueError as err:
        report.problem(str(err))
        return report
    report.identities = len(scan.names)
    for name in scan.unsafe_names:
        report.problem(f"{str(path / name)!r}: identity name contains a TAB, newline or control character")
    for duplicate, kept in scan.duplicates:
        report.problem(f"{duplicate}: the same file as {kept} (resolved {os.path.realpath(kept)}), under two "
                       f"identities")
    for name in scan.empty:
        report.problem(f"{path / name}: identity folder without images of its own")
    report.images = len(scan.items)
    for done, (image, label) in enumerate(scan.items, start=1):
        try:
            data = image.read_bytes()
        except OSError as err:
            report.problem(f"{image}: unreadable ({err.strerror or err})")
            continue
        if _decodes(data, str(image), report):
            report.per_identity[label] += 1
        if progress is not None:
            progress(done, report.images)
    return report
