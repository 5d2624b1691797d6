"""The prompts a sharded collection covers: the local stage's draw (``data.n_prompts``)."""

from __future__ import annotations

from saeinverse.config import Config


def draw_prompts(config: Config) -> list[str]:
    """The prompts ``load_prompts`` draws for ``config.data`` with ``config.seed``."""
    from saeinverse.data.sources import load_prompts

    return load_prompts(config.data, seed=config.seed)
