"""Decoding rejects empty, corrupt and oversized images with a message saying what is wrong; crops are capped."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from riskwatch.errors import InvalidFrame
from riskwatch.imaging import Image, crop_region, decode_image, encode_jpeg, header_size

LIMITS = {"max_bytes": 1_000_000, "max_pixels": 2_000_000}


@pytest.fixture
def bus_image() -> Image:
    """A photo-sized (810x1080) textured image, as ultralytics' bus.jpg was before imaging moved to libs."""
    rows, cols = np.mgrid[0:1080, 0:810]
    gradient = np.stack([rows % 256, cols % 256, (rows + cols) % 256], axis=-1)
    noise = np.random.default_rng(0).integers(0, 32, gradient.shape)
    return np.asarray((gradient + noise) % 256, np.uint8)


def png(image: Image) -> bytes:
    ok, buffer = cv2.imencode(".png", image)
    assert ok
    return bytes(buffer.tobytes())


def test_jpeg_and_png_decode_to_bgr(bus_image: Image) -> None:
    small = np.asarray(cv2.resize(bus_image, (200, 150)), np.uint8)
    for data in (encode_jpeg(small, 90), png(small)):
        assert header_size(data) == (200, 150)
        assert decode_image(data, **LIMITS).shape == (150, 200, 3)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "empty"),
        (b"not an image at all", "not a decodable JPEG or PNG"),
        (b"\xff\xd8\xff\xe0" + b"\x00" * 40, "not a decodable"),
        (b"x" * 1_000_001, "over the limit of 1000000 bytes"),
    ],
)
def test_bad_images_are_invalid_frames_that_say_why(data: bytes, message: str) -> None:
    with pytest.raises(InvalidFrame, match=message):
        decode_image(data, **LIMITS)


def test_too_many_pixels_is_caught_from_the_header_before_decoding() -> None:
    huge = png(np.zeros((1500, 1500, 3), np.uint8))  # compresses to a few kB
    assert len(huge) < 100_000
    with pytest.raises(InvalidFrame, match="1500x1500 pixels, over the limit"):
        decode_image(huge, **LIMITS)


def test_truncated_png_is_rejected(bus_image: Image) -> None:
    data = png(np.asarray(cv2.resize(bus_image, (64, 64)), np.uint8))
    with pytest.raises(InvalidFrame):
        decode_image(data[: len(data) // 3], **LIMITS)


def test_a_png_chunk_longer_than_the_data_is_refused_before_opencv_allocates_it() -> None:
    # Found by `make fuzz`: OpenCV allocated the 4 GB this IDAT declares, for 78 bytes of input.
    bomb = bytes.fromhex(
        "89504e470d0a1a0a0000000d49484452000000400000003008020000002e29eb48fc000084494441546805d5c101c8b222cb8a2c2b"
        "b2acc8b2077da732d12405e9c30000000049454e44b2acc8b2"
    )
    with pytest.raises(InvalidFrame, match=r"malformed PNG: PNG chunk b'IDAT' at byte 33 declares 4227858564 bytes"):
        decode_image(bomb, **LIMITS)


def test_crop_has_a_margin_and_its_longest_side_capped(bus_image: Image) -> None:
    height, width = bus_image.shape[:2]
    small = crop_region(bus_image, (100, 100, 200, 300), margin=0.1, max_side=640)
    # 20 px on each side of a 100×200 box.
    assert small.shape[:2] == (240, 140)
    whole = crop_region(bus_image, (0, 0, width, height), margin=0.2, max_side=640)
    assert max(whole.shape[:2]) == 640
    assert whole.shape[0] / whole.shape[1] == pytest.approx(height / width, rel=0.01)
