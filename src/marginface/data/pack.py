"""Turn an aligned identity folder into insightface train.rec/.idx/property (what `data pack` runs)."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from marginface.data.folder import survey_identity_folder, warn_left_out
from marginface.data.image import FACE_SIZE, ImageDecodeError, decode_image, encode_image, ensure_size
from marginface.data.labels import LABELS_NAME, write_class_names
from marginface.data.recordio import stage_face_records
from marginface.data.staging import StagedOutputs
from marginface.errors import InputError

log = logging.getLogger(__name__)


@dataclass
class PackReport:
    """Counts of a packing run; `skipped` lists files that could not be read or decoded."""

    images: int = 0
    classes: int = 0
    resized: int = 0
    skipped: list[str] = field(default_factory=list)


def pack_folder(folder: str | Path, out_dir: str | Path, progress: Callable[[int, int], None] | None = None,
                ) -> PackReport:
    """Write `folder`/<identity>/<image> as RecordIO in `out_dir`; unreadable or undecodable files are skipped
    and listed, images that are not 112×112 are resized and re-encoded (JPEG), others are stored as they are.

    Identity names with control characters (TAB, newline, ...) are refused before any work: a gallery cannot
    enrol them and reports cannot show them on one line. The class names go to labels.json. The output directory
    must be writable; every output is written under a temporary name and renamed at the end, so an existing
    pack stays intact until the new one is complete and a failure leaves no partial file behind.
    """
    scan = survey_identity_folder(Path(folder))
    if scan.unsafe_names:
        raise InputError(f"{folder}: {len(scan.unsafe_names)} identity folder names contain a TAB, newline or "
                         f"other control character (a gallery cannot enrol such a name and reports cannot show it on "
                         f"one line), e.g. {scan.unsafe_names[0]!r}; "
                         f"rename them")
    warn_left_out(scan)
    names, items = scan.names, scan.items
    report = PackReport(classes=len(names))

    def payloads() -> Iterator[tuple[bytes, int]]:
        for done, (path, label) in enumerate(items, start=1):
            try:
                data = path.read_bytes()
                image = decode_image(data, str(path))
            except (ImageDecodeError, OSError) as err:
                log.warning("skipping %s", err)
                report.skipped.append(str(path))
                continue
            image, resized = ensure_size(image, FACE_SIZE)
            if resized or path.suffix.lower() not in (".jpg", ".jpeg", ".png"):
                report.resized += int(resized)
                data = encode_image(image, ".jpg")
            report.images += 1
            if progress is not None:
                progress(done, len(items))
            yield data, label

    with StagedOutputs(out_dir) as staging:
        stage_face_records(staging, payloads(), len(names))
        write_class_names(staging.path(LABELS_NAME), names)
    return report
