"""Group clustering: link objects whose boxes are close relative to their size, then give groups stable ids."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from riskwatch.domain import GroupFeatures
from riskwatch_detector.config import CategoryName, GroupingConfig

FloatArray = npt.NDArray[np.float64]

_CATEGORY_ORDER = tuple(CategoryName)


@dataclass(frozen=True, slots=True)
class Cluster:
    """Indices (into the frame's objects) of one group's members, its enclosing box and its features."""

    members: tuple[int, ...]
    box: tuple[float, float, float, float]
    features: GroupFeatures


def box_sizes(boxes: FloatArray) -> FloatArray:
    """Each box's characteristic size: the square root of its area."""
    widths = np.maximum(boxes[:, 2] - boxes[:, 0], 0.0)
    heights = np.maximum(boxes[:, 3] - boxes[:, 1], 0.0)
    return np.asarray(np.sqrt(widths * heights), np.float64)


def normalised_gaps(boxes: npt.ArrayLike) -> FloatArray:
    """(N, N): edge-to-edge distance between boxes (0 when they overlap) divided by the pair's mean size.

    Dividing by size makes the measure independent of the image resolution and of the distance to the camera.
    """
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    x1, y1, x2, y2 = (boxes[:, i] for i in range(4))
    gap_x = np.maximum(0.0, np.maximum(x1[:, None], x1[None, :]) - np.minimum(x2[:, None], x2[None, :]))
    gap_y = np.maximum(0.0, np.maximum(y1[:, None], y1[None, :]) - np.minimum(y2[:, None], y2[None, :]))
    sizes = box_sizes(boxes)
    scale = (sizes[:, None] + sizes[None, :]) / 2
    with np.errstate(divide="ignore", invalid="ignore"):
        gaps = np.hypot(gap_x, gap_y) / scale
    # Degenerate (zero-area) boxes: touching counts as 0, anything else as infinitely far.
    gaps = np.where(scale > 0, gaps, np.where(np.hypot(gap_x, gap_y) > 0, np.inf, 0.0))
    return np.asarray(gaps, np.float64)


def _threshold_matrix(categories: Sequence[CategoryName], config: GroupingConfig) -> FloatArray:
    table = np.full((len(_CATEGORY_ORDER), len(_CATEGORY_ORDER)), -np.inf)
    for i, a in enumerate(_CATEGORY_ORDER):
        for j, b in enumerate(_CATEGORY_ORDER):
            threshold = config.threshold(a, b)
            if threshold is not None:
                table[i, j] = threshold
    codes = np.array([_CATEGORY_ORDER.index(c) for c in categories], np.int64)
    return np.asarray(table[codes[:, None], codes[None, :]], np.float64)


def cluster(
    boxes: npt.ArrayLike,
    categories: Sequence[CategoryName],
    config: GroupingConfig,
    links: npt.ArrayLike = (),
) -> list[Cluster]:
    """Connected components of the "close enough for this category pair" graph, at least `min_group_size` big.

    `links` (K, 2) are pairs of object indices joined however far apart (pairs in conflict). Components do not
    depend on the order of the objects; groups are returned ordered by their smallest member.
    """
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    count = len(boxes)
    if count == 0 or count < config.min_group_size:
        return []
    gaps = normalised_gaps(boxes)
    linked = gaps <= _threshold_matrix(categories, config)
    extra = np.asarray(links, np.int64).reshape(-1, 2)
    if len(extra):
        if extra.min() < 0 or extra.max() >= count:
            raise ValueError(f"links must index the {count} objects")
        linked[extra[:, 0], extra[:, 1]] = linked[extra[:, 1], extra[:, 0]] = True
    labels = _components(linked)
    clusters = []
    for label in np.unique(labels):
        members = np.flatnonzero(labels == label)
        if len(members) < config.min_group_size:
            continue
        clusters.append(_make_cluster(boxes, categories, gaps, members))
    clusters.sort(key=lambda c: c.members[0])
    return clusters


def _components(linked: npt.NDArray[np.bool_]) -> npt.NDArray[np.int64]:
    """Connected-component label of each node of a symmetric adjacency matrix (union–find)."""
    parent = list(range(len(linked)))

    def root(node: int) -> int:
        while parent[node] != node:
            parent[node] = parent[parent[node]]
            node = parent[node]
        return node

    for i, j in np.argwhere(np.triu(linked, k=1)):
        a, b = root(int(i)), root(int(j))
        if a != b:
            parent[max(a, b)] = min(a, b)
    return np.array([root(i) for i in range(len(parent))], np.int64)


def _make_cluster(
    boxes: FloatArray, categories: Sequence[CategoryName], gaps: FloatArray, members: npt.NDArray[np.int64]
) -> Cluster:
    member_boxes = boxes[members]
    box = (
        float(member_boxes[:, 0].min()),
        float(member_boxes[:, 1].min()),
        float(member_boxes[:, 2].max()),
        float(member_boxes[:, 3].max()),
    )
    return Cluster(
        members=tuple(int(m) for m in members),
        box=box,
        features=group_features(member_boxes, [categories[m] for m in members], gaps[np.ix_(members, members)], box),
    )


def group_features(
    boxes: FloatArray,
    categories: Sequence[CategoryName],
    gaps: FloatArray,
    box: tuple[float, float, float, float],
) -> GroupFeatures:
    """Counts by category, smallest pedestrian–vehicle gap, smallest gap overall, members per normalised area."""
    counts = {c: 0 for c in CategoryName}
    for category in categories:
        counts[category] += 1
    pedestrians = np.array([c is CategoryName.PEDESTRIAN for c in categories])
    vehicles = np.array([c is CategoryName.VEHICLE for c in categories])
    min_ped_vehicle = float(gaps[np.ix_(pedestrians, vehicles)].min()) if pedestrians.any() and vehicles.any() else None
    min_spacing = None
    if len(categories) > 1:
        off_diagonal = gaps[~np.eye(len(categories), dtype=bool)]
        min_spacing = float(off_diagonal.min())
    mean_size = float(box_sizes(boxes).mean())
    area = (box[2] - box[0]) * (box[3] - box[1])
    normalised_area = area / (mean_size * mean_size) if mean_size > 0 else 0.0
    density = len(categories) / normalised_area if normalised_area > 0 else float(len(categories))
    return GroupFeatures(
        vehicles=counts[CategoryName.VEHICLE],
        pedestrians=counts[CategoryName.PEDESTRIAN],
        two_wheelers=counts[CategoryName.TWO_WHEELER],
        others=counts[CategoryName.OTHER],
        min_ped_vehicle_distance=min_ped_vehicle,
        density=density,
        min_spacing=min_spacing,
    )


@dataclass(slots=True)
class _KnownGroup:
    members: frozenset[int]
    last_frame: int


class GroupIdentity:
    """Stable group ids for one camera: a group inherits the id of the previous group it shares most members with."""

    def __init__(self, config: GroupingConfig, id_prefix: str = "g") -> None:
        self._config = config
        self._prefix = id_prefix
        self._known: dict[str, _KnownGroup] = {}
        self._next = 1
        self._frame = 0

    def assign(self, groups: Sequence[frozenset[int]]) -> list[str]:
        """One id per group (groups given as member track ids), in order."""
        self._frame += 1
        candidates: list[tuple[float, str, int]] = []
        for index, members in enumerate(groups):
            for group_id, known in self._known.items():
                shared = len(members & known.members)
                if shared:
                    jaccard = shared / len(members | known.members)
                    if jaccard >= self._config.min_overlap:
                        candidates.append((jaccard, group_id, index))
        # Best overlap first; ties go to the older id, then the earlier group, so the result is deterministic.
        candidates.sort(key=lambda c: (-c[0], self._age_key(c[1]), c[2]))
        ids: list[str | None] = [None] * len(groups)
        taken: set[str] = set()
        for _, group_id, index in candidates:
            if ids[index] is None and group_id not in taken:
                ids[index] = group_id
                taken.add(group_id)
        result: list[str] = []
        for index, members in enumerate(groups):
            assigned = ids[index]
            if assigned is None:
                assigned = f"{self._prefix}{self._next}"
                self._next += 1
            self._known[assigned] = _KnownGroup(members, self._frame)
            result.append(assigned)
        memory = self._config.id_memory_frames
        self._known = {k: v for k, v in self._known.items() if self._frame - v.last_frame <= memory}
        return result

    def _age_key(self, group_id: str) -> int:
        tail = group_id[len(self._prefix) :]
        return int(tail) if tail.isdigit() else 0
