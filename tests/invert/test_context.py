"""A feature whose exemplars need more context than ``length`` tokens is searched at the shortest
length at which one of its exemplars' contexts fires (``invert.context``), in the stage too."""

from __future__ import annotations

import pytest
import torch

from saeinverse.config import get_default_config, update_config
from saeinverse.errors import ConfigError
from saeinverse.invert.budget import minimum_sequences, plan_budget
from saeinverse.invert.context import config_at, lengths_to_try, search_length
from saeinverse.invert.cost import Cost
from saeinverse.invert.objective import FeatureTarget
from saeinverse.invert.stage import InvertTarget, invert_batch
from saeinverse.units import Models

SHORT, LONG = 4, 16


def _acts(target, feature, rows):
    fids = torch.full((len(rows),), feature)
    return target.read_ids(torch.tensor(rows), fids).activation


@pytest.fixture(scope="module")
def cases(tiny_model, tiny_topk_sae):
    """(target, a feature and context that fire only with all LONG tokens, one that fires at
    SHORT): found in 64 seeded random contexts."""
    target = FeatureTarget(tiny_model, tiny_topk_sae)
    contexts = torch.randint(0, 100, (64, LONG), generator=torch.Generator().manual_seed(0))
    needs_long = fires_short = None
    for f in range(int(tiny_topk_sae.cfg.d_sae)):
        fid = torch.full((64,), f)
        by_length = {
            n: target.read_ids(contexts[:, -n:], fid).activation for n in (SHORT, 2 * SHORT, LONG)
        }
        only_long = (by_length[SHORT] == 0) & (by_length[2 * SHORT] == 0) & (by_length[LONG] > 0)
        if needs_long is None and only_long.any():
            needs_long = (f, contexts[int(only_long.nonzero()[0])].tolist())
        if fires_short is None and (by_length[SHORT] > 0).any():
            fires_short = (f, contexts[int((by_length[SHORT] > 0).nonzero()[0])].tolist())
    assert needs_long is not None and fires_short is not None, "the seeded scan finds both kinds"
    return target, needs_long, fires_short


def test_the_lengths_tried_double_up_to_the_cap():
    assert lengths_to_try(12, 48) == [24, 48]
    assert lengths_to_try(12, 64) == [24, 48, 64]
    assert lengths_to_try(12, 30) == [24, 30]
    assert lengths_to_try(12, 12) == [] and lengths_to_try(12, 0) == []


def test_a_feature_that_needs_context_gets_the_shortest_length_that_fires(cases):
    target, (f, context), _ = cases
    plan = search_length(target, f, [context[-SHORT:]], [context], SHORT, LONG)
    assert plan.length == LONG and plan.windows == [context]
    assert float(_acts(target, f, plan.windows)[0]) > 0
    o = target.start_offset
    assert plan.spent == pytest.approx((SHORT + o + 2 * SHORT + o + LONG + o) / (LONG + o))
    # capped below what it needs: it stays at length with its own windows
    capped = search_length(target, f, [context[-SHORT:]], [context], SHORT, 2 * SHORT)
    assert capped.length == SHORT and capped.windows == [context[-SHORT:]]


def test_a_feature_that_fires_at_length_stays_there(cases):
    target, _, (f, context) = cases
    plan = search_length(target, f, [context[-SHORT:]], [context], SHORT, LONG)
    assert plan.length == SHORT and plan.windows == [context[-SHORT:]]
    assert plan.spent == pytest.approx(1.0)
    off = search_length(target, f, [context[-SHORT:]], [context], SHORT, 0)
    assert off.length == SHORT and off.spent == 0.0


def test_the_stage_searches_each_feature_at_its_length_alone_or_in_a_batch(
    cases, tiny_model, tiny_topk_sae
):
    _, (f_long, context), (f_short, short_context) = cases
    opt = update_config(
        get_default_config(),
        {"optimization": {"length": SHORT, "max_length": LONG, "max_steps": 6,
                          "refine_steps": 3, "refine_candidates": 8, "max_sequences": None,
                          "beam_width": 0}},
    ).optimization  # fmt: skip
    targets = [
        InvertTarget(f_long, 1.0, 1.0, ((*context[-SHORT:],),), ((*context,),)),
        InvertTarget(f_short, 1.0, 1.0, ((*short_context[-SHORT:],),), ((*short_context,),)),
    ]
    models = Models(tiny_model, tiny_topk_sae)
    both = invert_batch(models, targets, None, None, True, opt, 0)
    assert [r.feature_id for r in both] == [f_long, f_short]
    long, short = both
    assert (long.length, long.lengthened_from) == (LONG, SHORT)
    assert len(long.refined_tokens) == LONG and long.fluency_bound["length"] == LONG
    assert long.forward_passes_by_stage["length"] > 0
    assert (short.length, short.lengthened_from) == (SHORT, None)
    assert len(short.refined_tokens) == SHORT
    (alone,) = invert_batch(models, targets[:1], None, None, True, opt, 0)
    assert alone.refined_tokens == long.refined_tokens and alone.length == LONG


def test_a_longer_search_gets_the_same_token_layers_or_the_least_it_runs_on(cases):
    target = cases[0]
    s = update_config(get_default_config(), {"optimization": {"length": 12}}).optimization
    assert config_at(s, 12, target) is s
    o = target.start_offset
    longer = config_at(s, 24, target)
    assert longer.length == 24
    assert longer.max_sequences * (24 + o) == pytest.approx(s.max_sequences * (12 + o), rel=0.01)
    plan_budget(longer, cost=Cost.of(target, 24))  # it runs
    longest = config_at(s, 96, target)
    assert longest.max_sequences == minimum_sequences(longest, Cost.of(target, 96))
    assert longest.max_sequences * (96 + o) > s.max_sequences * (12 + o)
    plan_budget(longest, cost=Cost.of(target, 96))
    with pytest.raises(ConfigError, match="raise max_sequences to at least"):
        plan_budget(
            update_config(longest, {"max_sequences": longest.max_sequences - 2}),
            cost=Cost.of(target, 96),
        )
