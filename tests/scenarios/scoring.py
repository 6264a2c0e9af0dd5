"""Scores what the system said about scenarios against their truth: episode recall and precision, false alarms,
TTC error, LLM coverage of episodes.

The system names road users by track id; the scripted backend knows which user each box of a frame was, so each
(frame, track id) maps to a true user exactly, whatever the tracker did (id switches included).

- A flag: in one frame, the system says a pair is dangerous — a provisional alert naming the pair, or a group
  conflict of the pair that passes the task generator's conflict trigger.
- An alarm: a pair's flags with less than ALARM_GAP_S between them, merged.
- An episode is detected when a flag of its pair falls in [onset - LEAD_S, onset + 1 s]: "within 1 s of onset",
  where an earlier warning also counts: the detector predicts TTC and PET up to `conflicts.horizon_s` (5 s)
  ahead, so a PET of 0.25 s predicted 3 s before the TTC episode begins is a warning of it, not a false alarm.
- Precision: alarms that overlap [onset - LEAD_S, end + 1 s] of a true episode of their pair, or name a pair
  whose paths truly cross less than NEAR_MISS_PET_S apart (a near-miss by PET is a danger, not a false alarm),
  over all alarms.
"""

from __future__ import annotations

import collections
import statistics
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from riskwatch.v1 import events_pb2
from tests.scenarios import truth
from tests.scenarios.world import Kind, Rendering

DETECT_WITHIN_S = 1.0
LEAD_S = 5.0  # the detector's default conflicts.horizon_s
ALARM_GAP_S = 1.0
NEAR_MISS_PET_S = 1.0
TTC_SCORED_BELOW_S = 3.0

Pair = tuple[int, int]


@dataclass(frozen=True, slots=True)
class ScenarioRun:
    """One scenario instance, seen by its own camera."""

    camera_id: str
    seed: int
    rendering: Rendering
    episodes: tuple[truth.Episode, ...]
    near_miss_pairs: frozenset[Pair]  # actual PET below NEAR_MISS_PET_S

    @classmethod
    def of(cls, camera_id: str, seed: int, rendering: Rendering) -> ScenarioRun:
        scenario = rendering.scenario
        pets = {(a, b): truth.actual_pet(scenario, a, b) for a, b in truth.scored_pairs(scenario)}
        near = frozenset(pair for pair, pet in pets.items() if pet is not None and pet < NEAR_MISS_PET_S)
        return cls(camera_id, seed, rendering, tuple(truth.episodes(scenario)), near)

    @property
    def kind(self) -> Kind:
        return self.rendering.scenario.kind

    @property
    def duration_s(self) -> float:
        return self.rendering.scenario.duration_s


@dataclass(frozen=True, slots=True)
class Seen:
    """The system's event for one frame of a run, with the true user of each of its detections."""

    run: ScenarioRun
    t_s: float
    event: events_pb2.DetectionEvent
    users: tuple[int, ...]

    def user_of(self, track_id: int) -> int | None:
        for detection, user in zip(self.event.detections, self.users, strict=True):
            if detection.track_id == track_id and track_id > 0:
                return user
        return None

    def pair_of(self, conflict: events_pb2.Conflict) -> Pair | None:
        a, b = self.user_of(conflict.track_a), self.user_of(conflict.track_b)
        if a is None or b is None or a == b:
            return None
        return (min(a, b), max(a, b))


@dataclass(frozen=True, slots=True)
class Flag:
    camera_id: str
    t_s: float
    pair: Pair
    source: str  # "conflict" or "provisional"


@dataclass(frozen=True, slots=True)
class SentTask:
    """A task the task generator sent (and the simulated LLM answered), with the true pairs its group holds."""

    camera_id: str
    t_s: float
    pairs: frozenset[Pair]


def alarms(flags: Iterable[Flag]) -> list[tuple[str, Pair, float, float]]:
    """Each pair's flags merged into (camera, pair, first, last) runs with gaps under ALARM_GAP_S."""
    by_pair: dict[tuple[str, Pair], list[float]] = collections.defaultdict(list)
    for flag in flags:
        by_pair[flag.camera_id, flag.pair].append(flag.t_s)
    out = []
    for (camera, pair), times in by_pair.items():
        times.sort()
        start = previous = times[0]
        for t in times[1:]:
            if t - previous >= ALARM_GAP_S:
                out.append((camera, pair, start, previous))
                start = t
            previous = t
        out.append((camera, pair, start, previous))
    return out


def _detected(episode: truth.Episode, times: Sequence[float]) -> bool:
    return any(episode.onset_s - LEAD_S <= t <= episode.onset_s + DETECT_WITHIN_S for t in times)


def score(
    runs: Sequence[ScenarioRun], seen: Sequence[Seen], flags: Sequence[Flag], tasks: Sequence[SentTask]
) -> dict[str, Any]:
    """The bench's metrics for one frame rate (see the module docstring for the definitions)."""
    by_camera = {run.camera_id: run for run in runs}
    flag_times: dict[tuple[str, Pair], list[float]] = collections.defaultdict(list)
    for flag in flags:
        flag_times[flag.camera_id, flag.pair].append(flag.t_s)
    task_times: dict[tuple[str, Pair], list[float]] = collections.defaultdict(list)
    for task in tasks:
        for pair in task.pairs:
            task_times[task.camera_id, pair].append(task.t_s)

    episodes = [(run, e) for run in runs for e in run.episodes]
    detected = [_detected(e, flag_times[run.camera_id, (e.a, e.b)]) for run, e in episodes]
    asked = [_detected(e, task_times[run.camera_id, (e.a, e.b)]) for run, e in episodes]
    missed = [
        {"camera": run.camera_id, "pair": [e.a, e.b], "onset_s": round(e.onset_s, 2)}
        for (run, e), hit in zip(episodes, detected, strict=True)
        if not hit
    ]

    all_alarms = alarms(flags)
    true_alarms = 0
    safe_alarms = 0
    false_alarms: list[dict[str, Any]] = []
    for camera, pair, first, last in all_alarms:
        run = by_camera[camera]
        matches = pair in run.near_miss_pairs or any(
            (e.a, e.b) == pair and first <= e.end_s + DETECT_WITHIN_S and last >= e.onset_s - LEAD_S
            for e in run.episodes
        )
        true_alarms += matches
        safe_alarms += run.kind is Kind.SAFE
        if not matches and len(false_alarms) < 20:
            false_alarms.append(
                {"camera": camera, "pair": list(pair), "from_s": round(first, 2), "to_s": round(last, 2)}
            )
    safe_hours = sum(run.duration_s for run in runs if run.kind is Kind.SAFE) / 3600

    errors, covered, scored = _ttc_errors(seen)
    return {
        "episodes": len(episodes),
        "episode_recall": _ratio(sum(detected), len(episodes)),
        "episode_precision": _ratio(true_alarms, len(all_alarms)),
        "alarms": len(all_alarms),
        "false_alarms_per_cam_hour": round(safe_alarms / safe_hours, 1) if safe_hours else None,
        "safe_alarms": safe_alarms,
        "ttc_mae_s": round(statistics.median(errors), 3) if errors else None,
        "ttc_p90_abs_error_s": round(float(np.percentile(errors, 90)), 3) if errors else None,
        # Of the frames in which a scored pair's true TTC is under 3 s, the share where the system gave the pair a
        # TTC (on the group's conflict: a group reports only its most severe pair).
        "ttc_coverage": _ratio(covered, scored),
        "llm_episode_recall": _ratio(sum(asked), len(episodes)),
        "missed_episodes": missed[:20],
        "false_alarms": false_alarms,
    }


def _ttc_errors(seen: Sequence[Seen]) -> tuple[list[float], int, int]:
    errors: list[float] = []
    covered = scored = 0
    for frame in seen:
        scenario = frame.run.rendering.scenario
        at = np.array([frame.t_s])
        true = {(p.a, p.b): float(p.ttc_s[0]) for p in truth.truths(scenario, at)}
        measured: dict[Pair, float] = {}
        for group in frame.event.groups:
            if group.HasField("conflict") and group.conflict.HasField("ttc_s"):
                pair = frame.pair_of(group.conflict)
                if pair is not None:
                    measured[pair] = group.conflict.ttc_s
        present = set(frame.users)
        for pair, value in true.items():
            if not (value < TTC_SCORED_BELOW_S) or not set(pair) <= present:
                continue
            scored += 1
            if pair in measured:
                covered += 1
                errors.append(abs(measured[pair] - value))
    return errors, covered, scored


def _ratio(numerator: int, denominator: int) -> float | None:
    return round(numerator / denominator, 4) if denominator else None
