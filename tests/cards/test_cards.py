"""Feature cards: logit effects through the hook's path, nearest features, examples across the
activation range with every token's value, save / load."""

from __future__ import annotations

import pytest
import torch

from saeinverse.cards import (
    FeatureCards,
    LogitPathError,
    compute_cards,
    decoder_logits,
    logit_path,
    nearest_features,
)
from tests import builders

PLANTED = 7
"""The feature whose decoder row is built to promote one token."""


def _planted_row(model, hook_name: str, token: int) -> torch.Tensor:
    """A decoder row whose direct path to the logits is the unembedding column of ``token``,
    the column of largest norm (so ``token`` gets the largest logit: u·u > u·v for |v| < |u|)."""
    target = model.W_U.detach()[:, token]
    _, layer, _ = logit_path(hook_name)
    if hook_name.endswith("mlp.hook_post"):
        return target @ torch.linalg.pinv(model.blocks[layer].mlp.W_out.detach())
    if hook_name.endswith("attn.hook_z"):
        w_o = model.blocks[layer].attn.W_O.detach().flatten(0, 1)  # [heads*d_head d_model]
        return target @ torch.linalg.pinv(w_o)
    return target


@pytest.mark.parametrize(
    "hook_name, d_in",
    [
        ("blocks.0.hook_resid_post", 32),
        ("blocks.1.hook_mlp_out", 32),
        ("blocks.0.mlp.hook_post", 64),
        ("blocks.1.attn.hook_z", 32),
    ],
)
def test_a_planted_feature_puts_its_token_first(tiny_model, hook_name, d_in):
    sae = builders.tiny_sae(hook_name=hook_name, d_in=d_in, d_sae=16)
    token = int(tiny_model.W_U.detach().norm(dim=0).argmax())
    sae.W_dec.data[PLANTED] = _planted_row(tiny_model, hook_name, token)
    logits = decoder_logits(tiny_model, sae.W_dec, hook_name, [3, PLANTED])
    assert logits.shape == (2, tiny_model.cfg.d_vocab)
    assert int(logits[1].argmax()) == token


def test_a_hook_with_no_path_to_the_logits_is_refused():
    with pytest.raises(LogitPathError, match="hook_pre"):
        logit_path("blocks.0.mlp.hook_pre")


def test_nearest_features_are_the_planted_twins():
    w_dec = torch.randn(20, 8, generator=torch.Generator().manual_seed(0))
    w_dec[5] = 3 * w_dec[2]
    w_dec[9] = w_dec[2] + 0.1 * w_dec[1]
    near = nearest_features(w_dec, [2], 3)[0]
    assert [f for f, _ in near[:2]] == [5, 9]
    assert near[0][1] == pytest.approx(1.0, abs=1e-5)
    assert all(f != 2 for f, _ in near)
    assert near[0][1] >= near[1][1] >= near[2][1]


@pytest.fixture(scope="module")
def cards_and_stats(tiny_model, tiny_sae):
    from saeinverse.collect.activations import collect_activations
    from saeinverse.config import get_default_config
    from tests.explain.conftest import random_prompts

    data = get_default_config().data.to_dict() | {"max_length": 40}
    stats = collect_activations(tiny_model, tiny_sae, random_prompts(60), data, progress=False)
    ids = [int(i) for i in stats.max_activation.argsort(descending=True)[:3]]
    return compute_cards(tiny_model, tiny_sae, stats, ids, seed=0), stats, ids


def test_cards_hold_every_component(cards_and_stats, tiny_model, tiny_sae):
    cards, stats, ids = cards_and_stats
    assert cards.feature_ids == ids
    logits = decoder_logits(tiny_model, tiny_sae.W_dec, "blocks.0.hook_resid_post", ids)
    for j, card in enumerate(cards.cards):
        f = card.feature_id
        assert card.density == pytest.approx(float(stats.density[f]))
        assert sum(b.count for b in card.histogram) == int(stats.firing_count[f])
        assert [e.token_id for e in card.positive_logits] == logits[j].topk(10).indices.tolist()
        assert [e.token_id for e in card.negative_logits] == (-logits[j]).topk(10).indices.tolist()
        assert len(card.neighbours) == 5 and f not in [n.feature_id for n in card.neighbours]
        assert "density" in card.histogram_title.lower()


def test_examples_carry_every_token_value(cards_and_stats):
    cards, stats, _ = cards_and_stats
    for card in cards.cards:
        f = card.feature_id
        top = stats.top_exemplars(f)
        assert len(card.exemplars) == len(top)
        for window, exemplar in zip(card.exemplars, top, strict=True):
            assert window.prompt_index == exemplar.prompt_index
            assert window.activation == pytest.approx(exemplar.activation, rel=1e-4, abs=1e-5)
            assert len(window.values) == len(window.tokens) == len(window.token_ids)
            assert window.start >= stats.first_position
        assert len(card.intervals) == 10
        assert card.intervals[-1].high == pytest.approx(card.max_activation)
        prompt_max = stats.prompt_feature_dense([f])[:, 0]
        for interval in card.intervals:
            assert len(interval.samples) == min(3, interval.n_prompts)
            for window in interval.samples:
                peak = float(prompt_max[window.prompt_index])
                assert interval.low - 1e-5 <= peak <= interval.high + 1e-5
                assert window.activation == pytest.approx(peak, rel=1e-4, abs=1e-5)
                assert max(window.values) == pytest.approx(window.activation)


def test_cards_save_and_load(cards_and_stats, tmp_path):
    cards, _, _ = cards_and_stats
    cards.save(tmp_path)
    back = FeatureCards.load(tmp_path)
    assert back.cards == cards.cards and back.meta == cards.meta
    assert back[cards.feature_ids[0]] == cards.cards[0]
