"""Every way an image enters the deploy path (file path, bytes, RGB array, PIL image) becomes one RGB uint8
array, with EXIF orientation applied and size / decompression-bomb limits enforced before full decoding."""

from __future__ import annotations

import io
import logging
import stat
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from marginface.data.image import ImageDecodeError, decode_image
from marginface.errors import InputError

if TYPE_CHECKING:  # pragma: no cover - typing only
    from PIL.Image import Image as PILImage

log = logging.getLogger(__name__)

DEFAULT_MAX_PIXELS = 40_000_000
MAX_ASPECT_RATIO = 100  # no photo of a face is 100 times longer than wide; past ~1280:1 the detector's
# downscale to 1280 pixels would leave the short side no pixel at all (an OpenCV assertion, a 500)


# The first bytes of the formats OpenCV or Pillow decode: bytes that start so are an image, damaged or not.
_SIGNATURES = {b"\x89PNG\r\n\x1a\n": "PNG", b"\xff\xd8\xff": "JPEG", b"GIF87a": "GIF", b"GIF89a": "GIF",
               b"BM": "BMP", b"II*\x00": "TIFF", b"MM\x00*": "TIFF", b"\x00\x00\x00\x0cjP  ": "JPEG 2000"}


class ImageInputError(InputError):
    """An input is not a usable image: not an image, empty, too large or a decompression bomb; names the source."""

    def __init__(self, message: str, *, too_large: bool = False, not_an_image: bool = False) -> None:
        super().__init__(message)
        self.too_large = too_large  # lets an HTTP layer answer 413 instead of 400
        self.not_an_image = not_an_image  # no image format at all (HTTP 415), not a damaged image (400)

    @property
    def http_status(self) -> int:  # type: ignore[override]
        """415 for bytes of no image format at all, 400 for the rest (damaged, empty, too many pixels, bombs)."""
        return 415 if self.not_an_image else 400


def image_format(data: bytes) -> str | None:
    """The image format `data` starts like (its signature), or None; says nothing about the rest being intact."""
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "WebP"
    return next((kind for magic, kind in _SIGNATURES.items() if data.startswith(magic)), None)


def _check_size(width: int, height: int, name: str, max_pixels: int) -> None:
    """Refuse an image over `max_pixels` (too_large), with no pixels, or longer than MAX_ASPECT_RATIO : 1."""
    if width * height > max_pixels:
        raise ImageInputError(f"{name}: image too large ({width}x{height} = {width * height} pixels > limit "
                              f"{max_pixels})", too_large=True)
    if width == 0 or height == 0:
        raise ImageInputError(f"{name}: empty image ({width}x{height})")
    if max(width, height) > MAX_ASPECT_RATIO * min(width, height):
        raise ImageInputError(f"{name}: image of {width}x{height} pixels is too elongated for a photo of a face "
                              f"(aspect ratio {max(width, height) / min(width, height):g}:1, at most "
                              f"{MAX_ASPECT_RATIO}:1)")


def _from_pil(img: PILImage, name: str, max_pixels: int) -> np.ndarray:
    width, height = img.size
    _check_size(width, height, name, max_pixels)
    try:
        img = ImageOps.exif_transpose(img)
        return np.asarray(img.convert("RGB"), dtype=np.uint8).copy()
    except (OSError, ValueError, SyntaxError) as err:
        raise ImageInputError(f"{name}: cannot decode image ({err})") from err


def image_size(data: bytes, name: str, max_pixels: int = DEFAULT_MAX_PIXELS) -> tuple[int, int]:
    """(width, height) from the header alone, every size check passed; nothing is decoded (ImageInputError)."""
    if len(data) == 0:
        raise ImageInputError(f"{name}: empty image data (0 bytes)")
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            with Image.open(io.BytesIO(data)) as img:
                width, height = img.size
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as err:
            raise ImageInputError(f"{name}: decompression bomb refused ({err})", too_large=True) from err
        except UnidentifiedImageError as err:
            kind = image_format(data)
            if kind is not None:  # the signature of an image with a header nothing can read: a damaged image
                raise ImageInputError(f"{name}: damaged {kind} image: its header cannot be read ({len(data)} "
                                      "bytes)") from err
            raise ImageInputError(f"{name}: not an image (no known image format, {len(data)} bytes)",
                                  not_an_image=True) from err
        except (OSError, ValueError, SyntaxError) as err:
            raise ImageInputError(f"{name}: cannot read image header ({err})") from err
    _check_size(width, height, name, max_pixels)
    return width, height


def _decode_bytes(data: bytes, name: str, max_pixels: int) -> np.ndarray:
    image_size(data, name, max_pixels)  # the header first: sizes checked before a single pixel is decoded
    # The same decoder as evaluation (OpenCV, which applies EXIF orientation), so pixels match eval exactly.
    try:
        return decode_image(data, name)
    except ImageDecodeError as err:
        raise ImageInputError(str(err)) from err


def _from_array(array: np.ndarray, name: str, max_pixels: int) -> np.ndarray:
    if array.ndim == 2:
        array = np.repeat(array[:, :, None], 3, axis=2)
    if array.ndim != 3 or array.shape[2] not in (3, 4):
        raise ImageInputError(f"{name}: expected an (H, W, 3) RGB array, got shape {array.shape}")
    _check_size(int(array.shape[1]), int(array.shape[0]), name, max_pixels)
    if array.dtype != np.uint8:
        raise ImageInputError(f"{name}: expected a uint8 RGB array, got {array.dtype}")
    return np.ascontiguousarray(array[:, :, :3])


def _check_regular_file(path: Path, label: str) -> None:
    """ImageInputError unless `path` is a regular file; a FIFO, device, socket or folder is named as such
    (reading a FIFO would wait forever, a device could stream without end)."""
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        raise ImageInputError(f"{label}: no such image file") from None
    except OSError as err:
        raise ImageInputError(f"{label}: cannot read the image file ({err.strerror or err})") from err
    kinds = ((stat.S_ISDIR, "a folder"), (stat.S_ISFIFO, "a FIFO (named pipe)"), (stat.S_ISCHR, "a character device"),
             (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"))
    for test, kind in kinds:
        if test(mode):
            raise ImageInputError(f"{label}: is {kind}, not an image file")
    if not stat.S_ISREG(mode):
        raise ImageInputError(f"{label}: is not a regular file, so not an image file")


def load_image(source: str | Path | bytes | bytearray | memoryview | np.ndarray | PILImage, *,
               name: str | None = None, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """RGB uint8 (H, W, 3) from a path, encoded bytes, an RGB array or a PIL image; EXIF orientation applied.

    Raises ImageInputError (naming `name` or the path) for anything that is not a usable image.
    """
    if isinstance(source, (str, Path)):
        path = Path(source)
        label = name or str(path)
        _check_regular_file(path, label)
        try:
            data = path.read_bytes()
        except OSError as err:
            raise ImageInputError(f"{label}: cannot read the image file ({err.strerror or err})") from err
        return _decode_bytes(data, label, max_pixels)
    label = name or f"<{type(source).__name__}>"
    if isinstance(source, (bytes, bytearray, memoryview)):
        return _decode_bytes(bytes(source), label, max_pixels)
    if isinstance(source, np.ndarray):
        return _from_array(source, label, max_pixels)
    if isinstance(source, Image.Image):
        return _from_pil(source, label, max_pixels)
    raise ImageInputError(f"{label}: unsupported image input type {type(source).__name__}")
