"""Collection over a pool: prompts in consecutive shards, merged exactly into one ``FeatureStats``.

``collect_prompts`` cuts the prompts into shards of ``shard_prompts``, runs
``collect_activations`` on each shard (``collect_shard``, on the pool's models) and merges the
shard results in prompt order with ``FeatureStats.merge`` (which shifts each shard's prompt ids by
the prompts before it), as a binary counter: O(log shards) partial results are held and each
prompt is copied O(log shards) times. Counts, maxima, histograms, exemplars and the prompt ×
feature matrix equal one pass; the float64 sums agree to rounding (bit-equal with one shard).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from pathlib import Path

from saeinverse.artifacts import STATS_FILE
from saeinverse.collect.activations import collect_activations
from saeinverse.collect.stats import FeatureStats
from saeinverse.config import DataConfig
from saeinverse.errors import DataError
from saeinverse.io import load_json, save_json
from saeinverse.units import Checkpoints, Models, Pool, Unit, run_units, split

logger = logging.getLogger(__name__)

EMPTY_MARKER = "empty.json"
"""Written instead of statistics for a shard none of whose prompts holds a readable token."""


def collect_prompts(
    pool: Pool,
    prompts: Sequence[str],
    data_cfg: DataConfig,
    *,
    seed: int,
    shard_prompts: int,
    checkpoints: Checkpoints | None = None,
    progress: bool = True,
) -> FeatureStats:
    """``collect_activations`` over ``prompts``, shard by shard on ``pool``, merged in order."""
    prompts = list(prompts)
    if not prompts:
        raise DataError("collection got no prompts")
    units = [Unit(i, len(s), (s,)) for i, s in enumerate(split(prompts, shard_prompts))]
    store = None
    if checkpoints is not None:
        store = checkpoints.store("shard", units, STATS_FILE, _save_shard, _load_shard)
    results = run_units(
        pool, collect_shard, units, store=store, shared=(data_cfg, int(seed)),
        desc="collect", unit_name="prompt", progress=progress,
    )  # fmt: skip
    stats = merge_in_order(r for r in results if r is not None)
    if stats is None:
        raise DataError(f"none of the {len(prompts)} prompts holds a token after the start token")
    logger.info(
        "collected %d tokens over %d prompts in %d shards",
        stats.n_tokens, stats.n_prompts, len(units),
    )  # fmt: skip
    return stats


def collect_shard(
    models: Models, prompts: Sequence[str], data_cfg: DataConfig, seed: int
) -> FeatureStats | None:
    """One shard's ``FeatureStats`` (shard-local prompt ids), or None when none of its prompts
    holds a token after the start token."""
    try:
        return collect_activations(
            models.model, models.sae, prompts, data_cfg, seed=seed, progress=False
        )
    except DataError as err:
        logger.warning("a shard of %d prompts is empty after tokenizing: %s", len(prompts), err)
        return None


def merge_in_order(parts: Iterable[FeatureStats]) -> FeatureStats | None:
    """``parts[0].merge(parts[1]).merge(...)`` as a binary counter (balanced, order kept)."""
    stack: list[tuple[int, FeatureStats]] = []
    for part in parts:
        level, merged = 0, part
        while stack and stack[-1][0] == level:
            _, left = stack.pop()
            merged, level = left.merge(merged), level + 1
        stack.append((level, merged))
    if not stack:
        return None
    result = stack.pop()[1]
    while stack:
        result = stack.pop()[1].merge(result)
    return result


def _save_shard(path: Path, stats: FeatureStats | None) -> None:
    if stats is None:
        save_json(path / EMPTY_MARKER, {"empty": True})
        save_json(path / STATS_FILE, {"empty": True})
    else:
        stats.save(path)


def _load_shard(path: Path) -> FeatureStats | None:
    if (path / EMPTY_MARKER).exists() and load_json(path / STATS_FILE).get("empty"):
        return None
    return FeatureStats.load(path)
