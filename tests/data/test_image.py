"""decode_image: errors name the source and say what is wrong (empty, cannot decode)."""

from __future__ import annotations

import pytest

from marginface.data import ImageDecodeError, decode_image


def test_decode_errors_name_source() -> None:
    with pytest.raises(ImageDecodeError, match="photo.jpg: empty"):
        decode_image(b"", "photo.jpg")
    with pytest.raises(ImageDecodeError, match="x.png: cannot decode"):
        decode_image(b"\x89PNG garbage", "x.png")
