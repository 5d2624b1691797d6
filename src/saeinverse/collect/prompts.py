"""The prompts a collection covers: ``data.n_prompts`` drawn at random, or a ``data.n_tokens`` budget.

With ``data.n_tokens`` (for large corpora, where a prompt count says little about the work), the
prompts are a uniform random draw (``load_prompts``, the seed) cut at the first prompt where the
collected tokens reach the budget. A prompt's collected tokens are what collection counts:
``min(its tokens with the start token, data.max_length) - first readable position``. The draw
size comes from the mean tokens per prompt of a first draw of ``TOKEN_PROBE`` prompts, with a
5% margin, and grows 1.5× until the budget is met (or the source is exhausted, with a warning).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence

from saeinverse.config import Config, update_config

logger = logging.getLogger(__name__)

COLLECTION_READS = ("data", "-data.filtering", "data.filtering.positional_window", "seed")
"""The config values collected statistics depend on, besides the models and the settings that
change only how fast collection runs (``data.batch_size``, ``data.use_cached_data``)."""

TOKEN_PROBE = 200
"""Prompts drawn first to estimate tokens per prompt for a ``data.n_tokens`` budget."""

TokenCounter = Callable[[Sequence[str]], list[int]]
"""Collected tokens of each prompt."""


def draw_prompts(config: Config, count_tokens: TokenCounter | None = None) -> list[str]:
    """The prompts for ``config.data``: ``load_prompts`` as is, or cut to ``data.n_tokens``.

    ``count_tokens`` is needed with ``data.n_tokens`` (``token_counter(model, config)``).
    """
    from saeinverse.data.sources import load_prompts

    budget = config.data.n_tokens
    if budget is None:
        return load_prompts(config.data, seed=config.seed)
    if count_tokens is None:
        raise ValueError("data.n_tokens needs a token counter (token_counter(model, config))")
    n = TOKEN_PROBE
    while True:
        data = update_config(config, {"data": {"n_prompts": n}}).data
        prompts = load_prompts(data, seed=config.seed)
        counts = count_tokens(prompts)
        total = 0
        for i, count in enumerate(counts):
            total += count
            if total >= budget:
                logger.info("data.n_tokens=%d: %d prompts, %d tokens", budget, i + 1, total)
                return prompts[: i + 1]
        if len(prompts) < n:
            logger.warning(
                "data.n_tokens=%d: the source holds only %d tokens (%d prompts)",
                budget, total, len(prompts),
            )  # fmt: skip
            return prompts
        per_prompt = max(total / max(len(prompts), 1), 1e-9)
        n = max(math.ceil(n * 1.5), math.ceil(1.05 * budget / per_prompt))


def token_counter(model, config: Config) -> TokenCounter:
    """Collected tokens per prompt as collection counts them (start token, ``max_length``, mask)."""
    from saeinverse.models.hooks import first_readable_position

    first = first_readable_position(bool(config.data.exclude_bos))
    max_length = int(config.data.max_length)

    def count(prompts: Sequence[str]) -> list[int]:
        return [
            max(
                0,
                min(
                    int(model.to_tokens(p, truncate=True, move_to_device=False).shape[1]),
                    max_length,
                )
                - first,
            )
            for p in prompts
        ]

    return count
