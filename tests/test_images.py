"""Decoding of every colour mode users send, and a reasoned rejection for every bad-input kind."""

import io
import zlib

import numpy as np
import pytest
from PIL import Image

from fruits_jobs.images import RejectedImage, decode_image, decode_many


def encode(img: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    return buf.getvalue()


RED = Image.new("RGB", (100, 100), (200, 20, 30))


@pytest.mark.parametrize(
    "mode,fmt",
    [
        ("RGB", "JPEG"),
        ("L", "JPEG"),
        ("CMYK", "JPEG"),
        ("RGB", "PNG"),
        ("RGBA", "PNG"),
        ("L", "PNG"),
        ("LA", "PNG"),
        ("P", "PNG"),
        ("1", "PNG"),
        ("I;16", "PNG"),
        ("RGB", "WEBP"),
        ("RGB", "BMP"),
        ("P", "GIF"),
        ("RGB", "TIFF"),
    ],
)
def test_every_colour_mode_becomes_rgb_of_the_model_size(mode, fmt):
    arr = decode_image(encode(RED.convert(mode), fmt), 224)
    assert arr.shape == (224, 224, 3) and arr.dtype == np.uint8


def test_colours_survive_conversion():
    red = decode_image(encode(RED, "PNG"), 64)
    assert tuple(red[32, 32]) == (200, 20, 30)
    cmyk = decode_image(encode(RED.convert("CMYK"), "JPEG", quality=100), 64)
    assert cmyk[32, 32, 0] > 150 and cmyk[32, 32, 1] < 80  # still red, not inverted


def test_sixteen_bit_grey_is_scaled_not_clipped_to_white():
    mid_grey = Image.new("I;16", (50, 50), 32768)
    arr = decode_image(encode(mid_grey, "PNG"), 32)
    assert 120 <= arr[0, 0, 0] <= 135


def test_transparent_pixels_become_white_not_black():
    clear = Image.new("RGBA", (50, 50), (10, 10, 10, 0))
    assert tuple(decode_image(encode(clear, "PNG"), 32)[5, 5]) == (255, 255, 255)


def test_exif_orientation_is_applied():
    tall = Image.new("RGB", (40, 80), (0, 0, 255))
    tall.paste((255, 0, 0), (0, 0, 40, 40))  # red on top
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display": a phone held sideways
    arr = decode_image(encode(tall, "JPEG", exif=exif.tobytes(), quality=100), 64)
    # displayed upright, the red half is on the right
    assert arr[32, 56, 0] > 200 and arr[32, 8, 2] > 200


@pytest.mark.parametrize(
    "data,code",
    [
        (b"", "empty_file"),
        (b"just some notes, not a photo\n", "not_an_image"),
        (encode(RED, "JPEG")[:400], "truncated"),
        (encode(RED, "PNG")[:60], "truncated"),
        (encode(RED, "ICO"), "unsupported_format"),
        (b"\x89PNG\r\n\x1a\n" + b"\x00" * 64, "not_an_image"),
    ],
)
def test_bad_inputs_are_rejected_with_a_reason(data, code):
    with pytest.raises(RejectedImage) as exc:
        decode_image(data, 224)
    assert exc.value.code == code


def test_decompression_bomb_is_rejected_before_decoding():
    bomb = encode(Image.new("1", (20000, 20000)), "PNG")  # 400 Mpx in a few dozen KB
    assert len(bomb) < 200_000
    with pytest.raises(RejectedImage) as exc:
        decode_image(bomb, 224)
    assert exc.value.code == "decompression_bomb"
    with pytest.raises(RejectedImage) as exc:  # the limit is a parameter: also below PIL's own
        decode_image(encode(Image.new("L", (300, 300)), "PNG"), 224, max_pixels=50_000)
    assert exc.value.code == "decompression_bomb"


def png_header(width: int, height: int) -> bytes:
    """A PNG that declares its size and holds one row of pixels: what PIL reads to know the size,
    without the megabytes a real one of that size takes."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return len(data).to_bytes(4, "big") + kind + data + zlib.crc32(kind + data).to_bytes(4, "big")

    ihdr = width.to_bytes(4, "big") + height.to_bytes(4, "big") + bytes([8, 0, 0, 0, 0])
    row = zlib.compress(bytes(width + 1))
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", row) + chunk(b"IEND", b"")


def test_the_pixel_limit_is_the_documented_one_not_pils_own():
    """--max-pixels (100 Mpx) is the one limit: PIL's default (89.5 Mpx) used to reject a 95 Mpx photo."""
    try:
        decode_image(png_header(10_000, 9_500), 224)  # 95 Mpx: past the limit check (its one row decodes)
    except RejectedImage as exc:
        assert exc.code != "decompression_bomb", exc
    with pytest.raises(RejectedImage) as exc:
        decode_image(png_header(10_001, 10_000), 224)
    assert exc.value.code == "decompression_bomb" and "100000000" in exc.value.detail


def test_a_batch_keeps_going_past_bad_files():
    good = encode(RED, "JPEG")
    arrays, errors = decode_many([good, b"", b"nope", good], 32)
    assert arrays.shape == (2, 32, 32, 3)
    assert [e[0] if e else None for e in errors] == [None, "empty_file", "not_an_image", None]
