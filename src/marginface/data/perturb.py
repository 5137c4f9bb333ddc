"""Image perturbations for out-of-distribution evaluation: `KIND:LEVEL` specs, applied deterministically.

Kinds (LEVEL in brackets; every level is given in pixels of the 112×112 aligned face):

- ``blur:SIGMA``      Gaussian blur, standard deviation SIGMA pixels (kernel ≈ 6·SIGMA + 1); 0 is the identity.
- ``downscale:PX``    shrink by PX/112 (a 112 face becomes PX × PX) with area averaging, then back up to the
                      original size bilinearly: the detail of a PX-pixel face. PX ≥ 112 is the identity.
- ``jpeg:QUALITY``    encode as JPEG at QUALITY (1–100) and decode again.
- ``occlude:FRACTION`` a black rectangle with the image's aspect ratio covering FRACTION of its area, at a
                      position drawn from the per-image seed.
- ``gamma:G``         out = 255 · (in / 255)^G: G > 1 darkens, G < 1 brightens; 1 is the identity.
- ``gray``            luminance (ITU-R BT.601) copied to all three channels.
- ``motion:LENGTH``   linear motion blur: the average along a LENGTH-pixel line at an angle drawn from the
                      per-image seed (camera or subject movement; not among the training augmentations).
- ``pixelate:PX``     shrink to PX × PX with nearest-neighbour sampling and enlarge back with nearest
                      neighbour: blocky, aliased low resolution (unlike ``downscale``'s smooth averaging).

`RandomDegradation` draws these per sample for training-time augmentation (`data.augment` in the training
config): with a probability, one to `max_kinds` kinds, each at a level drawn from a configured range, from
a numpy generator the trainer seeds per (seed, epoch, batch, rank), so a resumed run sees the same images.

On a photo (before detection) the same definitions apply with the photo's pixels, except that `downscale`
scales the photo by the same PX/112 factor and leaves it small (``restore_size=False``): a low-resolution
photo, on which the detector then has to find a face of about PX pixels (LFW's 250 × 250 photos hold faces
of roughly 100–120 pixels). A photo that ends up exactly as large as the model input is taken as already
aligned by FacePreprocessor, so avoid such levels (e.g. downscale:50 on 250-pixel photos for a 112 model).
Randomness (only `occlude` uses it) comes from a seed per image derived from the image itself (its file
name or bytes), so a perturbed image is the same whichever subset, order or batch it is evaluated in.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import cv2
import numpy as np

from marginface.data.image import decode_image, encode_image
from marginface.errors import UsageError
from marginface.seeding import item_seed

REFERENCE_SIZE = 112
MAX_BLUR_SIGMA = 112.0  # a blur wider than the face itself leaves nothing; larger sigmas only cost time
KINDS = ("blur", "downscale", "jpeg", "occlude", "gamma", "gray", "motion", "pixelate")
_USAGE = "blur:SIGMA, downscale:PX, jpeg:QUALITY, occlude:FRACTION, gamma:G, gray, motion:LENGTH or pixelate:PX"


class PerturbationSpecError(UsageError):
    """A `KIND:LEVEL` spec that cannot be parsed; the message names the spec and what was expected."""


@dataclass(frozen=True)
class Perturbation:
    """One perturbation: a kind and its level (None for `gray`)."""

    kind: str
    level: float | None = None

    @property
    def spec(self) -> str:
        """The canonical `KIND:LEVEL` text (round-trips through parse_perturbation)."""
        if self.level is None:
            return self.kind
        level = int(self.level) if float(self.level).is_integer() else self.level
        return f"{self.kind}:{level}"

    def apply(self, rgb: np.ndarray, seed: int = 0, restore_size: bool = True) -> np.ndarray:
        """The perturbed copy of an RGB uint8 (H, W, 3) image; `seed` fixes the random parts; without
        `restore_size` a downscaled image stays small."""
        if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
            raise ValueError(f"{self.spec}: expected an RGB uint8 (H, W, 3) image, got {rgb.dtype} {rgb.shape}")
        if self.kind == "downscale":
            return _downscale(rgb, self.level, restore_size)
        return _APPLY[self.kind](rgb, self.level, seed)


def _number(spec: str, text: str, name: str, integer: bool = False) -> float:
    try:
        value = int(text) if integer else float(text)
    except ValueError:
        kind = "an integer" if integer else "a number"
        raise PerturbationSpecError(f"bad perturbation '{spec}': {name} must be {kind}, found '{text}'") from None
    if not math.isfinite(value):
        raise PerturbationSpecError(f"bad perturbation '{spec}': {name} must be finite, found '{text}'")
    return float(value)


def parse_perturbation(spec: str) -> Perturbation:
    """Parse `KIND:LEVEL` (e.g. blur:2, downscale:28, jpeg:10, occlude:0.25, gamma:2, gray)."""
    kind, sep, text = spec.strip().partition(":")
    kind = kind.lower()
    if kind not in KINDS:
        raise PerturbationSpecError(f"bad perturbation '{spec}': unknown kind '{kind}', expected {_USAGE}")
    if kind == "gray":
        if sep:
            raise PerturbationSpecError(f"bad perturbation '{spec}': gray takes no level, write 'gray'")
        return Perturbation("gray")
    if not sep or not text:
        raise PerturbationSpecError(f"bad perturbation '{spec}': {kind} needs a level, e.g. {_EXAMPLES[kind]}")
    name, integer, in_range, expected = _LEVELS[kind]
    level = _number(spec, text, name, integer=integer)
    if not in_range(level):
        raise PerturbationSpecError(f"bad perturbation '{spec}': expected {expected}, found {text}")
    return Perturbation(kind, level)


class _Level(NamedTuple):
    """What a kind's LEVEL is: its name in messages, integer or not, the allowed range and its wording."""

    name: str
    integer: bool
    in_range: Callable[[float], bool]
    expected: str


_LEVELS = {
    "blur": _Level("SIGMA", False, lambda v: 0 <= v <= MAX_BLUR_SIGMA, f"0 <= SIGMA <= {MAX_BLUR_SIGMA:g}"),
    "downscale": _Level("PX", True, lambda v: v >= 1, "PX >= 1"),
    "jpeg": _Level("QUALITY", True, lambda v: 1 <= v <= 100, "1 <= QUALITY <= 100"),
    "occlude": _Level("FRACTION", False, lambda v: 0 <= v <= 1, "0 <= FRACTION <= 1"),
    "motion": _Level("LENGTH", False, lambda v: 0 <= v <= MAX_BLUR_SIGMA, f"0 <= LENGTH <= {MAX_BLUR_SIGMA:g}"),
    "pixelate": _Level("PX", True, lambda v: v >= 1, "PX >= 1"),
    "gamma": _Level("G", False, lambda v: v > 0, "G > 0"),
}


_EXAMPLES = {"blur": "blur:2", "downscale": "downscale:28", "jpeg": "jpeg:10", "occlude": "occlude:0.25",
             "gamma": "gamma:2", "motion": "motion:9", "pixelate": "pixelate:20"}


def parse_perturbations(specs: list[str] | tuple[str, ...]) -> tuple[Perturbation, ...]:
    """Parse several specs; they are applied in the given order."""
    return tuple(parse_perturbation(s) for s in specs)


def apply_perturbations(rgb: np.ndarray, perturbations: tuple[Perturbation, ...], seed: int = 0,
                        restore_size: bool = True) -> np.ndarray:
    """Apply each perturbation in order; the i-th gets its own seed derived from `seed` and i."""
    for i, perturbation in enumerate(perturbations):
        rgb = perturbation.apply(rgb, item_seed(seed, i), restore_size)
    return rgb


DEFINITIONS = {
    "blur": "Gaussian blur, sigma = LEVEL pixels (cv2.GaussianBlur, kernel from sigma, reflected border)",
    "downscale": "resize by LEVEL/112 with area averaging, then back to the original size bilinearly "
                 "(before detection: left small, a low-resolution photo)",
    "jpeg": "JPEG encode at quality LEVEL (OpenCV) and decode",
    "occlude": "black rectangle of the image's aspect ratio covering LEVEL of its area, position seeded per image",
    "gamma": "255 * (x / 255) ** LEVEL per channel",
    "gray": "BT.601 luminance copied to the three channels",
    "motion": "mean along a LEVEL-pixel line (cv2.filter2D), angle seeded per image",
    "pixelate": "nearest-neighbour resize to LEVEL x LEVEL pixels and back (blocky low resolution)",
}


def describe_perturbations(perturbations: tuple[Perturbation, ...], before_detection: bool = False) -> dict:
    """What a report records about a perturbed evaluation: the specs, where they were applied, their meaning."""
    return {"specs": [p.spec for p in perturbations],
            "applied_to": "photo before detection" if before_detection else "aligned face",
            "seed": "CRC-32 of each image's file name (or bytes)",
            "definitions": {p.kind: DEFINITIONS[p.kind] for p in perturbations}}


def image_seed(source: bytes | str | Path | np.ndarray) -> int:
    """A stable per-image seed: CRC-32 of a file's name, of encoded bytes, or of a decoded array's bytes."""
    if isinstance(source, Path | str):
        data = Path(source).name.encode()
    elif isinstance(source, np.ndarray):
        data = np.ascontiguousarray(source).tobytes()
    else:
        data = bytes(source)
    return zlib.crc32(data)


def _blur(rgb: np.ndarray, sigma: float | None, seed: int) -> np.ndarray:
    if not sigma:
        return rgb.copy()
    return cv2.GaussianBlur(rgb, (0, 0), sigmaX=float(sigma), sigmaY=float(sigma), borderType=cv2.BORDER_REFLECT)


def _resample(rgb: np.ndarray, px: float | None, shrink: int, enlarge: int | None) -> np.ndarray:
    """Shrink by px/112 with `shrink` interpolation, then back to the original size with `enlarge` (None:
    leave it small); px >= 112 is the identity. The one resampling of downscale and pixelate."""
    factor = float(px) / REFERENCE_SIZE
    if factor >= 1:
        return rgb.copy()
    height, width = rgb.shape[:2]
    small = cv2.resize(rgb, (max(1, round(width * factor)), max(1, round(height * factor))), interpolation=shrink)
    return small if enlarge is None else cv2.resize(small, (width, height), interpolation=enlarge)


def _downscale(rgb: np.ndarray, px: float | None, restore_size: bool = True) -> np.ndarray:
    return _resample(rgb, px, cv2.INTER_AREA, cv2.INTER_LINEAR if restore_size else None)


def _jpeg(rgb: np.ndarray, quality: float | None, seed: int) -> np.ndarray:
    try:
        data = encode_image(rgb, ".jpg", quality=int(quality))
    except ValueError as err:
        raise ValueError(f"jpeg:{int(quality)}: {err}") from err
    return decode_image(data, f"jpeg:{int(quality)}")


def occlusion_box(height: int, width: int, fraction: float, seed: int) -> tuple[int, int, int, int]:
    """(top, left, box height, box width) of the occluding rectangle: aspect of the image, area ≈ fraction."""
    side = math.sqrt(fraction)
    box_h, box_w = min(height, round(height * side)), min(width, round(width * side))
    rng = np.random.default_rng(seed)
    top = int(rng.integers(0, height - box_h + 1))
    left = int(rng.integers(0, width - box_w + 1))
    return top, left, box_h, box_w


def _occlude(rgb: np.ndarray, fraction: float | None, seed: int) -> np.ndarray:
    out = rgb.copy()
    top, left, box_h, box_w = occlusion_box(rgb.shape[0], rgb.shape[1], float(fraction), seed)
    out[top:top + box_h, left:left + box_w] = 0
    return out


def _gamma(rgb: np.ndarray, g: float | None, seed: int) -> np.ndarray:
    table = np.clip(np.round(255.0 * (np.arange(256) / 255.0) ** float(g)), 0, 255).astype(np.uint8)
    return table[rgb]


def _gray(rgb: np.ndarray, level: float | None, seed: int) -> np.ndarray:
    return np.repeat(cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)[:, :, None], 3, axis=2)


def _motion(rgb: np.ndarray, length: float | None, seed: int) -> np.ndarray:
    if not length or length <= 1:
        return rgb.copy()
    size = int(math.ceil(length)) | 1  # odd kernel holding the whole line
    angle = float(np.random.default_rng(seed).uniform(0.0, math.pi))
    kernel = np.zeros((size, size), np.float32)
    centre = (size - 1) / 2
    for t in np.linspace(-(length - 1) / 2, (length - 1) / 2, max(2, 4 * size)):
        x, y = centre + t * math.cos(angle), centre + t * math.sin(angle)
        kernel[int(round(y)), int(round(x))] = 1.0
    kernel /= kernel.sum()
    return cv2.filter2D(rgb, -1, kernel, borderType=cv2.BORDER_REFLECT)


def _pixelate(rgb: np.ndarray, px: float | None, seed: int) -> np.ndarray:
    return _resample(rgb, px, cv2.INTER_NEAREST, cv2.INTER_NEAREST)


_APPLY = {"blur": _blur, "jpeg": _jpeg, "occlude": _occlude, "gamma": _gamma, "gray": _gray, "motion": _motion,
          "pixelate": _pixelate}
INTEGER_KINDS = ("downscale", "jpeg", "pixelate")
LOG_UNIFORM_KINDS = ("gamma",)  # darker and brighter equally often


@dataclass(frozen=True)
class RandomDegradation:
    """Training-time augmentation: per sample, with `probability`, 1 to `max_kinds` distinct kinds, each at a
    level drawn from its [low, high] range (integers for downscale / jpeg / pixelate, log-uniform for gamma;
    `gray` takes no range). Levels are those of `parse_perturbation`, so training and `eval --perturb` speak
    the same units."""

    ranges: dict[str, tuple[float, float] | None]
    probability: float = 0.5
    max_kinds: int = 1

    def __post_init__(self) -> None:
        if not 0 <= self.probability <= 1:
            raise PerturbationSpecError(f"augment probability must be in [0, 1], got {self.probability}")
        if not self.ranges and self.probability > 0:
            raise PerturbationSpecError("augment: no kinds given; name at least one, e.g. {downscale: [14, 56]}")
        if not 1 <= self.max_kinds <= max(1, len(self.ranges)):
            raise PerturbationSpecError(f"augment max_kinds must be between 1 and the {len(self.ranges)} kinds "
                                        f"given, got {self.max_kinds}")
        for kind, bounds in self.ranges.items():
            if kind == "gray":
                if bounds:
                    raise PerturbationSpecError(f"augment kind 'gray' takes no range, got {bounds}")
                continue
            if kind not in KINDS:
                raise PerturbationSpecError(f"augment: unknown kind '{kind}', expected one of {list(KINDS)}")
            if not bounds or len(bounds) != 2 or bounds[0] > bounds[1]:
                raise PerturbationSpecError(f"augment kind '{kind}': expected a range [low, high] with low <= "
                                            f"high, got {bounds}")
            for level in bounds:  # both ends must be valid levels of that kind
                number = int(level) if kind in INTEGER_KINDS else level
                parse_perturbation(f"{kind}:{number}")
            if kind in LOG_UNIFORM_KINDS and bounds[0] <= 0:
                raise PerturbationSpecError(f"augment kind '{kind}': the range must be > 0, got {bounds}")

    @property
    def active(self) -> bool:
        """Whether any sample can be degraded."""
        return self.probability > 0 and bool(self.ranges)

    def sample(self, rng: np.random.Generator) -> tuple[Perturbation, ...]:
        """The perturbation chain for one sample (empty when it stays clean)."""
        if not self.active or rng.random() >= self.probability:
            return ()
        kinds = list(self.ranges)
        count = int(rng.integers(1, self.max_kinds + 1))
        chosen = [kinds[i] for i in rng.permutation(len(kinds))[:count]]
        chain = []
        for kind in chosen:
            bounds = self.ranges[kind]
            if kind == "gray":
                chain.append(Perturbation("gray"))
            elif kind in INTEGER_KINDS:
                chain.append(Perturbation(kind, float(rng.integers(int(bounds[0]), int(bounds[1]) + 1))))
            elif kind in LOG_UNIFORM_KINDS:
                chain.append(Perturbation(kind, float(math.exp(rng.uniform(math.log(bounds[0]),
                                                                           math.log(bounds[1]))))))
            else:
                chain.append(Perturbation(kind, float(rng.uniform(bounds[0], bounds[1]))))
        return tuple(chain)

    def apply_batch(self, images: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Degrade a uint8 (B, H, W, 3) RGB batch in place, sample by sample; returns it."""
        for index in range(len(images)):
            chain = self.sample(rng)
            if chain:
                images[index] = apply_perturbations(images[index], chain, seed=int(rng.integers(0, 2**31)))
        return images
