"""Detect, choose the main face, align to 112×112 and write: a raw photo folder becomes training data."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from marginface.data.align import align_face
from marginface.data.folder import list_images
from marginface.data.image import FACE_SIZE, ImageDecodeError, decode_image, encode_image
from marginface.data.staging import StagedOutputs
from marginface.infer.detect import YuNetDetector, pick_main_face

log = logging.getLogger(__name__)


class FacePreprocessor:
    """Photo → aligned face at the model's input size: faces already at that size pass through, standard
    112×112 aligned crops are rescaled to it (the template scales with the crop), others are detected and
    aligned to the template scaled to the size, or, when no face is found (or no detector is given),
    centre-cropped and resized, counted and named in `no_face`."""

    def __init__(self, detector: YuNetDetector | None = None, size: int = FACE_SIZE,
                 crop_fraction: float = 0.5) -> None:
        self.detector = detector
        self.size = size
        self.crop_fraction = crop_fraction
        self.aligned = 0
        self.rescaled = 0
        self.fallbacks = 0
        self.no_face: list[str] = []

    def __call__(self, rgb: np.ndarray, name: str | None = None) -> np.ndarray:
        """An aligned size × size RGB face; `name` is what `no_face` lists when no face is found."""
        if rgb.shape[0] == self.size and rgb.shape[1] == self.size:
            return rgb
        if rgb.shape[0] == FACE_SIZE and rgb.shape[1] == FACE_SIZE:  # an aligned crop for another input size
            self.rescaled += 1
            interpolation = cv2.INTER_AREA if self.size < FACE_SIZE else cv2.INTER_LINEAR
            return cv2.resize(rgb, (self.size, self.size), interpolation=interpolation)
        face = pick_main_face(self.detector.detect(rgb), rgb.shape) if self.detector is not None else None
        if face is not None:
            self.aligned += 1
            return align_face(rgb, face.landmarks, self.size)
        self.fallbacks += 1
        self.no_face.append(name if name is not None else f"image {self.aligned + self.fallbacks}")
        height, width = rgb.shape[:2]
        side = int(min(height, width) * self.crop_fraction)
        top, left = (height - side) // 2, (width - side) // 2
        return cv2.resize(rgb[top:top + side, left:left + side], (self.size, self.size), interpolation=cv2.INTER_AREA)


@dataclass
class AlignReport:
    """What an alignment run did: counts and the images that gave no face or did not decode."""

    total: int = 0
    aligned: int = 0
    no_face: list[str] = field(default_factory=list)
    unreadable: list[str] = field(default_factory=list)


def align_folder(
    raw_root: str | Path, out_root: str | Path, detector: YuNetDetector, size: int = 112,
    progress: Callable[[int, int], None] | None = None,
) -> AlignReport:
    """Align every image under raw_root/<identity>/ into out_root/<identity>/ as JPEG (quality 95).

    Writes out_root/no_face.txt listing images without a detected face (and unreadable ones). out_root is
    checked for writing before any work; every output is written under a temporary name and renamed at the
    end, and a failure (a full disk, an interrupted run) removes the temporaries and replaces nothing.
    """
    raw_root, out_root = Path(raw_root), Path(out_root)
    if not raw_root.is_dir():
        raise FileNotFoundError(f"raw image folder {raw_root} does not exist")
    files = list_images(raw_root, recursive=True)
    report = AlignReport(total=len(files))
    with StagedOutputs(out_root) as staging:
        for done, path in enumerate(files, start=1):
            relative = path.relative_to(raw_root)
            try:
                rgb = decode_image(path.read_bytes(), str(path))
            except (ImageDecodeError, OSError) as err:
                log.warning("cannot read %s: %s", path, err)
                report.unreadable.append(str(relative))
                continue
            face = pick_main_face(detector.detect(rgb), rgb.shape)
            if face is None:
                report.no_face.append(str(relative))
            else:
                crop = align_face(rgb, face.landmarks, size)
                staging.path(relative.with_suffix(".jpg")).write_bytes(encode_image(crop, ".jpg", quality=95))
                report.aligned += 1
            if progress is not None:
                progress(done, len(files))
        lines = [f"no_face\t{p}" for p in report.no_face] + [f"unreadable\t{p}" for p in report.unreadable]
        staging.path("no_face.txt").write_text("\n".join(lines) + ("\n" if lines else ""))
    return report
