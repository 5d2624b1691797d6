"""EPO's population over fluency weights (``optimization.population``): members weigh fluency
around ``fluency_weight``, each picks its next prompt among all members' exactly scored
candidates, and the members share one budget."""

from __future__ import annotations

import pytest
import torch

from saeinverse.config import OptimizationConfig, as_section
from saeinverse.invert import optimize_feature, plan_budget
from saeinverse.invert.objective import FeatureTarget, allowed_token_mask
from saeinverse.invert.project import Vocabulary
from saeinverse.invert.refine import Population, refine
from saeinverse.invert.starts import (
    FLUENT,
    FLUENT_SOFT,
    UNCONSTRAINED,
    generator,
    member_weight,
)
from tests.invert.test_optimize import BOUND, FAST


def test_member_weights_spread_around_the_configured_weight():
    assert [member_weight(4.0, m) for m in range(5)] == [4.0, 2.0, 8.0, 1.0, 16.0]


def test_a_population_splits_the_text_rows_share_between_its_members():
    s = as_section(
        {"max_steps": 99, "max_sequences": 4000, "fluent_start": "both", "population": 3},
        OptimizationConfig,
    )
    rest = 4000 - (3 * 99 + 1)
    rows = plan_budget(s).rows
    assert [stream for stream, _ in rows] == [UNCONSTRAINED, FLUENT, FLUENT, FLUENT, FLUENT_SOFT]
    text = rest * 0.75 * 2 / 3
    assert [b for _, b in rows] == pytest.approx([rest / 4, *[text / 3] * 3, rest * 0.75 / 3])


def _one_step(model, sae, feature, start, pool):
    """Two members from one start, both weighing only activation, drawing their own candidates."""
    target = FeatureTarget(model, sae, "last")
    vocab = Vocabulary(model, allowed_token_mask(model))
    pop = Population(
        feature_ids=torch.tensor([feature, feature]),
        init_ids=start.repeat(2, 1),
        generators=[generator(0, feature, FLUENT), generator(0, feature, FLUENT, 1)],
        scale=[1.0, 1.0],
        hinge=[BOUND.cross_entropy] * 2,
        budget=[None, None],
        weight=[0.0, 0.0],
        pool=[0, 0] if pool else None,
    )
    s = as_section({**FAST, "refine_steps": 1, "fluency_candidates": 4}, OptimizationConfig)
    return refine(target, vocab, pop, s)


def test_pool_mates_pick_among_each_others_candidates(tiny_model, tiny_topk_sae):
    target = FeatureTarget(tiny_model, tiny_topk_sae, "last")
    starts = torch.randint(3, 100, (6, 6), generator=torch.Generator().manual_seed(2))
    acts = target.read_ids(starts.repeat_interleave(64, 0), torch.arange(64).repeat(6))
    firing = (acts.activation.reshape(6, 64) > 0).nonzero().tolist()[::4][:6]
    assert len(firing) == 6
    from_mate = []
    for row, feature in firing:
        pooled = _one_step(tiny_model, tiny_topk_sae, feature, starts[row], pool=True)
        best = [max(p.activation for p in front) for front in pooled.front]
        # each member holds the most active prompt of either shortlist
        assert pooled.activation == pytest.approx([max(best)] * 2)
        from_mate.append(best[1] > best[0])
        # alone, it keeps to its own shortlist (the mate's candidates are the same draws)
        alone = _one_step(tiny_model, tiny_topk_sae, feature, starts[row], pool=False)
        assert alone.activation[0] == pytest.approx(max(p.activation for p in alone.front[0]))
        assert [p.ids for p in alone.front[1]] == [p.ids for p in pooled.front[1]]
    assert any(from_mate)  # and at least once it took the mate's


def test_a_population_spends_one_shared_budget_and_names_its_members(tiny_model, tiny_topk_sae):
    settings = {**FAST, "fluent_start": "text", "beam_width": 0, "max_sequences": 700}
    one = optimize_feature(tiny_model, tiny_topk_sae, 9, settings, seed=1, fluency_bound=BOUND)
    three = optimize_feature(
        tiny_model, tiny_topk_sae, 9, {**settings, "population": 3}, seed=1, fluency_bound=BOUND
    )
    assert {"fluent_activation", "fluent_2_activation", "fluent_3_activation"} <= set(
        three.trajectory
    )
    assert "fluent_2_activation" not in one.trajectory
    for record in (one, three):
        assert (
            record.forward_passes_by_stage["soft"] + record.forward_passes_by_stage["refine"] <= 700
        )
    # members share their budget: three members spend about what one row does
    spent = [r.forward_passes_by_stage["refine"] for r in (one, three)]
    assert spent[1] == pytest.approx(spent[0], rel=0.15)
