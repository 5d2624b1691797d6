"""How many tokens a feature's search needs: more than ``length`` when its exemplars need context.

Some features fire only after a long context: the default run's feature 838 fires on the space
before an item number in an indented list, and its exemplar windows cut to 12 tokens never fire
(neither does any 12-token soft prompt). Searching such a feature at ``length`` tokens can only
report "no prompt fires". ``search_length`` probes it instead: when none of its exemplar windows
fires at ``length`` tokens, its exemplars' contexts (the tokens before each peak, up to
``max_length``) are cut to 2x, 4x, ... ``length`` tokens, and the search runs at the shortest
length at which one fires, with those cut contexts as its exemplar windows. The probe is a
forward to the hook of each window tried, counted in the feature's budget. A lengthened search
gets the same compute as any other feature (``config_at``): ``max_sequences`` counts
sequence-equivalents of the length searched (``invert.cost``), so it is scaled by ``(length +
start) / (searched + start)``, and raised to the least the search can run on where that is
more. It reads nothing but the feature's own exemplars, so a feature gets the same length alone
or in a batch.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from saeinverse.config import OptimizationConfig, update_config
from saeinverse.invert.budget import minimum_sequences
from saeinverse.invert.cost import Cost
from saeinverse.invert.objective import FeatureTarget


@dataclass(frozen=True)
class SearchLength:
    """Where one feature's search runs: its prompt length, exemplar windows and probe cost."""

    length: int
    windows: list[list[int]]
    """Its exemplar windows of ``length`` tokens, strongest exemplar first."""
    spent: float
    """Sequence-equivalents (of ``length`` tokens) the probe forwards cost."""


def lengths_to_try(length: int, max_length: int) -> list[int]:
    """``2 x length``, ``4 x length``, ... below ``max_length``, then ``max_length`` itself."""
    out, n = [], 2 * length
    while n < max_length:
        out.append(n)
        n *= 2
    return out + ([max_length] if max_length > length else [])


def _fires(target: FeatureTarget, feature_id: int, rows: Sequence[Sequence[int]]) -> bool:
    ids = torch.tensor([list(r) for r in rows], dtype=torch.long, device=target.device)
    fids = torch.full((len(rows),), int(feature_id), device=target.device)
    return bool((target.read_ids(ids, fids).activation > 0).any())


def search_length(
    target: FeatureTarget,
    feature_id: int,
    windows: Sequence[Sequence[int]],
    contexts: Sequence[Sequence[int]],
    length: int,
    max_length: int,
) -> SearchLength:
    """``length`` and ``windows`` when one of the windows fires (or there is nothing to probe),
    else the shortest of ``lengths_to_try`` at which one of ``contexts`` cut to it fires."""
    windows = [list(w) for w in windows]
    if max_length <= length or not contexts:
        return SearchLength(length, windows, 0.0)
    offset = target.start_offset
    tokens = 0
    if windows:
        tokens += len(windows) * (length + offset)
        if _fires(target, feature_id, windows):
            return SearchLength(length, windows, tokens / (length + offset))
    for n in lengths_to_try(length, max_length):
        cut = [list(c[-n:]) for c in contexts if len(c) >= n]
        if not cut:
            break
        tokens += len(cut) * (n + offset)
        if _fires(target, feature_id, cut):
            return SearchLength(n, cut, tokens / (n + offset))
    return SearchLength(length, windows, tokens / (length + offset))


def config_at(s: OptimizationConfig, length: int, target: FeatureTarget) -> OptimizationConfig:
    """``s`` for a search at ``length`` tokens with the token-layers ``s`` gives a feature at
    ``s.length`` (or the least the search runs on, where that is more)."""
    if length == s.length:
        return s
    longer = update_config(s, {"length": length})
    if s.max_sequences is None:
        return longer
    o = target.start_offset
    scaled = math.ceil(s.max_sequences * (s.length + o) / (length + o))
    least = minimum_sequences(longer, Cost.of(target, length))
    return update_config(longer, {"max_sequences": max(scaled, least)})
