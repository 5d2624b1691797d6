"""The objective reads each row's own feature as collection does, and its gradient reaches the prompt."""

from __future__ import annotations

import pytest
import torch

from saeinverse.invert.objective import FeatureTarget, allowed_token_mask, sae_kind
from saeinverse.invert.project import Vocabulary, nearest_tokens, score_prompt
from tests import builders


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


def test_raw_topk_gate_is_positive_exactly_when_the_feature_fires(tiny_model):
    """The gate itself, against the SAE's own firing, for every feature at once.

    A negative encoder bias leaves fewer than k positive pre-activations at some positions, so
    some features are in the top k with a pre-activation ≤ 0: TopK's ReLU keeps them silent,
    and their gate must be ≤ 0 too.
    """
    sae = builders.tiny_sae(k=4, seed=3)
    with torch.no_grad():
        sae.b_enc.sub_(2.5)
    target = FeatureTarget(tiny_model, sae, "last")
    ids = random_ids(8, seed=1)
    n_features = int(sae.cfg.d_sae)
    rows = ids.repeat_interleave(n_features, 0)
    features = torch.arange(n_features).repeat(len(ids))
    readout = target.read_ids(rows, features, keep_resid=True)
    fires = readout.activation > 0
    assert torch.equal(readout.gate > 0, fires)
    assert fires.any() and (~fires).any()
    # the awkward case occurs: a feature in the top k whose pre-activation is ≤ 0
    pre = (readout.resid[:, -1] - sae.b_dec) @ sae.W_enc + sae.b_enc  # [rows, d_sae]
    own = pre[torch.arange(len(rows)), features]
    in_top_k = (pre > own[:, None]).sum(-1) < sae.cfg.k
    awkward = in_top_k & (own <= 0)
    assert awkward.any()
    assert torch.all(readout.gate[awkward] <= 0) and torch.all(readout.activation[awkward] == 0)
    assert torch.all(readout.key[fires] == readout.activation[fires])
    assert torch.all(readout.key[~fires] <= 0)


@pytest.mark.parametrize("exclude_bos", [True, False])
@pytest.mark.parametrize("prepend_bos", [True, False])
def test_inversion_reads_exactly_the_positions_collection_counts(prepend_bos, exclude_bos):
    """One rule (``models.hooks.first_readable_position``) for collection and inversion.

    Without a start token and with exclude_bos, the first prompt token is masked by collection
    and never read by inversion; with exclude_bos=False the start position is read by both.
    """
    from saeinverse.collect.activations import collect_activations
    from saeinverse.config import get_default_config, update_config

    model = builders.tiny_model(default_prepend_bos=prepend_bos)
    sae = builders.tiny_sae()
    prompts = ["xq = f(y)", "the cat sat", "def g(): pass", "Hello, world!"]
    data = update_config(get_default_config(), {"data": {"exclude_bos": exclude_bos}}).data
    stats = collect_activations(model, sae, prompts, data, progress=False)
    target = FeatureTarget(model, sae, "max", exclude_bos=exclude_bos)
    start = 1 if prepend_bos else 0
    features = torch.arange(int(sae.cfg.d_sae))
    for p in range(len(prompts)):
        ids = stats.tokens[p, start : int(stats.lengths[p])]
        acts = target.read_ids(ids.repeat(len(features), 1), features).activation
        expected = stats.prompt_feature_dense()[p]
        torch.testing.assert_close(acts, expected, rtol=1e-4, atol=1e-5)


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
