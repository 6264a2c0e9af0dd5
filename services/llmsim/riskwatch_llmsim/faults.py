"""Chance in the simulator: lognormal latency, which fault (if any) a request suffers, and spoiled replies."""

from __future__ import annotations

import json
import math
import random
from collections.abc import Sequence
from enum import StrEnum
from typing import Any

from .config import EffectivePolicy, InvalidJsonMode
from .verdicts import VERDICT_KEYS


class Outcome(StrEnum):
    """What happens to an admitted, well-formed request."""

    OK = "ok"
    SERVER_ERROR = "server_error"
    TIMEOUT = "timeout"
    INVALID_JSON = "invalid_json"


def draw_outcome(rng: random.Random, policy: EffectivePolicy) -> Outcome:
    """One uniform draw split into bands, so each fault's rate is exactly its probability."""
    u = rng.random()
    if u < policy.fault_5xx:
        return Outcome.SERVER_ERROR
    u -= policy.fault_5xx
    if u < policy.fault_timeout:
        return Outcome.TIMEOUT
    u -= policy.fault_timeout
    if u < policy.fault_invalid_json:
        return Outcome.INVALID_JSON
    return Outcome.OK


def sample_latency_s(rng: random.Random, median_s: float, sigma: float, max_s: float) -> float:
    """Lognormal with the given median; sigma 0.35 puts P95 at about 1.8x and P99 at about 2.3x the median."""
    if median_s <= 0:
        return 0.0
    if sigma <= 0:
        return min(median_s, max_s)
    return min(rng.lognormvariate(math.log(median_s), sigma), max_s)


def spoil_reply(rng: random.Random, verdict: dict[str, Any], modes: Sequence[InvalidJsonMode]) -> str:
    """A reply a careful client must reject (or, for FENCED, THINK and PROSE_AROUND, must unwrap) instead of the
    verdict."""
    mode = rng.choice(list(modes))
    text = json.dumps(verdict)
    if mode is InvalidJsonMode.PROSE:
        return (
            f"Looking at this scene, I would say the risk is {verdict['risk_level']}. "
            f"{verdict['description']} Let me know if you need anything else!"
        )
    if mode is InvalidJsonMode.TRUNCATED:
        return text[: max(1, len(text) // 2)]
    if mode is InvalidJsonMode.MISSING_FIELDS:
        dropped = rng.choice(VERDICT_KEYS)
        return json.dumps({key: value for key, value in verdict.items() if key != dropped})
    if mode is InvalidJsonMode.BAD_VALUES:
        return json.dumps({**verdict, "risk_level": "severe", "confidence": 1.7})
    if mode is InvalidJsonMode.THINK:
        draft = json.dumps({**verdict, "risk_level": "none"})
        thought = f"The features {{in the request}} suggest... a first guess: {draft}. No, look again."
        return f"<think>{thought}</think>\n{text}"
    if mode is InvalidJsonMode.PROSE_AROUND:
        return f"Here is my assessment {{as JSON}}:\n{text}\nLet me know if you need anything else!"
    return f"```json\n{text}\n```"
