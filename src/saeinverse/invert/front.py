"""The front: a feature's non-dominated prompts by (activation up, cross-entropy down)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


@dataclass
class ParetoPoint:
    """A hard prompt on a feature's (activation up, cross-entropy down) front."""

    ids: list[int]
    activation: float
    cross_entropy: float


def update_pareto(
    points: list[ParetoPoint],
    new: Sequence[ParetoPoint],
    size: int,
    keep: Sequence[list[int]] = (),
) -> list[ParetoPoint]:
    """Non-dominated points (higher activation, lower cross-entropy), about ``size`` of them.

    Only firing points (activation > 0) enter. A longer front is thinned evenly along its
    cross-entropy order, always keeping both ends and any point whose ids are in ``keep``.
    """
    pool = {tuple(p.ids): p for p in [*points, *new] if p.activation > 0}
    front: list[ParetoPoint] = []
    for point in sorted(pool.values(), key=lambda p: (p.cross_entropy, -p.activation)):
        if not front or point.activation > front[-1].activation:
            front.append(point)
    if len(front) > size:
        kept = {tuple(k) for k in keep}
        chosen = {i for i, p in enumerate(front) if tuple(p.ids) in kept}
        spread = max(2, size - len(chosen))
        chosen |= {round(i * (len(front) - 1) / (spread - 1)) for i in range(spread)}
        front = [p for i, p in enumerate(front) if i in chosen]
    return front


def best_within(points: Sequence[ParetoPoint], levels: Sequence[float]) -> list[list[int]]:
    """The ids of the most active firing point at or below each cross-entropy in ``levels``
    (what a thinned front must keep: the headline's and the bench's points)."""
    kept = []
    for level in levels:
        within = [p for p in points if p.cross_entropy <= level and p.activation > 0]
        if within:
            kept.append(max(within, key=lambda p: p.activation).ids)
    return kept


def spread(items: Sequence, size: int) -> list:
    """At most ``size`` items evenly spaced along the sequence, the last one always kept."""
    if len(items) <= size:
        return list(items)
    step = (len(items) - 1) / max(1, size - 1)
    return [items[round(i * step)] for i in range(size)]
