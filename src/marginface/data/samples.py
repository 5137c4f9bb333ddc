"""Turning stored bytes into training samples, and batching samples that may have been skipped.

Undecodable items become None (or raise, by flag) and are counted at collate time, as are resized ones,
so the training loop can report both however many DataLoader workers did the decoding.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, replace
from typing import Literal

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from marginface.data.image import FACE_SIZE, ImageDecodeError, decode_image, ensure_size
from marginface.errors import InputError

log = logging.getLogger(__name__)
OnError = Literal["skip", "raise"]
WARN_FIRST = 5  # undecodable images warned about one by one (per process and epoch); the rest are counted


class NoUsableSamples(InputError):
    """A dataset yielded no decodable image for a whole epoch or many batches in a row; names it and counts."""


@dataclass
class Sample:
    """One decoded training sample: RGB uint8 (size, size, 3) image and its integer label."""

    image: np.ndarray
    label: int
    resized: bool = False
    substituted: bool = False  # stands in for an undecodable sample (see SubstituteBadSamples)


@dataclass
class Batch:
    """A collated batch: uint8 (B, H, W, 3) images, (B,) labels, and counts of skipped / resized samples."""

    images: Tensor
    labels: Tensor
    skipped: int = 0
    resized: int = 0


class SampleDecoder:
    """Decode and resize to the face size (warning once); bad images skip or raise. Augmentation (the
    horizontal flip) is the trainer's, per batch, not the data's."""

    def __init__(self, on_error: OnError = "skip", size: int = FACE_SIZE) -> None:
        if on_error not in ("skip", "raise"):
            raise ValueError(f"on_error must be 'skip' or 'raise', got {on_error!r}")
        self.on_error = on_error
        self.size = size
        self._warned_size = False
        self._skip_warnings = 0

    def warn_skip(self, source: str, reason: str) -> None:
        """Warn about a skipped item: the first WARN_FIRST one by one, then silence (batches count them)."""
        self._skip_warnings += 1
        if self._skip_warnings < WARN_FIRST:
            log.warning("skipping %s (%s)", source, reason)
        elif self._skip_warnings == WARN_FIRST:
            log.warning("skipping %s (%s); further skipped images are only counted", source, reason)

    def __call__(self, data: bytes, label: int, source: str) -> Sample | None:
        """The sample, or None when `data` does not decode and on_error is 'skip'."""
        try:
            image = decode_image(data, source)
        except ImageDecodeError as err:
            if self.on_error == "raise":
                raise
            self.warn_skip(source, str(err).removeprefix(f"{source}: "))
            return None
        image, resized = ensure_size(image, self.size)
        if resized and not self._warned_size:
            log.warning("%s is not %dx%d; resizing (further resizes are only counted)", source, self.size, self.size)
            self._warned_size = True
        return Sample(image, int(label), resized)


class SubstituteBadSamples(Dataset):
    """Wraps a dataset whose bad samples come back as None: each is replaced by the next decodable sample
    (marked `substituted`, counted as skipped by collate), so every batch keeps its size — what
    distributed training needs, where all processes must contribute equal batches."""

    def __init__(self, dataset: Dataset, max_tries: int = 16) -> None:
        self.dataset = dataset
        self.max_tries = max_tries

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getattr__(self, name: str):
        if "dataset" not in self.__dict__:  # during unpickling
            raise AttributeError(name)
        return getattr(self.__dict__["dataset"], name)

    def __getitem__(self, index: int) -> Sample:
        for offset in range(self.max_tries):
            sample = self.dataset[(index + offset) % len(self)]
            if sample is not None:
                return replace(sample, substituted=True) if offset else sample
        raise ImageDecodeError(f"{dataset_name(self.dataset)}: {self.max_tries} consecutive undecodable samples "
                               f"starting at index {index}; check it with `marginface data check`")


def collate(items: list[Sample | None]) -> Batch:
    """Stack samples into a Batch, dropping the None of skipped ones; skipped counts those and substitutes."""
    kept = [item for item in items if item is not None]
    skipped = len(items) - len(kept) + sum(item.substituted for item in kept)
    if not kept:
        empty = torch.empty(0, FACE_SIZE, FACE_SIZE, 3, dtype=torch.uint8)
        return Batch(empty, torch.empty(0, dtype=torch.long), skipped)
    images = torch.from_numpy(np.stack([item.image for item in kept]))
    labels = torch.tensor([item.label for item in kept], dtype=torch.long)
    return Batch(images, labels, skipped, sum(item.resized for item in kept))


def dataset_name(dataset: object) -> str:
    """What to call a dataset in messages: its `source` (file or folder) when it has one, else its type."""
    return str(getattr(dataset, "source", type(dataset).__name__))


def unwrap_worker_error(err: Exception) -> Exception:
    """The error a DataLoader worker raised, with its own one-line message again: torch re-raises it in the
    main process as the same type whose message is "Caught X in DataLoader worker ..." plus the worker's
    traceback (kept in the debug log, shown with -v). Returns `err` itself when it is not such an error."""
    text = str(err)
    if not text.startswith("Caught ") or "\nOriginal Traceback" not in text:
        return err
    log.debug("%s", text)
    last = text.rstrip().splitlines()[-1]
    message = last.split(": ", 1)[1] if ": " in last else last
    try:
        return type(err)(message)
    except Exception:  # noqa: BLE001 - an exception type that cannot be rebuilt from a message stays as it is
        return err


def require_samples(batches: Iterable[Batch], dataset: object, max_empty_in_row: int = 20) -> Iterator[Batch]:
    """Pass batches through, stopping with NoUsableSamples once `max_empty_in_row` batches in a row, or a
    whole pass, brought no decodable image — instead of skipping empty batches forever. Logs one count of
    the images skipped in the pass; a data error raised in a DataLoader worker comes out with its own message."""
    seen = skipped = empty_in_row = 0
    iterator = iter(batches)
    while True:
        try:
            batch = next(iterator)
        except StopIteration:
            break
        except Exception as err:
            unwrapped = unwrap_worker_error(err)
            if unwrapped is err:
                raise
            raise unwrapped from err
        kept = len(batch.labels)
        seen += kept + batch.skipped
        skipped += batch.skipped
        empty_in_row = 0 if kept else empty_in_row + 1
        if empty_in_row >= max_empty_in_row:
            raise NoUsableSamples(f"{dataset_name(dataset)}: no decodable image in {empty_in_row} batches in a "
                                  f"row ({skipped} of {seen} images read so far were undecodable); check it with "
                                  f"`marginface data check`")
        yield batch
    if seen and seen == skipped:
        raise NoUsableSamples(f"{dataset_name(dataset)}: a whole epoch brought no decodable image (all {seen} "
                              f"images were undecodable); check it with `marginface data check`")
    if skipped:
        log.warning("%s: %d of %d images in this epoch were undecodable and skipped",
                    dataset_name(dataset), skipped, seen)
