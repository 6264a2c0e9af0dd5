"""Decode frames safely (size limits checked from the header first) and encode JPEG crops."""

from __future__ import annotations

import struct

import cv2
import numpy as np
import numpy.typing as npt

from riskwatch.errors import InvalidFrame

Image = npt.NDArray[np.uint8]

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# JPEG start-of-frame markers that carry the image size (not DHT 0xC4, JPG 0xC8, DAC 0xCC).
_SOF_MARKERS = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}


# Default limits on an image from outside (the detector's max_image_bytes / max_image_pixels, the gateway's previews).
MAX_IMAGE_BYTES = 8 * 1024 * 1024
MAX_IMAGE_PIXELS = 40_000_000


def header_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) read from a PNG or JPEG header; None for other formats or a header we cannot parse."""
    if data.startswith(_PNG_SIGNATURE) and len(data) >= 24 and data[12:16] == b"IHDR":
        width, height = struct.unpack(">II", data[16:24])
        return int(width), int(height)
    if data.startswith(b"\xff\xd8"):
        i = 2
        while i + 9 < len(data):
            if data[i] != 0xFF:
                return None
            marker = data[i + 1]
            if marker == 0xFF:  # fill byte
                i += 1
                continue
            if marker in _SOF_MARKERS:
                height, width = struct.unpack(">HH", data[i + 5 : i + 9])
                return int(width), int(height)
            if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7:
                i += 2
                continue
            (length,) = struct.unpack(">H", data[i + 2 : i + 4])
            i += 2 + length
    return None


def png_chunk_overrun(data: bytes) -> str | None:
    """Why a PNG's chunks do not fit in its bytes (None when each declared length fits).

    OpenCV's PNG reader allocates a chunk's declared length before reading it: 78 bytes declaring a 4 GB IDAT
    took 4 GB of memory (found by `make fuzz`). Each length must fit in what follows it.
    """
    position = len(_PNG_SIGNATURE)
    while position + 8 <= len(data):
        (length,) = struct.unpack(">I", data[position : position + 4])
        kind = data[position + 4 : position + 8]
        remaining = len(data) - position - 12  # after this chunk's length, type and CRC
        if length > remaining:
            return f"PNG chunk {kind!r} at byte {position} declares {length} bytes, but only {max(remaining, 0)} follow"
        if kind == b"IEND":
            return None
        position += 12 + length
    return None


def decode_image(data: bytes, *, max_bytes: int, max_pixels: int) -> Image:
    """A BGR image from JPEG/PNG bytes, or InvalidFrame saying what is wrong with them."""
    if not data:
        raise InvalidFrame("image is empty (0 bytes)")
    if len(data) > max_bytes:
        raise InvalidFrame(f"image is {len(data)} bytes, over the limit of {max_bytes} bytes")
    size = header_size(data)
    if size is None:
        # OpenCV would also decode WebP, TIFF, BMP, …, and fully, before their size could be checked: a few KB
        # of WebP can declare gigabytes of pixels. Only formats whose size we can read first are accepted.
        raise InvalidFrame(
            f"image is not a decodable JPEG or PNG: no readable size header ({len(data)} bytes, "
            f"starting {data[:8].hex()})"
        )
    width, height = size
    if width == 0 or height == 0:
        raise InvalidFrame(f"image header declares an empty image ({width}x{height})")
    if width * height > max_pixels:
        raise InvalidFrame(f"image is {width}x{height} pixels, over the limit of {max_pixels} pixels")
    if data.startswith(_PNG_SIGNATURE) and (overrun := png_chunk_overrun(data)) is not None:
        raise InvalidFrame(f"image is a malformed PNG: {overrun}")
    image = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_COLOR)
    if image is None:
        raise InvalidFrame(f"image is not a decodable JPEG or PNG ({len(data)} bytes, starting {data[:8].hex()})")
    if image.shape[0] * image.shape[1] > max_pixels:
        raise InvalidFrame(f"image is {image.shape[1]}x{image.shape[0]} pixels, over the limit of {max_pixels}")
    return image.astype(np.uint8, copy=False)


def encode_jpeg(image: Image, quality: int) -> bytes:
    ok, buffer = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise ValueError(f"JPEG encoding failed for an image of shape {image.shape}")
    return bytes(buffer.tobytes())


def crop_region(image: Image, box: tuple[float, float, float, float], *, margin: float, max_side: int) -> Image:
    """The box plus `margin` × its longer side on every side, clipped to the image, downscaled to `max_side`."""
    height, width = image.shape[:2]
    x1, y1, x2, y2 = box
    pad = margin * max(x2 - x1, y2 - y1)
    left = max(0, int(np.floor(x1 - pad)))
    top = max(0, int(np.floor(y1 - pad)))
    right = min(width, int(np.ceil(x2 + pad)))
    bottom = min(height, int(np.ceil(y2 + pad)))
    region = image[top:bottom, left:right]
    if region.size == 0:
        region = image
    longest = max(region.shape[0], region.shape[1])
    if longest > max_side:
        scale = max_side / longest
        size = (max(1, round(region.shape[1] * scale)), max(1, round(region.shape[0] * scale)))
        return np.asarray(cv2.resize(region, size, interpolation=cv2.INTER_AREA), np.uint8)
    return region
