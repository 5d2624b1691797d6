"""Discrete refinement: prefix sharing changes nothing but the cost; the Pareto front is a front."""

from __future__ import annotations

import pytest
import torch

from saeinverse.invert import refine as refine_module
from saeinverse.invert.objective import FeatureTarget, allowed_token_mask
from saeinverse.invert.project import Vocabulary
from saeinverse.invert.refine import ParetoPoint, refine, update_pareto


def run(model, sae, position, share, **kwargs):
    target = FeatureTarget(model, sae, position)
    vocab = Vocabulary(model, allowed_token_mask(model))
    init = torch.randint(3, 100, (3, 7), generator=torch.Generator().manual_seed(0))
    generators = [torch.Generator().manual_seed(i) for i in range(3)]
    features = torch.tensor([4, 8, 15])
    return refine(
        target, vocab, features, init, generators,
        steps=6, candidates=24, top_k=16, share_prefix=share, **kwargs,
    )  # fmt: skip


@pytest.mark.parametrize("position", ["last", "max"])
def test_shared_prefix_screening_finds_the_same_prompts(
    tiny_model, tiny_topk_sae, position, monkeypatch
):
    monkeypatch.setattr(refine_module, "PREFIX_MIN_CANDIDATES", 1)
    shared = run(tiny_model, tiny_topk_sae, position, share=True)
    full = run(tiny_model, tiny_topk_sae, position, share=False)
    assert torch.equal(shared.ids, full.ids)
    assert shared.activation == pytest.approx(full.activation, rel=1e-5, abs=1e-6)
    # one extra forward per step for the shared prefix, and it is counted
    assert [
        s - f for s, f in zip(shared.forward_passes, full.forward_passes, strict=True)
    ] == shared.steps


def test_fluency_hinge_trades_activation_for_lower_cross_entropy(tiny_model, tiny_sae):
    free = run(tiny_model, tiny_sae, "last", share=False, fluency_weight=1e-9, fluency_candidates=8)
    fluent = run(
        tiny_model, tiny_sae, "last", share=False, fluency_weight=1.0, fluency_candidates=8
    )
    free_ce = [t["cross_entropy"][-1] for t in free.trajectory]
    fluent_ce = [t["cross_entropy"][-1] for t in fluent.trajectory]
    assert sum(fluent_ce) < sum(free_ce)
    assert all(a > 0 for a in fluent.activation)  # still firing, at a lower cross-entropy
    for front in fluent.pareto:
        assert front and all(p.activation > 0 for p in front)


def test_update_pareto_keeps_the_front_and_spreads_it():
    points = [
        ParetoPoint([1], 1.0, 5.0),
        ParetoPoint([2], 2.0, 6.0),
        ParetoPoint([3], 1.5, 7.0),  # dominated by [2]
        ParetoPoint([4], 3.0, 9.0),
        ParetoPoint([5], 0.0, 1.0),  # silent: never on the front
    ]
    front = update_pareto([], points, size=8)
    assert [p.ids for p in front] == [[1], [2], [4]]
    many = [ParetoPoint([i], float(i + 1), float(i)) for i in range(20)]
    spread = update_pareto([], many, size=4)
    assert len(spread) == 4 and spread[0].ids == [0] and spread[-1].ids == [19]


def test_update_pareto_keeps_the_named_prompt_when_thinning():
    many = [ParetoPoint([i], float(i + 1), float(i)) for i in range(20)]
    thinned = update_pareto([], many, size=4, keep=[[7]])
    assert [7] in [p.ids for p in thinned] and thinned[0].ids == [0] and thinned[-1].ids == [19]
