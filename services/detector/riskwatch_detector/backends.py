"""Inference backends behind one interface: ONNX Runtime (the serving default) and ultralytics (.pt models)."""

from __future__ import annotations

import ast
import importlib
import logging
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import cv2
import numpy as np
import numpy.typing as npt
import onnxruntime as ort

from riskwatch.errors import ConfigError
from riskwatch.imaging import Image
from riskwatch_detector.config import BackendName, DetectorConfig, OnnxOptions

log = logging.getLogger(__name__)

FloatArray = npt.NDArray[np.float32]
IntArray = npt.NDArray[np.int64]


@dataclass(frozen=True, slots=True)
class RawDetections:
    """One image's model output after NMS, boxes in pixels of the original image."""

    boxes: FloatArray  # (N, 4) x1, y1, x2, y2
    scores: FloatArray  # (N,)
    class_ids: IntArray  # (N,)

    def __len__(self) -> int:
        return len(self.scores)

    @staticmethod
    def empty() -> RawDetections:
        return RawDetections(np.zeros((0, 4), np.float32), np.zeros((0,), np.float32), np.zeros((0,), np.int64))


class Backend(Protocol):
    """Runs the model on a batch of BGR images; thread-confined to the detector's inference thread."""

    @property
    def class_names(self) -> Mapping[int, str]: ...

    @property
    def max_batch_size(self) -> int | None:
        """The largest batch one call handles natively (None: any); bigger batches are split."""

    def infer(self, images: Sequence[Image]) -> list[RawDetections]: ...

    def close(self) -> None: ...


def create_backend(config: DetectorConfig) -> Backend:
    """The backend the configuration names, with the model loaded (ConfigError when the file is missing)."""
    if not config.model_path.exists() and config.model_path.suffix != ".yaml":
        raise ConfigError(
            f"detector.model_path: {config.model_path} does not exist (run `make models` to fetch and export it)"
        )
    if config.backend is BackendName.ONNX:
        return OnnxBackend(config)
    return UltralyticsBackend(config)


# --- ONNX Runtime -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Letterbox:
    """How an image was fitted into the square model input: scale, then padding."""

    scale: float
    pad_x: float
    pad_y: float


def letterbox(image: Image, size: int, out: FloatArray) -> Letterbox:
    """Resize keeping the aspect ratio, pad with grey to `size`×`size`, write RGB CHW floats in [0, 1] to `out`."""
    height, width = image.shape[:2]
    scale = min(size / height, size / width)
    new_w, new_h = round(width * scale), round(height * scale)
    resized = image
    if (new_w, new_h) != (width, height):
        resized = np.asarray(cv2.resize(image, (new_w, new_h), interpolation=cv2.INTER_LINEAR), np.uint8)
    pad_x, pad_y = (size - new_w) / 2, (size - new_h) / 2
    top, left = round(pad_y - 0.1), round(pad_x - 0.1)
    canvas = np.full((size, size, 3), 114, np.uint8)
    canvas[top : top + new_h, left : left + new_w] = resized
    # BGR→RGB and HWC→CHW in one copy.
    np.multiply(canvas[:, :, ::-1].transpose(2, 0, 1), 1 / 255.0, out=out, casting="unsafe")
    return Letterbox(scale, float(left), float(top))


def postprocess(
    output: FloatArray,
    box: Letterbox,
    image_shape: tuple[int, int],
    *,
    conf: float,
    iou: float,
    max_detections: int,
) -> RawDetections:
    """YOLOv8/11 head output (4 + classes, anchors) → boxes after class-aware NMS, in original pixels."""
    predictions = output.T  # (anchors, 4 + classes)
    class_scores = predictions[:, 4:]
    class_ids = class_scores.argmax(axis=1)
    scores = class_scores[np.arange(len(class_ids)), class_ids]
    keep = scores >= conf
    if not keep.any():
        return RawDetections.empty()
    cxcywh, scores, class_ids = predictions[keep, :4], scores[keep], class_ids[keep]
    xywh = np.column_stack([cxcywh[:, 0] - cxcywh[:, 2] / 2, cxcywh[:, 1] - cxcywh[:, 3] / 2, cxcywh[:, 2:4]])
    picked = cv2.dnn.NMSBoxesBatched(xywh.tolist(), scores.tolist(), class_ids.tolist(), conf, iou)
    index = np.asarray(picked, dtype=np.int64).reshape(-1)
    index = index[np.argsort(-scores[index], kind="stable")][:max_detections]
    xywh, scores, class_ids = xywh[index], scores[index], class_ids[index]
    height, width = image_shape
    boxes = np.empty((len(index), 4), np.float32)
    boxes[:, 0] = (xywh[:, 0] - box.pad_x) / box.scale
    boxes[:, 1] = (xywh[:, 1] - box.pad_y) / box.scale
    boxes[:, 2] = boxes[:, 0] + xywh[:, 2] / box.scale
    boxes[:, 3] = boxes[:, 1] + xywh[:, 3] / box.scale
    np.clip(boxes[:, 0::2], 0, width, out=boxes[:, 0::2])
    np.clip(boxes[:, 1::2], 0, height, out=boxes[:, 1::2])
    return RawDetections(boxes, scores.astype(np.float32), class_ids.astype(np.int64))


def _graph_level(name: str) -> Any:
    return {
        "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
        "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
        "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
        "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
    }[name]


def onnx_session(path: Path, options: OnnxOptions) -> Any:
    """An InferenceSession with the configured graph optimisation, threads and providers."""
    session_options = ort.SessionOptions()
    session_options.graph_optimization_level = _graph_level(options.graph_optimization)
    session_options.intra_op_num_threads = options.intra_op_threads
    session_options.inter_op_num_threads = options.inter_op_threads
    session_options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    if not options.allow_spinning:
        # Idle ORT threads otherwise busy-wait, stealing the cores that decoding and tracking need.
        session_options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    available = ort.get_available_providers()
    if options.providers:
        missing = [p for p in options.providers if p not in available]
        if missing:
            raise ConfigError(f"detector.onnx.providers: {missing} not available here (available: {available})")
        providers = list(options.providers)
    else:
        preferred = ("TensorrtExecutionProvider", "CUDAExecutionProvider")
        providers = [p for p in preferred if p in available] + ["CPUExecutionProvider"]
    return ort.InferenceSession(str(path), sess_options=session_options, providers=providers)


class OnnxBackend:
    """An ultralytics ONNX export run by ONNX Runtime; class names and input shape come from the file."""

    def __init__(self, config: DetectorConfig) -> None:
        self._config = config
        self._session = onnx_session(config.model_path, config.onnx)
        meta = self._session.get_modelmeta().custom_metadata_map
        if "names" not in meta:
            raise ConfigError(
                f"detector.model_path: {config.model_path} has no class names (not an ultralytics export?)"
            )
        self._names: dict[int, str] = {int(k): str(v) for k, v in ast.literal_eval(meta["names"]).items()}
        model_input = self._session.get_inputs()[0]
        self._input_name: str = model_input.name
        batch, _, height, width = model_input.shape
        self._dtype = np.float16 if model_input.type == "tensor(float16)" else np.float32
        self._fixed_batch = batch if isinstance(batch, int) else None
        if isinstance(height, int) and (height, width) != (config.input_size, config.input_size):
            raise ConfigError(
                f"detector.input_size: {config.input_size}, but {config.model_path} has a fixed input of "
                f"{width}x{height}; set input_size: {height} or export a dynamic model (scripts/export_model.py)"
            )
        log.info(
            "ONNX model %s: classes %s, input %s, providers %s",
            config.model_path,
            self._names,
            model_input.shape,
            self._session.get_providers(),
        )

    @property
    def class_names(self) -> Mapping[int, str]:
        return self._names

    @property
    def max_batch_size(self) -> int | None:
        return self._fixed_batch

    @property
    def providers(self) -> list[str]:
        return list(self._session.get_providers())

    def infer(self, images: Sequence[Image]) -> list[RawDetections]:
        if not images:
            return []
        step = self._fixed_batch or len(images)
        results: list[RawDetections] = []
        for start in range(0, len(images), step):
            results.extend(self._infer_batch(images[start : start + step]))
        return results

    def _infer_batch(self, images: Sequence[Image]) -> list[RawDetections]:
        size = self._config.input_size
        batch = np.empty((len(images), 3, size, size), np.float32)
        boxes = [letterbox(image, size, batch[i]) for i, image in enumerate(images)]
        (output,) = self._session.run(None, {self._input_name: batch.astype(self._dtype, copy=False)})
        output = output.astype(np.float32, copy=False)
        return [
            postprocess(
                output[i],
                boxes[i],
                (image.shape[0], image.shape[1]),
                conf=self._config.conf_threshold,
                iou=self._config.iou_threshold,
                max_detections=self._config.max_detections,
            )
            for i, image in enumerate(images)
        ]

    def close(self) -> None:
        return None


# --- ultralytics ------------------------------------------------------------------------------------


def offline_ultralytics_env(config_dir: Path) -> None:
    """Keep ultralytics from touching the network or the user's home before it is imported."""
    os.environ.setdefault("YOLO_OFFLINE", "1")
    os.environ.setdefault("YOLO_AUTOINSTALL", "0")
    os.environ.setdefault("YOLO_CONFIG_DIR", str(config_dir))
    config_dir.mkdir(parents=True, exist_ok=True)


class UltralyticsBackend:
    """ultralytics' YOLO (a .pt file, or an .onnx it runs itself): the model toolkit's own predict()."""

    def __init__(self, config: DetectorConfig) -> None:
        offline_ultralytics_env(Path("var/ultralytics").resolve())
        ultralytics: Any = importlib.import_module("ultralytics")

        self._config = config
        self._model: Any = ultralytics.YOLO(str(config.model_path), task="detect")
        started = time.perf_counter()
        warm = np.zeros((64, 64, 3), np.uint8)
        self._model.predict(warm, imgsz=config.input_size, device=config.device, verbose=False)
        log.info("ultralytics model %s warmed up in %.2fs", config.model_path, time.perf_counter() - started)
        self._names = {int(k): str(v) for k, v in self._model.names.items()}

    @property
    def class_names(self) -> Mapping[int, str]:
        return self._names

    @property
    def max_batch_size(self) -> int | None:
        return None

    def infer(self, images: Sequence[Image]) -> list[RawDetections]:
        if not images:
            return []
        results: list[Any] = self._model.predict(
            list(images),
            imgsz=self._config.input_size,
            conf=self._config.conf_threshold,
            iou=self._config.iou_threshold,
            max_det=self._config.max_detections,
            device=self._config.device,
            verbose=False,
        )
        out: list[RawDetections] = []
        for result in results:
            boxes = result.boxes
            out.append(
                RawDetections(
                    boxes.xyxy.cpu().numpy().astype(np.float32),
                    boxes.conf.cpu().numpy().astype(np.float32),
                    boxes.cls.cpu().numpy().astype(np.int64),
                )
            )
        return out

    def close(self) -> None:
        return None
