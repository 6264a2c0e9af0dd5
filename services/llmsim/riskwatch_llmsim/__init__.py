"""OpenAI-compatible vision-LLM simulator: the test double for the LLM scheduler, demo and benchmarks."""

from riskwatch.domain import FeatureError, PromptFeatures

from .config import ConfigPatchError, InvalidJsonMode, KeyPolicy, SimulatorConfig, apply_patch
from .server import RunningSimulator, Simulator, create_app, start_simulator
from .verdicts import Verdict, assess, parse_features, verdict_for

__all__ = [
    "ConfigPatchError",
    "FeatureError",
    "InvalidJsonMode",
    "KeyPolicy",
    "PromptFeatures",
    "RunningSimulator",
    "Simulator",
    "SimulatorConfig",
    "Verdict",
    "apply_patch",
    "assess",
    "create_app",
    "parse_features",
    "start_simulator",
    "verdict_for",
]
