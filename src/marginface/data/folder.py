"""Image-folder datasets: one sub-folder per identity, labels by sorted folder name.

The scan follows a symlinked identity folder once (never recursing, so links cannot loop), keeps each photo
under one identity only — where the file really lives, else the first link in sorted order (duplicates by
resolved path are reported, never packed twice) — and drops identity folders left without images, so no
class is empty.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

from torch.utils.data import Dataset

from marginface.data.samples import OnError, Sample, SampleDecoder
from marginface.errors import InputError
from marginface.listing import first_of

log = logging.getLogger(__name__)
IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".pgm", ".ppm", ".webp", ".tif", ".tiff"})


def is_image_file(path: Path) -> bool:
    """A regular file with an image extension (IMAGE_EXTENSIONS, any case): what every lister here counts."""
    return path.suffix.lower() in IMAGE_EXTENSIONS and path.is_file()


def list_images(folder: str | Path, *, recursive: bool = False) -> list[Path]:
    """The image files in `folder` (and its sub-folders when `recursive`), sorted: the one image lister, used by
    training folders, alignment, enrolment and recognition alike."""
    folder = Path(folder)
    return sorted(p for p in (folder.rglob("*") if recursive else folder.iterdir()) if is_image_file(p))


@dataclass
class IdentityFolderScan:
    """What an identity folder holds: kept identities and (image, label) items, and what was left out."""

    root: Path
    names: list[str] = field(default_factory=list)
    items: list[tuple[Path, int]] = field(default_factory=list)
    empty: list[str] = field(default_factory=list)  # identity folders without (new) images, dropped
    duplicates: list[tuple[Path, Path]] = field(default_factory=list)  # (left out, the same file kept)
    unsafe_names: list[str] = field(default_factory=list)  # names with TAB, newline or other control chars


def is_safe_name(name: str) -> bool:
    """An identity name that fits on one line: printable, no TAB / newline / control characters."""
    return name.isprintable()


def survey_identity_folder(root: str | Path) -> IdentityFolderScan:
    """Scan `root`/<identity>/<image> (see the module docstring); raises when there is nothing to use."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"image folder {root} does not exist")
    scan = IdentityFolderScan(root)
    candidates = sorted(p.name for p in root.iterdir() if not p.name.startswith(".") and p.is_dir())
    if not candidates:
        raise InputError(f"image folder {root} has no identity sub-folders")
    listed: list[tuple[str, list[Path]]] = []
    owner: dict[str, tuple[bool, int, Path]] = {}  # resolved file -> (reached through a link, order, path)
    for name in candidates:
        if not is_safe_name(name):
            scan.unsafe_names.append(name)
        try:
            files = list_images(root / name)
        except OSError as err:
            log.warning("cannot list identity folder %s: %s", root / name, err)
            files = []
        linked_folder = (root / name).is_symlink()
        for path in files:  # a photo belongs where it really lives; among links, to the first in sorted order
            claim = (linked_folder or path.is_symlink(), len(owner), path)
            resolved = os.path.realpath(path)
            if resolved not in owner or claim[:1] < owner[resolved][:1]:
                owner[resolved] = claim
        listed.append((name, files))
    for name, files in listed:
        kept = []
        for path in files:
            first = owner[os.path.realpath(path)][2]
            if first == path:
                kept.append(path)
            else:
                scan.duplicates.append((path, first))
        if not kept:
            scan.empty.append(name)
            continue
        scan.items.extend((path, len(scan.names)) for path in kept)
        scan.names.append(name)
    if not scan.items:
        raise InputError(f"image folder {root} has identity folders but no images ({sorted(IMAGE_EXTENSIONS)})")
    return scan


def warn_left_out(scan: IdentityFolderScan) -> None:
    """Log what the scan left out: duplicate photos (one line with a count) and dropped empty identities."""
    if scan.duplicates:
        path, kept = scan.duplicates[0]
        log.warning("%s: %d photos appear under more than one identity (same file after resolving links) and "
                    "are kept once, e.g. %s is %s", scan.root, len(scan.duplicates), path, kept)
    if scan.empty:
        log.warning("%s: %d identity folders have no images of their own and are left out: %s", scan.root,
                    len(scan.empty), first_of([repr(n) for n in scan.empty], 5, ", "))


def scan_identity_folder(root: Path) -> tuple[list[str], list[tuple[Path, int]]]:
    """(sorted identity names, [(image path, label)]) of `root`/<identity>/<image>, warning about what was
    left out."""
    scan = survey_identity_folder(root)
    warn_left_out(scan)
    return scan.names, scan.items


class ImageFolderDataset(Dataset):
    """(uint8 112×112×3 RGB image, label) from an identity folder; undecodable files skip or raise."""

    def __init__(self, root: str | Path, on_error: OnError = "skip") -> None:
        self.root = Path(root)
        self.class_names, self.items = scan_identity_folder(self.root)
        self.decoder = SampleDecoder(on_error=on_error)
        log.info("image folder %s: %d images of %d identities", self.root, len(self.items), self.num_classes)

    @property
    def source(self) -> str:
        """The folder, for messages."""
        return str(self.root)

    @property
    def num_classes(self) -> int:
        """Number of identities."""
        return len(self.class_names)

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> Sample | None:
        path, label = self.items[index]
        try:
            data = path.read_bytes()
        except OSError as err:
            if self.decoder.on_error == "raise":
                raise
            self.decoder.warn_skip(str(path), f"unreadable: {err.strerror or err}")
            return None
        return self.decoder(data, label, str(path))
