"""Decode encoded images to RGB uint8 HWC arrays, whatever their mode (gray, alpha, CMYK) or size."""

from __future__ import annotations

import io
import logging

import cv2
import numpy as np
from PIL import Image, UnidentifiedImageError

from marginface.errors import InputError

log = logging.getLogger(__name__)

FACE_SIZE = 112
_DECODE_RGB = getattr(cv2, "IMREAD_COLOR_RGB", None)  # OpenCV >= 4.10 decodes straight to RGB


class ImageDecodeError(InputError):
    """An image could not be decoded; the message names its source."""


def decode_image(data: bytes | bytearray | memoryview | np.ndarray, source: str = "<bytes>") -> np.ndarray:
    """Decode JPEG/PNG/PGM/... bytes to an RGB uint8 (H, W, 3) array; raises ImageDecodeError naming `source`."""
    buffer = np.frombuffer(data, dtype=np.uint8) if not isinstance(data, np.ndarray) else data
    if buffer.size == 0:
        raise ImageDecodeError(f"{source}: empty image data")
    # IMREAD_COLOR(_RGB) converts gray, alpha and CMYK to 3 channels; the RGB flag saves a colour pass.
    if _DECODE_RGB is not None:
        rgb = cv2.imdecode(buffer, _DECODE_RGB)
        if rgb is not None:
            return rgb
    else:
        bgr = cv2.imdecode(buffer, cv2.IMREAD_COLOR)
        if bgr is not None:
            return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
    try:  # Pillow reads a few formats and damaged-but-readable files OpenCV refuses
        with Image.open(io.BytesIO(buffer.tobytes())) as img:
            return np.asarray(img.convert("RGB"), dtype=np.uint8).copy()
    except UnidentifiedImageError as err:
        raise ImageDecodeError(f"{source}: cannot decode image (not a format OpenCV or Pillow recognises, "
                               f"{buffer.size} bytes starting {buffer[:8].tobytes()!r})") from err
    except (OSError, ValueError, SyntaxError) as err:
        raise ImageDecodeError(f"{source}: cannot decode image ({err})") from err


def encode_image(rgb: np.ndarray, ext: str = ".jpg", quality: int = 95) -> bytes:
    """Encode an RGB uint8 image as JPEG (default) or PNG bytes."""
    params = [cv2.IMWRITE_JPEG_QUALITY, quality] if ext.lower() in (".jpg", ".jpeg") else []
    ok, buf = cv2.imencode(ext, cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), params)
    if not ok:
        raise ValueError(f"cannot encode image of shape {rgb.shape} as {ext}")
    return buf.tobytes()


def ensure_size(rgb: np.ndarray, size: int = FACE_SIZE) -> tuple[np.ndarray, bool]:
    """Resize to size × size when needed; returns (image, whether it was resized)."""
    if rgb.shape[0] == size and rgb.shape[1] == size:
        return rgb, False
    return cv2.resize(rgb, (size, size), interpolation=cv2.INTER_AREA), True
