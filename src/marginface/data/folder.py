"""Image-folder datasets: one sub-folder per identity, labels by sorted folder name."""

from __future__ import annotations

import json
import logging
from pathlib import Path

from torch.utils.data import Dataset

from marginface.data.samples import OnError, Sample, SampleDecoder

log = logging.getLogger(__name__)
IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".pgm", ".ppm", ".webp", ".tif", ".tiff"})


def scan_identity_folder(root: Path) -> tuple[list[str], list[tuple[Path, int]]]:
    """(sorted identity names, [(image path, label)]) of `root`/<identity>/<image>."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"image folder {root} does not exist")
    names = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not names:
        raise ValueError(f"image folder {root} has no identity sub-folders")
    items: list[tuple[Path, int]] = []
    for label, name in enumerate(names):
        files = sorted(p for p in (root / name).iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file())
        items.extend((path, label) for path in files)
    if not items:
        raise ValueError(f"image folder {root} has identity folders but no images ({sorted(IMAGE_EXTENSIONS)})")
    return names, items


class ImageFolderDataset(Dataset):
    """(uint8 112×112×3 RGB image, label) from an identity folder; undecodable files skip or raise."""

    def __init__(self, root: str | Path, flip: bool = False, on_error: OnError = "skip") -> None:
        self.root = Path(root)
        self.class_names, self.items = scan_identity_folder(self.root)
        self.decoder = SampleDecoder(on_error=on_error, flip=flip)
        log.info("image folder %s: %d images of %d identities", self.root, len(self.items), self.num_classes)

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
            log.warning("skipping unreadable image %s (%s)", path, err)
            return None
        return self.decoder(data, label, str(path))

    def save_label_map(self, path: str | Path) -> None:
        """Write {label: identity name} as JSON (kept beside a training run)."""
        Path(path).write_text(json.dumps(dict(enumerate(self.class_names)), indent=1, ensure_ascii=False))
