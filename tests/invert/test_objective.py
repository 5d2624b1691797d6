"""The objective reads each row's own feature as collection does, and its gradient reaches the prompt."""

from __future__ import annotations

import pytest
import torch

from saeinverse.invert.objective import FeatureTarget, allowed_token_mask, sae_kind
from saeinverse.invert.project import Vocabulary, nearest_tokens, score_prompt


def random_ids(n: int, length: int = 8, seed: int = 0) -> torch.Tensor:
    return torch.randint(3, 100, (n, length), generator=torch.Generator().manual_seed(seed))


def test_sae_kind(tiny_sae, tiny_topk_sae):
    assert sae_kind(tiny_sae) == "relu"
    assert sae_kind(tiny_topk_sae) == "topk"


@pytest.mark.parametrize("position", ["last", "max"])
def test_activation_equals_run_with_cache(tiny_model, tiny_topk_sae, position):
    ids = random_ids(3)
    target = FeatureTarget(tiny_model, tiny_topk_sae, position)
    features = torch.tensor([5, 17, 40])
    readout = target.read_ids(ids, features)
    tokens = torch.cat([torch.zeros(3, 1, dtype=torch.long), ids], dim=1)
    assert tiny_model.to_tokens("a")[0, 0] == 0  # the start token collection prepends
    _, cache = tiny_model.run_with_cache(tokens, names_filter="blocks.0.hook_resid_post")
    acts = tiny_topk_sae.encode(cache["blocks.0.hook_resid_post"])[:, 1:]  # start position masked
    expected = acts[torch.arange(3), :, features]
    expected = expected[:, -1] if position == "last" else expected.amax(-1)
    torch.testing.assert_close(readout.activation, expected)


def test_topk_gate_is_positive_exactly_when_the_feature_fires(tiny_model, tiny_topk_sae):
    target = FeatureTarget(tiny_model, tiny_topk_sae, "last")
    ids = random_ids(40, seed=1)
    features = torch.arange(40) % 64
    readout = target.read_ids(ids, features)
    fires = readout.activation > 0
    assert fires.any() and (~fires).any()
    assert torch.all(readout.key[fires] == readout.activation[fires])
    assert torch.all(readout.key[~fires] <= 0)


@pytest.mark.parametrize("sae_name", ["tiny_sae", "tiny_topk_sae"])
def test_gradient_reaches_soft_prompt_even_when_feature_is_silent(tiny_model, sae_name, request):
    sae = request.getfixturevalue(sae_name)
    target = FeatureTarget(tiny_model, sae, "last")
    ids = random_ids(64, seed=2)
    features = torch.arange(64)
    silent = target.read_ids(ids, features).activation == 0
    assert silent.any()
    rows = silent.nonzero().squeeze(-1)[:4]
    embeds = tiny_model.W_E.detach()[ids[rows]].clone().requires_grad_(True)
    readout = target.read(target.hook_acts(ids[rows], embeds), features[rows])
    assert torch.all(readout.activation == 0)  # a TopK SAE passes no gradient through these
    (grad,) = torch.autograd.grad(readout.objective.sum(), embeds)
    assert torch.all(grad.norm(dim=(1, 2)) > 0)


def test_nearest_tokens_recovers_token_embeddings(tiny_model):
    ids = random_ids(2, seed=3)
    embeds = tiny_model.W_E.detach()[ids] * 1.7  # cosine ignores the scale
    assert torch.equal(nearest_tokens(tiny_model, embeds), ids)


def test_vocabulary_excludes_special_tokens_and_clamps_norms(tiny_model):
    vocab = Vocabulary(tiny_model, allowed_token_mask(tiny_model))
    assert not vocab.allowed[0] and not vocab.allowed[1] and vocab.allowed[3:].all()
    embeds = torch.randn(2, 5, 32) * 100
    vocab.clamp_norms(embeds)
    assert embeds.norm(dim=-1).max() <= vocab.max_norm * (1 + 1e-5)


def test_score_prompt_matches_text_forward(tiny_model, tiny_sae):
    text = "def f(x):"
    tokens = tiny_model.to_tokens(text)[0]
    ids = tokens[1:].tolist()
    _, cache = tiny_model.run_with_cache(tokens[None], names_filter="blocks.0.hook_resid_post")
    expected = tiny_sae.encode(cache["blocks.0.hook_resid_post"])[0, -1, 7]
    assert score_prompt(tiny_model, tiny_sae, 7, ids) == pytest.approx(
        float(expected), rel=1e-5, abs=1e-6
    )
