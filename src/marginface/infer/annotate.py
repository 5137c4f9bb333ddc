"""Annotated copies of photos: a box and "name score" drawn for every face a decision was made on (green known,
red unknown), written beside the others under a name that never overwrites one."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import cv2

from marginface.data.image import encode_image
from marginface.infer.gallery import Identified
from marginface.infer.images import load_image

KNOWN_COLOUR, UNKNOWN_COLOUR = (0, 200, 0), (230, 0, 0)  # RGB


def draw_decisions(rgb, decisions: Sequence[Identified]):
    """A copy of the RGB image with each decision's box and label drawn on it."""
    rgb = rgb.copy()
    thickness = max(1, round(max(rgb.shape[:2]) / 400))
    for decision in decisions:
        x, y, w, h = (round(v) for v in decision.face.box)
        colour = KNOWN_COLOUR if decision.name is not None else UNKNOWN_COLOUR
        cv2.rectangle(rgb, (x, y), (x + w, y + h), colour, thickness)
        label = f"{decision.name or 'unknown'} {decision.score:.2f}"
        cv2.putText(rgb, label, (x, max(12, y - 4)), cv2.FONT_HERSHEY_SIMPLEX, 0.4 * thickness, colour, thickness)
    return rgb


def annotate_photo(path: str | Path, decisions: Sequence[Identified], out_dir: str | Path) -> Path:
    """Write `path` with its decisions drawn into `out_dir` as STEM.jpg (STEM_1.jpg, ... when taken); returns
    the file written. OSError naming that file when it cannot be written."""
    path, out_dir = Path(path), Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    rgb = draw_decisions(load_image(path), decisions)
    target = out_dir / (path.stem + ".jpg")
    counter = 1
    while target.exists():
        target = out_dir / f"{path.stem}_{counter}.jpg"
        counter += 1
    try:
        target.write_bytes(encode_image(rgb, ".jpg"))
    except OSError as err:
        raise OSError(f"{target}: cannot write the annotated copy ({err.strerror or err})") from err
    return target
