"""load_image: every input kind gives the same RGB array; EXIF orientation; size and bomb limits; clear errors."""

from __future__ import annotations

import io
import os
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from marginface.infer.images import ImageInputError, load_image


def _jpeg(array: np.ndarray, orientation: int | None = None) -> bytes:
    img = Image.fromarray(array)
    buffer = io.BytesIO()
    if orientation is None:
        img.save(buffer, "PNG")
    else:
        exif = img.getexif()
        exif[0x0112] = orientation
        img.save(buffer, "JPEG", quality=95, exif=exif.tobytes())
    return buffer.getvalue()


def _png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header claims width x height pixels, with one tiny data chunk (a decompression bomb)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 16)) + \
        chunk(b"IEND", b"")


@pytest.fixture()
def picture() -> np.ndarray:
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, (30, 50, 3), dtype=np.uint8)


def test_every_input_kind_gives_the_same_pixels(tmp_path: Path, picture: np.ndarray) -> None:
    data = _jpeg(picture)  # PNG: lossless
    path = tmp_path / "p.png"
    path.write_bytes(data)
    for source in (path, str(path), data, bytearray(data), picture, Image.fromarray(picture)):
        out = load_image(source)
        assert out.dtype == np.uint8 and out.shape == (30, 50, 3)
        np.testing.assert_array_equal(out, picture)


def test_gray_and_rgba_arrays_become_rgb(picture: np.ndarray) -> None:
    assert load_image(picture[:, :, 0]).shape == (30, 50, 3)
    rgba = np.concatenate([picture, np.full((30, 50, 1), 255, np.uint8)], axis=2)
    np.testing.assert_array_equal(load_image(rgba), picture)


def test_exif_orientation_is_applied(picture: np.ndarray) -> None:
    left_white = np.zeros((40, 80, 3), np.uint8)
    left_white[:, :40] = 255
    data = _jpeg(left_white, orientation=6)  # "rotate 90° clockwise to display"
    out = load_image(data, name="phone.jpg")
    assert out.shape == (80, 40, 3)
    assert out[:40].mean() > 200 and out[40:].mean() < 50  # the white half is now on top
    pil = Image.open(io.BytesIO(data))
    np.testing.assert_array_equal(load_image(pil).shape, (80, 40, 3))


def test_too_large_image_is_refused_before_decoding(picture: np.ndarray) -> None:
    with pytest.raises(ImageInputError, match=r"big\.png: image too large \(50x30 = 1500 pixels > limit 1000\)") as err:
        load_image(_jpeg(picture), name="big.png", max_pixels=1000)
    assert err.value.too_large
    with pytest.raises(ImageInputError, match="too large"):
        load_image(picture, max_pixels=1000)


def test_decompression_bomb_is_refused() -> None:
    bomb = _png_header_only(60_000, 60_000)  # 3.6e9 pixels claimed by 80 bytes
    with pytest.raises(ImageInputError, match="bomb.png: decompression bomb refused") as err:
        load_image(bomb, name="bomb.png", max_pixels=10**10)
    assert err.value.too_large
    with pytest.raises(ImageInputError, match="too large"):
        load_image(_png_header_only(9000, 9000), name="wide.png")  # under Pillow's limit, over ours


@pytest.mark.parametrize(("source", "message"), [
    (b"", "upload: empty image data"),
    (b"certainly not a picture", "upload: not an image"),
    (np.zeros((10, 10, 3), np.float32), "expected a uint8 RGB array"),
    (np.zeros((10, 10, 5), np.uint8), r"expected an \(H, W, 3\) RGB array"),
    (12345, "unsupported image input type int"),
])
def test_bad_inputs_name_the_source(source, message: str) -> None:
    with pytest.raises(ImageInputError, match=message):
        load_image(source, name="upload")


def test_missing_and_truncated_files(tmp_path: Path, picture: np.ndarray) -> None:
    with pytest.raises(ImageInputError, match="nope.jpg: no such image file"):
        load_image(tmp_path / "nope.jpg")
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(_jpeg(picture, orientation=1)[:200])
    with pytest.raises(ImageInputError, match="broken.jpg"):
        load_image(broken)


def test_elongated_images_are_refused_naming_the_size() -> None:
    """The probe: a 118-byte 1x20000 PNG gave an OpenCV resize assertion (a 500 and a traceback)."""
    for width, height in ((1, 20_000), (20_000, 1)):
        buffer = io.BytesIO()
        Image.new("RGB", (width, height)).save(buffer, "PNG")
        assert len(buffer.getvalue()) < 1000
        with pytest.raises(ImageInputError, match=rf"line.png: image of {width}x{height} pixels is too elongated"):
            load_image(buffer.getvalue(), name="line.png")
    with pytest.raises(ImageInputError, match="2560x1 pixels is too elongated"):
        load_image(np.zeros((1, 2560, 3), np.uint8))
    assert load_image(np.zeros((10, 1000, 3), np.uint8)).shape == (10, 1000, 3)  # 100:1 is still a photo


def test_a_fifo_a_device_or_a_folder_is_named_as_such(tmp_path: Path) -> None:
    """The probe: a FIFO given as an image was 'no such image file' (and reading it would wait forever)."""
    fifo = tmp_path / "pipe.jpg"
    os.mkfifo(fifo)
    with pytest.raises(ImageInputError, match=r"pipe.jpg: is a FIFO \(named pipe\), not an image file"):
        load_image(fifo)
    with pytest.raises(ImageInputError, match="/dev/null: is a character device, not an image file"):
        load_image("/dev/null")
    with pytest.raises(ImageInputError, match="is a folder, not an image file"):
        load_image(tmp_path)


def test_a_damaged_header_is_a_damaged_image_not_an_unknown_format(picture: np.ndarray) -> None:
    """The probe: a PNG whose header was damaged got 415 ('no image format') where the docs promise 400."""
    png = _jpeg(picture)
    damaged = png[:16] + b"\xff" * 16 + png[32:]  # the signature stays, IHDR's size and CRC do not
    with pytest.raises(ImageInputError, match="x.png: damaged PNG image: its header cannot be read") as err:
        load_image(damaged, name="x.png")
    assert not err.value.not_an_image
    with pytest.raises(ImageInputError, match="not an image") as err:
        load_image(b"hello, not a photo", name="notes.txt")
    assert err.value.not_an_image
