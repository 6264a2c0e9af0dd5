"""The domain vocabulary every service and the simulator share: risk levels and types, group features, failures, ids.

One module per concept, each with its conversions to and from the proto enums and messages (`riskwatch.v1`) and the
JSON forms on the wire, so a service never spells a level, a feature or a failure kind itself.
"""

from riskwatch.domain.calibration import Calibration, CalibrationError
from riskwatch.domain.cameras import (
    CAMERA_ID_PATTERN,
    CameraId,
    check_camera_id,
    is_valid_camera_id,
    loggable_camera_id,
)
from riskwatch.domain.conflicts import Conflict, ConflictKind, Movers, PairMeasures, measure_pairs
from riskwatch.domain.failures import FailureKind
from riskwatch.domain.features import FeatureError, GroupFeatures, MemberMotion, PromptFeatures
from riskwatch.domain.risk import RISK_TYPES, VERDICT_LEVELS, RiskLevel

__all__ = [
    "CAMERA_ID_PATTERN",
    "RISK_TYPES",
    "VERDICT_LEVELS",
    "Calibration",
    "CalibrationError",
    "CameraId",
    "Conflict",
    "ConflictKind",
    "FailureKind",
    "FeatureError",
    "GroupFeatures",
    "MemberMotion",
    "Movers",
    "PairMeasures",
    "PromptFeatures",
    "RiskLevel",
    "check_camera_id",
    "is_valid_camera_id",
    "loggable_camera_id",
    "measure_pairs",
]
