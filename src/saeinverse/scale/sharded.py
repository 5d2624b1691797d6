"""Collection sharded by prompt range over Ray workers, merged exactly into one ``FeatureStats``.

The driver draws the prompts as the local stage does (``load_prompts``, or a token budget with
``data.n_tokens``), cuts them into consecutive shards of ``scale.shard_prompts`` and sends each
shard to a worker, which runs ``collect_activations`` on it. Shard results are merged in prompt
order with ``FeatureStats.merge`` (which shifts each shard's prompt ids by the prompts before
it), as a binary counter: the driver holds O(log shards) partial results and copies each prompt
O(log shards) times. Counts, maxima, histograms, exemplars and the prompt × feature matrix are
exactly those of one pass; sums agree to float64 rounding.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

from saeinverse.collect.stats import STATS_META, FeatureStats
from saeinverse.config import Config
from saeinverse.errors import DataError
from saeinverse.io import load_json, save_json
from saeinverse.scale.engine import (
    Unit,
    UnitStore,
    WorkerPool,
    plan_hash,
    run_units,
    split,
    worker_pool,
)
from saeinverse.scale.prompts import TokenCounter, draw_prompts

logger = logging.getLogger(__name__)

EMPTY_MARKER = "empty.json"
"""Written instead of statistics for a shard none of whose prompts holds a readable token."""


def collect_sharded(
    config: Config,
    folder: str | Path,
    prompts: Sequence[str] | None = None,
    *,
    progress: bool = True,
    on_unit: Callable[[WorkerPool, int], None] | None = None,
    count_tokens: TokenCounter | None = None,
    pool: Any = None,
) -> FeatureStats:
    """``collect_activations`` over ``prompts`` (default: the config's draw) on Ray workers, or
    on ``pool`` (the local engine's in-process pool, see ``run_units``).

    Finished shards are saved under ``<folder>/units/`` as they arrive and reused by a rerun with
    the same prompts and collection settings. With ``data.n_tokens`` and no ``prompts``, tokens
    are counted by ``count_tokens`` (``token_counter(model, config)``), else by a worker.
    """
    if pool is None:  # a local pool holds its models already
        ensure_default_sae(config)
    if prompts is None:
        if config.data.n_tokens is not None and count_tokens is None:
            count_tokens = _worker_counter(config, pool)
        prompts = draw_prompts(config, count_tokens)
    prompts = list(prompts)
    if not prompts:
        raise DataError("collection got no prompts")
    shards = split(prompts, config.scale.shard_prompts)
    units = [Unit(i, len(s), (s,)) for i, s in enumerate(shards)]
    plan = _plan(config, prompts, getattr(pool, "identity", None))
    store = UnitStore(folder, plan, "shard", STATS_META, _save_shard, _load_shard)
    results = run_units(
        config, store, units, "collect",
        desc="collect", unit_name="prompt", progress=progress, on_unit=on_unit, pool=pool,
    )  # fmt: skip
    stats = merge_in_order(r for r in results if r is not None)
    if stats is None:
        raise DataError(f"none of the {len(prompts)} prompts holds a token after the start token")
    logger.info(
        "collected %d tokens over %d prompts in %d shards%s",
        stats.n_tokens, stats.n_prompts, len(shards), " on Ray" if pool is None else "",
    )  # fmt: skip
    return stats


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


def ensure_default_sae(config: Config) -> None:
    """Train the default SAE on the driver when it is used and not cached yet.

    Workers must find it; several workers training it at once would each do the work.
    """
    from saeinverse.models.from_config import default_sae_path, train_default_sae

    if config.sae.release or config.sae.path:
        return
    if not (default_sae_path(config) / "cfg.json").exists():
        logger.info("training the default SAE once on the driver before starting workers")
        train_default_sae(config)


def _worker_counter(config: Config, pool: Any = None) -> TokenCounter:
    def count(prompts):
        return (pool or worker_pool(config)).call("count_tokens", list(prompts), config)

    return count


def _plan(config: Config, prompts: Sequence[str], identity: object = None) -> str:
    from saeinverse.models.from_config import sae_identity

    digest = hashlib.sha256()
    for prompt in prompts:
        digest.update(prompt.encode())
        digest.update(b"\0")
    data = {
        k: v for k, v in config.data.to_dict().items() if k not in ("filtering", "use_cached_data")
    }
    return plan_hash(
        "collect",
        data,
        config.data.filtering.positional_window,
        config.model.to_dict(),
        sae_identity(config),
        config.hardware.dtype,
        config.scale.shard_prompts,
        digest.hexdigest(),
        identity,
    )


def _save_shard(path: Path, stats: FeatureStats | None) -> None:
    if stats is None:
        save_json(path / EMPTY_MARKER, {"empty": True})
        save_json(path / STATS_META, {"empty": True})
    else:
        stats.save(path)


def _load_shard(path: Path) -> FeatureStats | None:
    if (path / EMPTY_MARKER).exists() and load_json(path / STATS_META).get("empty"):
        return None
    return FeatureStats.load(path)
