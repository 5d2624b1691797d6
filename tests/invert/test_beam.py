"""The left-to-right beam: its numbers are a fresh forward's, it raises the feature, it listens
to the fluency hinge, it costs what it says, and a feature's beam does not depend on its batch."""

from __future__ import annotations

import pytest
import torch

from saeinverse.invert import FeatureTarget, score_prompt
from saeinverse.invert.beam import beam_cost, beam_prompts
from saeinverse.invert.cost import Cost
from saeinverse.invert.fluency import Fluency
from saeinverse.invert.objective import allowed_token_mask
from saeinverse.invert.project import Vocabulary
from saeinverse.invert.starts import BEAM, generator

LENGTH = 6


def beam(model, sae, features, weight=0.0, hinge=0.0, width=4, proposals=8):
    target = FeatureTarget(model, sae, "last")
    vocab = Vocabulary(model, allowed_token_mask(model))
    return beam_prompts(
        target, vocab.allowed, vocab.W_E, torch.tensor(features), [1.0] * len(features), hinge,
        weight, LENGTH, width, proposals, [generator(0, f, BEAM) for f in features],
    )  # fmt: skip


def test_beam_numbers_are_a_fresh_forwards(tiny_model, tiny_topk_sae):
    result = beam(tiny_model, tiny_topk_sae, [3, 9], weight=1.0, hinge=2.0)
    fluency = Fluency(FeatureTarget(tiny_model, tiny_topk_sae))
    for i, f in enumerate([3, 9]):
        assert len(result.prompts[i]) == 4 and all(len(p) == LENGTH for p in result.prompts[i])
        assert result.score[i] == sorted(result.score[i], reverse=True), "best first"
        for p, act, ce in zip(
            result.prompts[i], result.activation[i], result.cross_entropy[i], strict=True
        ):
            assert act == pytest.approx(
                score_prompt(tiny_model, tiny_topk_sae, f, p, "last"), abs=1e-4
            )
            assert ce == pytest.approx(float(fluency.cross_entropy(torch.tensor([p]))[0]), rel=1e-4)


def test_the_beam_raises_the_feature_and_listens_to_the_hinge(tiny_model, tiny_sae):
    features = [1, 5, 12, 30]
    active = beam(tiny_model, tiny_sae, features, weight=0.0)
    fluent = beam(tiny_model, tiny_sae, features, weight=50.0, hinge=0.0)
    gen = torch.Generator().manual_seed(0)
    for i, f in enumerate(features):
        randoms = [
            score_prompt(
                tiny_model,
                tiny_sae,
                f,
                torch.randint(1, 100, (LENGTH,), generator=gen).tolist(),
                "last",
            )
            for _ in range(16)
        ]
        assert active.activation[i][0] > max(randoms), "the beam beats random prompts"
    # a steep penalty on every nat: the beam trades activation for lower cross-entropy
    mean = lambda xs: sum(x[0] for x in xs) / len(xs)  # noqa: E731
    assert mean(fluent.cross_entropy) < mean(active.cross_entropy)
    assert mean(fluent.activation) < mean(active.activation)


def test_beam_costs_what_it_says_and_is_the_same_alone(tiny_model, tiny_topk_sae):
    both = beam(tiny_model, tiny_topk_sae, [3, 9], weight=1.0, hinge=2.0)
    alone = beam(tiny_model, tiny_topk_sae, [9], weight=1.0, hinge=2.0)
    assert alone.prompts[0] == both.prompts[1]
    cost = Cost.of(FeatureTarget(tiny_model, tiny_topk_sae), LENGTH)
    # one full forward of the start token; per step and prompt: a one-token gradient, the
    # proposals, the kept token's full forward (none after the last step); step 1 has one prompt
    per, kept = cost.forward(cost.gradient + 8), cost.forward(cost.full)
    expected = kept + (per + kept) + 4 * (LENGTH - 2) * (per + kept) + 4 * per
    assert alone.spent[0] == pytest.approx(expected)
    assert alone.spent[0] <= beam_cost(cost, 4, 8, LENGTH)


def test_a_beam_without_the_gradient_pays_none(tiny_model, tiny_topk_sae):
    """BEAST's beam (``gradient=False``): its proposals are all the model's samples, no gradient
    is paid, and it costs what ``beam_cost`` says without one."""
    target = FeatureTarget(tiny_model, tiny_topk_sae, "last")
    vocab = Vocabulary(tiny_model, allowed_token_mask(tiny_model))
    out = beam_prompts(
        target, vocab.allowed, vocab.W_E, torch.tensor([3, 9]), [1.0, 1.0], 0.0, 0.0, LENGTH,
        4, 8, [generator(0, f, BEAM) for f in (3, 9)], gradient=False,
    )  # fmt: skip
    cost = Cost.of(target, LENGTH)
    per, kept = cost.forward(8), cost.forward(cost.full)
    assert out.spent[0] == pytest.approx(
        kept + (per + kept) + 4 * (LENGTH - 2) * (per + kept) + 4 * per
    )
    assert out.spent[0] < beam_cost(cost, 4, 8, LENGTH)
    assert out.spent[0] <= beam_cost(cost, 4, 8, LENGTH, gradient=False)
