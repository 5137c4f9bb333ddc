"""Turn an aligned identity folder into insightface train.rec/.idx/property (what `data pack` runs)."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from marginface.data.folder import scan_identity_folder
from marginface.data.image import FACE_SIZE, ImageDecodeError, decode_image, encode_image, ensure_size
from marginface.data.recordio import write_face_records

log = logging.getLogger(__name__)


@dataclass
class PackReport:
    """Counts of a packing run; `skipped` lists files that did not decode."""

    images: int = 0
    classes: int = 0
    resized: int = 0
    skipped: list[str] = field(default_factory=list)


def pack_folder(folder: str | Path, out_dir: str | Path, progress: Callable[[int, int], None] | None = None,
                ) -> PackReport:
    """Write `folder`/<identity>/<image> as RecordIO in `out_dir`; undecodable files are skipped and listed,
    images that are not 112×112 are resized and re-encoded (JPEG), others are stored byte for byte."""
    names, items = scan_identity_folder(Path(folder))
    report = PackReport(classes=len(names))

    def payloads() -> Iterator[tuple[bytes, int]]:
        for done, (path, label) in enumerate(items, start=1):
            data = path.read_bytes()
            try:
                image = decode_image(data, str(path))
            except ImageDecodeError as err:
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

    write_face_records(out_dir, payloads(), len(names))
    (Path(out_dir) / "labels.tsv").write_text("".join(f"{i}\t{n}\n" for i, n in enumerate(names)))
    return report
