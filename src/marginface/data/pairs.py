"""Verification pair sets: insightface `.bin` files and LFW-style `pairs.txt` + image folder, as one type.

A `.bin` is a pickle of (list of encoded images, list of is-same flags), pairs consecutive. It is read
with a restricted unpickler that can only build bytes, str, lists, tuples, bools, ints and numpy arrays:
a hostile file that tries to call anything else is refused with PairSetError, nothing is executed.
"""

from __future__ import annotations

import io
import pickle
import struct
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from marginface.data.image import decode_image, encode_image
from marginface.data.staging import StagedOutputs
from marginface.errors import InputError

DEFAULT_FOLDS = 10


class PairSetError(InputError):
    """A verification set is malformed, hostile or refers to missing images; the message names the file."""


@dataclass
class PairSet:
    """Unique images (encoded bytes, file paths or decoded RGB arrays), index pairs into them, is-same
    flags and fold ids."""

    name: str
    images: list[bytes | Path | np.ndarray]
    pairs: np.ndarray  # (P, 2) int64 indices into images
    issame: np.ndarray  # (P,) bool
    folds: np.ndarray  # (P,) int64 fold id
    meta: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        p = len(self.pairs)
        if self.pairs.shape != (p, 2) or self.issame.shape != (p,) or self.folds.shape != (p,):
            raise PairSetError(f"{self.name}: inconsistent shapes pairs={self.pairs.shape}, "
                               f"issame={self.issame.shape}, folds={self.folds.shape}")
        if p and (self.pairs.min() < 0 or self.pairs.max() >= len(self.images)):
            raise PairSetError(f"{self.name}: pair indices outside [0, {len(self.images)})")

    def __len__(self) -> int:
        return len(self.pairs)

    @property
    def num_folds(self) -> int:
        """Number of distinct folds."""
        return int(len(np.unique(self.folds)))

    def load_image(self, index: int) -> np.ndarray:
        """Decode image `index` to RGB uint8."""
        source = self.images[index]
        if isinstance(source, np.ndarray) and source.ndim == 3:
            return source
        if isinstance(source, Path):
            try:
                data = source.read_bytes()
            except OSError as err:
                raise PairSetError(f"{self.name}: cannot read {source}: {err}") from err
            return decode_image(data, str(source))
        return decode_image(source, f"{self.name} image {index}")

    def subset(self, folds: list[int]) -> PairSet:
        """The pairs of the given folds only (images re-indexed to those they use)."""
        keep = np.isin(self.folds, folds)
        pairs = self.pairs[keep]
        used, inverse = np.unique(pairs.reshape(-1), return_inverse=True)
        return PairSet(self.name, [self.images[i] for i in used], inverse.reshape(-1, 2).astype(np.int64),
                       self.issame[keep], self.folds[keep], dict(self.meta))


# ---------------------------------------------------------------- .bin (insightface)

_ALLOWED_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
    ("numpy", "ndarray"), ("numpy", "dtype"),
    ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
    ("_codecs", "encode"),  # how protocol-2 pickles spell bytes
    ("builtins", "bytearray"), ("__builtin__", "bytearray"),
}


class _RestrictedUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        if (module, name) in _ALLOWED_GLOBALS:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"global '{module}.{name}' is not allowed in a verification .bin")


def _as_bytes(item: object, where: str) -> bytes:
    if isinstance(item, bytes | bytearray):
        return bytes(item)
    if isinstance(item, np.ndarray) and item.dtype == np.uint8:
        return item.tobytes()
    if isinstance(item, str):  # Python 2 pickles read with encoding='latin1'
        return item.encode("latin1")
    raise PairSetError(f"{where}: expected encoded image bytes, found {type(item).__name__}")


def read_bin(path: str | Path, num_folds: int = DEFAULT_FOLDS) -> PairSet:
    """Load an insightface verification .bin safely; folds are consecutive blocks as in insightface."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as err:
        raise PairSetError(f"cannot read verification set {path}: {err}") from err
    try:
        obj = _RestrictedUnpickler(io.BytesIO(raw), encoding="bytes").load()
    except pickle.UnpicklingError as err:
        raise PairSetError(f"{path}: refused or corrupt pickle: {err}") from err
    except (EOFError, ValueError, TypeError, AttributeError, IndexError, KeyError, MemoryError,
            UnicodeDecodeError, OverflowError, struct.error) as err:
        raise PairSetError(f"{path}: truncated or corrupt .bin ({type(err).__name__}: {err})") from err
    if not (isinstance(obj, tuple | list) and len(obj) == 2):
        raise PairSetError(f"{path}: expected a pickled (images, issame) pair, found {type(obj).__name__}")
    bins, flags = obj
    if not isinstance(bins, list | tuple):
        raise PairSetError(f"{path}: images must be a list, found {type(bins).__name__}")
    try:
        issame = np.asarray(flags)
    except Exception as err:  # noqa: BLE001 - any malformed object becomes one documented error
        raise PairSetError(f"{path}: is-same flags are not an array: {err}") from err
    if issame.ndim != 1 or issame.dtype.kind not in "biu":
        raise PairSetError(f"{path}: is-same flags must be a 1-D bool list, found dtype {issame.dtype}")
    if len(bins) != 2 * len(issame):
        raise PairSetError(f"{path}: {len(bins)} images for {len(issame)} pairs (expected {2 * len(issame)})")
    images: list[bytes | Path] = [_as_bytes(item, f"{path} image {i}") for i, item in enumerate(bins)]
    count = len(issame)
    pairs = np.arange(2 * count, dtype=np.int64).reshape(count, 2)
    folds = (np.arange(count) * num_folds // max(count, 1)).astype(np.int64)
    return PairSet(path.stem, images, pairs, issame.astype(bool), folds, {"source": str(path)})


def write_bin(pair_set: PairSet, path: str | Path) -> None:
    """Write an insightface .bin: (list of encoded images, pairs consecutive; list of bools).

    The target directory is checked for writing before any image is read; the file is written under a
    temporary name and renamed when complete, so an existing .bin is replaced only by a whole one.
    """
    path = Path(path)
    with StagedOutputs(path.parent) as staging:
        bins: list[bytes] = []
        for a, b in pair_set.pairs:
            for index in (a, b):
                source = pair_set.images[int(index)]
                if isinstance(source, Path):
                    bins.append(source.read_bytes())
                elif isinstance(source, np.ndarray) and source.ndim == 3:
                    bins.append(encode_image(source, ".png"))
                else:
                    bins.append(bytes(source))
        with open(staging.path(path.name), "wb") as f:
            pickle.dump((bins, [bool(v) for v in pair_set.issame]), f, protocol=4)


# ---------------------------------------------------------------- pairs.txt (LFW)

def _lfw_path(root: Path, name: str, number: str, ext: str) -> Path:
    return root / name / f"{name}_{int(number):04d}{ext}"


def read_pairs_txt(pairs_path: str | Path, image_root: str | Path, ext: str = ".jpg",
                   check_files: bool = True) -> PairSet:
    """LFW pairs.txt ('folds n' header, then per fold n same lines 'name i j' and n different lines
    'name1 i name2 j') with images at image_root/<name>/<name>_<i:04d><ext>."""
    pairs_path, root = Path(pairs_path), Path(image_root)
    try:
        lines = [line.split() for line in pairs_path.read_text().splitlines() if line.strip()]
    except OSError as err:
        raise PairSetError(f"cannot read {pairs_path}: {err}") from err
    if not lines:
        raise PairSetError(f"{pairs_path}: empty file")
    header = lines[0]
    if len(header) == 2 and all(v.isdigit() for v in header):
        num_folds, per_fold = int(header[0]), int(header[1])
        body = lines[1:]
        if len(body) != 2 * num_folds * per_fold:
            raise PairSetError(f"{pairs_path}: header says {num_folds} folds of {per_fold}+{per_fold} pairs "
                               f"({2 * num_folds * per_fold} lines) but {len(body)} pair lines follow")
    else:  # a header-less list: one fold
        body, num_folds, per_fold = lines, 1, 0
    index_of: dict[Path, int] = {}
    images: list[bytes | Path] = []
    pairs, issame, folds = [], [], []

    def image_index(path: Path) -> int:
        if path not in index_of:
            index_of[path] = len(images)
            images.append(path)
        return index_of[path]

    for line_no, parts in enumerate(body, start=2):
        if len(parts) == 3:
            a, b, same = _lfw_path(root, parts[0], parts[1], ext), _lfw_path(root, parts[0], parts[2], ext), True
        elif len(parts) == 4:
            a, b, same = _lfw_path(root, parts[0], parts[1], ext), _lfw_path(root, parts[2], parts[3], ext), False
        else:
            raise PairSetError(f"{pairs_path}: line {line_no} has {len(parts)} fields, expected 3 or 4")
        pairs.append((image_index(a), image_index(b)))
        issame.append(same)
        folds.append((line_no - 2) // (2 * per_fold) if per_fold else 0)
    if check_files:
        missing = [p for p in images if isinstance(p, Path) and not p.is_file()]
        if missing:
            raise PairSetError(f"{pairs_path}: {len(missing)} referenced images are missing, e.g. {missing[0]}")
    return PairSet(pairs_path.parent.name or pairs_path.stem, images, np.asarray(pairs, dtype=np.int64),
                   np.asarray(issame, dtype=bool), np.asarray(folds, dtype=np.int64),
                   {"source": str(pairs_path), "image_root": str(root)})
