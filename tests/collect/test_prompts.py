"""A data.n_tokens budget: the seeded draw cut where collected tokens reach the budget."""

from __future__ import annotations

from saeinverse.collect.activations import collect_activations
from saeinverse.collect.prompts import TOKEN_PROBE, draw_prompts, token_counter
from saeinverse.config import get_default_config, update_config
from saeinverse.data.sources import load_prompts
from tests import builders


def config(**data):
    return update_config(get_default_config(), {"data": {"max_length": 24, **data}})


def test_without_a_budget_the_draw_is_load_prompts():
    cfg = config(n_prompts=30)
    assert draw_prompts(cfg) == load_prompts(cfg.data, seed=cfg.seed)


def test_a_token_budget_cuts_the_draw_where_collected_tokens_reach_it():
    model, sae = builders.tiny_model(), builders.tiny_sae(k=4)
    budget = 24 * TOKEN_PROBE  # more than the first probe holds: the draw must grow
    cfg = config(n_tokens=budget)
    count = token_counter(model, cfg)
    prompts = draw_prompts(cfg, count)
    tokens = count(prompts)
    assert sum(tokens) >= budget > sum(tokens[:-1])
    assert len(prompts) > TOKEN_PROBE
    # the counter counts what collection counts
    stats = collect_activations(model, sae, prompts[:40], cfg.data, progress=False)
    assert stats.n_tokens == sum(tokens[:40])
