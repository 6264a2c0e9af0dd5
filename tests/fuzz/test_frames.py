"""Frame decoding in the detector: random, corrupted and oversized images end in InvalidFrame, never a crash."""

from __future__ import annotations

import struct
import tracemalloc
from collections.abc import AsyncIterator
from pathlib import Path

import cv2
import grpc
import numpy as np
import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from riskwatch.bus import InMemoryBus
from riskwatch.errors import InvalidFrame
from riskwatch.imaging import decode_image, header_size
from riskwatch.v1 import detector_pb2, detector_pb2_grpc
from riskwatch_detector.config import DetectorConfig, DetectorSettings, GroupingConfig
from riskwatch_detector.server import create_server, set_serving
from riskwatch_detector.service import Detector
from riskwatch_detector.testing import ScriptedBackend, scene_png
from tests.fuzz.conftest import REPO
from tests.fuzz.support import fuzz_settings, mutate

VIDEO = REPO / "var" / "data" / "vtest.avi"
MAX_BYTES = 2_000_000
MAX_PIXELS = 1_000_000  # vtest.avi is 768x576 = 442 368 pixels


def _real_frame() -> np.ndarray:
    if not VIDEO.exists():
        pytest.skip(f"{VIDEO.relative_to(REPO)} is missing: run `make assets`")
    capture = cv2.VideoCapture(str(VIDEO))
    ok, frame = capture.read()
    capture.release()
    assert ok, f"cannot read a frame of {VIDEO}"
    return np.ascontiguousarray(frame, dtype=np.uint8)


def _encode(image: np.ndarray, ext: str) -> bytes:
    ok, buffer = cv2.imencode(ext, image)
    assert ok
    return bytes(buffer.tobytes())


@pytest.fixture(scope="module")
def real_jpeg() -> bytes:
    return _encode(_real_frame(), ".jpg")


@pytest.fixture(scope="module")
def real_png() -> bytes:
    return _encode(_real_frame()[:240, :320], ".png")


def decode(data: bytes) -> np.ndarray | None:
    """decode_image with the fuzz limits; None for InvalidFrame (after checking its message), any other error fails."""
    try:
        image = decode_image(data, max_bytes=MAX_BYTES, max_pixels=MAX_PIXELS)
    except InvalidFrame as exc:
        message = str(exc)
        assert message.startswith("image "), f"unclear message: {message!r}"
        return None
    assert image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3
    assert 0 < image.shape[0] * image.shape[1] <= MAX_PIXELS
    return image


@fuzz_settings(examples=200)
@given(data=st.binary(max_size=4096))
@example(data=b"")
@example(data=b"\xff\xd8")
@example(data=b"\xff\xd8\xff\xc0\x00\x11\x08")
@example(data=b"\x89PNG\r\n\x1a\n")
@example(data=b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\xff\xff\xff\xff\xff\xff\xff\xff")
def test_random_bytes_are_invalid_frames(data: bytes) -> None:
    decode(data)


@fuzz_settings(examples=100)
@given(
    prefix=st.sampled_from([b"\xff\xd8", b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n", b"GIF89a", b"BM", b"RIFF", b"II*\x00"]),
    rest=st.binary(max_size=2048),
)
def test_random_bytes_behind_a_known_magic_are_invalid_frames(prefix: bytes, rest: bytes) -> None:
    decode(prefix + rest)


@fuzz_settings(examples=150)
@given(data=st.data())
def test_corrupted_real_jpegs_decode_or_are_invalid_frames(real_jpeg: bytes, data: st.DataObject) -> None:
    decode(mutate(real_jpeg, data.draw))


@fuzz_settings(examples=100)
@given(data=st.data())
def test_corrupted_real_pngs_decode_or_are_invalid_frames(real_png: bytes, data: st.DataObject) -> None:
    decode(mutate(real_png, data.draw))


@fuzz_settings(examples=60)
@given(cut=st.integers(min_value=0, max_value=10_000))
def test_truncated_real_jpegs_decode_or_are_invalid_frames(real_jpeg: bytes, cut: int) -> None:
    decode(real_jpeg[: len(real_jpeg) * cut // 10_000])


def _with_jpeg_size(jpeg: bytes, width: int, height: int) -> bytes:
    """`jpeg` with its SOF header declaring width x height (the scan data is left as it is)."""
    i = 2
    while i < len(jpeg):
        marker, length = jpeg[i + 1], struct.unpack(">H", jpeg[i + 2 : i + 4])[0]
        if 0xC0 <= marker <= 0xC2:
            return jpeg[: i + 5] + struct.pack(">HH", height, width) + jpeg[i + 9 :]
        i += 2 + length
    raise AssertionError("no SOF marker in the sample JPEG")


def _with_png_size(png: bytes, width: int, height: int) -> bytes:
    return png[:16] + struct.pack(">II", width, height) + png[24:]


@fuzz_settings(examples=100)
@given(width=st.integers(0, 65535), height=st.integers(0, 65535))
@example(width=65535, height=65535)
@example(width=0, height=576)
def test_jpeg_declaring_any_size_is_checked_before_decoding(real_jpeg: bytes, width: int, height: int) -> None:
    data = _with_jpeg_size(real_jpeg, width, height)
    assert header_size(data) == (width, height)
    if width == 0 or height == 0 or width * height > MAX_PIXELS:
        with pytest.raises(InvalidFrame, match=r"empty image|pixels, over the limit"):
            decode_image(data, max_bytes=MAX_BYTES, max_pixels=MAX_PIXELS)
    else:
        decode(data)


@fuzz_settings(examples=100)
@given(width=st.integers(0, 2**32 - 1), height=st.integers(0, 2**32 - 1))
@example(width=2**32 - 1, height=2**32 - 1)
@example(width=2**31, height=1)
def test_png_declaring_any_size_is_checked_before_decoding(real_png: bytes, width: int, height: int) -> None:
    data = _with_png_size(real_png, width, height)
    assert header_size(data) == (width, height)
    if width == 0 or height == 0 or width * height > MAX_PIXELS:
        with pytest.raises(InvalidFrame, match=r"empty image|pixels, over the limit"):
            decode_image(data, max_bytes=MAX_BYTES, max_pixels=MAX_PIXELS)
    else:
        decode(data)  # a wrong size in IHDR fails libpng's CRC check, or decodes


def _png_chunk_offsets(png: bytes) -> list[int]:
    offsets, position = [], 8
    while position + 8 <= len(png):
        offsets.append(position)
        position += 12 + struct.unpack(">I", png[position : position + 4])[0]
    return offsets


@fuzz_settings(examples=100)
@given(data=st.data(), length=st.integers(0, 2**32 - 1))
@example(data=None, length=0xFC000084)  # `make fuzz`: a 4 GB IDAT in 78 bytes took 4 GB of memory in OpenCV
def test_png_chunk_declaring_any_length_is_checked_before_decoding(
    real_png: bytes, data: st.DataObject | None, length: int
) -> None:
    offsets = _png_chunk_offsets(real_png)
    at = offsets[1] if data is None else data.draw(st.sampled_from(offsets), label="chunk")
    png = real_png[:at] + struct.pack(">I", length) + real_png[at + 4 :]
    if length > len(png) - at - 12:
        with pytest.raises(InvalidFrame, match=r"malformed PNG: PNG chunk .* declares \d+ bytes, but only"):
            decode_image(png, max_bytes=MAX_BYTES, max_pixels=MAX_PIXELS)
    else:
        decode(png)


def test_empty_and_oversized_byte_strings_are_invalid_frames(real_jpeg: bytes) -> None:
    with pytest.raises(InvalidFrame, match="empty"):
        decode_image(b"", max_bytes=MAX_BYTES, max_pixels=MAX_PIXELS)
    with pytest.raises(InvalidFrame, match="over the limit of 1000 bytes"):
        decode_image(real_jpeg, max_bytes=1000, max_pixels=MAX_PIXELS)


@pytest.mark.parametrize("ext", [".webp", ".tiff", ".bmp", ".ppm"])
def test_an_oversized_image_of_any_format_is_refused_before_it_is_decoded(ext: str) -> None:
    data = _encode(np.zeros((2000, 2000, 3), np.uint8), ext)  # 4 Mpx, 12 MB decoded
    tracemalloc.start()
    try:
        with pytest.raises(InvalidFrame):
            decode_image(data, max_bytes=len(data) + 1, max_pixels=MAX_PIXELS)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 3 * MAX_PIXELS, f"{ext}: {peak / 1e6:.0f} MB allocated to refuse a 4 Mpx image"


# --- over gRPC ---------------------------------------------------------------------------------


@pytest.fixture
async def detector_stub(tmp_path: Path) -> AsyncIterator[detector_pb2_grpc.DetectorServiceStub]:
    config = DetectorConfig(
        model_path=tmp_path / "scripted.onnx",
        grouping=GroupingConfig(),
        input_size=64,
        max_image_bytes=MAX_BYTES,
        max_image_pixels=MAX_PIXELS,
    )
    detector = Detector(config, ScriptedBackend({1: [(100, 100, 300, 400, 0)]}), InMemoryBus(), "detection-results")
    await detector.start()
    server, port = create_server(DetectorSettings(detector=config), detector, port=0)
    await server.start()
    await set_serving(server, True)
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    try:
        yield detector_pb2_grpc.DetectorServiceStub(channel)
    finally:
        await channel.close()
        await server.stop(1)
        await detector.stop()


def _request(frame_id: int, image: bytes) -> detector_pb2.DetectRequest:
    return detector_pb2.DetectRequest(frame=detector_pb2.Frame(camera_id="fuzz", frame_id=frame_id, image=image))


_frame_ids = iter(range(1, 10**9))


@fuzz_settings(examples=15, long=150)
@given(data=st.data())
async def test_fuzzed_images_over_grpc_get_invalid_argument_and_a_good_frame_still_works(
    detector_stub: detector_pb2_grpc.DetectorServiceStub, real_jpeg: bytes, data: st.DataObject
) -> None:
    good = scene_png(1, 320, 240)
    images = data.draw(
        st.lists(
            st.binary(max_size=512)
            | st.integers(0, len(real_jpeg) - 1).map(lambda n: real_jpeg[:n])
            | st.just(b"")
            | st.just(_with_png_size(good, 60000, 60000)),
            min_size=1,
            max_size=4,
        )
    )
    images.append(mutate(good, data.draw))
    for image in images:
        try:
            reply = await detector_stub.Detect(_request(next(_frame_ids), image))
        except grpc.aio.AioRpcError as exc:
            assert exc.code() == grpc.StatusCode.INVALID_ARGUMENT, (exc.code(), exc.details())
            assert (exc.details() or "").startswith("image "), exc.details()
        else:
            assert reply.event.camera_id == "fuzz"  # the mutation left a decodable image
    reply = await detector_stub.Detect(_request(next(_frame_ids), good))
    assert [d.class_name for d in reply.event.detections] == ["person"]
