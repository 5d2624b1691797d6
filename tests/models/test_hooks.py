"""One hook parser, one forward-to-the-hook, one encode; the SAE kind by SAELens class.

The end-to-end test runs every supported SAE kind (TopK, JumpReLU, Gated, Standard / ReLU) and a
``hook_z`` SAE through collection, inversion (a silent feature's activation rises) and explanation.
"""

from __future__ import annotations

import pytest
import torch

from saeinverse.collect.activations import collect_activations
from saeinverse.config import get_default_config
from saeinverse.errors import CompatibilityError
from saeinverse.explain import generate_explanations
from saeinverse.invert import optimize_features
from saeinverse.invert.objective import FeatureTarget
from saeinverse.models import hooks
from tests import builders
from tests.explain.conftest import random_prompts


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_hook_layer_and_the_forward_bounds():
    assert hooks.hook_layer("blocks.9.hook_resid_post") == 9
    assert hooks.hook_layer("blocks.12.attn.hook_z") == 12
    assert hooks.hook_layer("hook_embed") == -1
    assert hooks.stop_at_layer_for("blocks.9.hook_resid_post") == 10
    assert hooks.stop_at_layer_for("ln_final.hook_normalized") is None
    with pytest.raises(ValueError, match="not inside"):
        hooks.hook_layer("ln_final.hook_normalized")
    assert hooks.resume_layer_for("blocks.3.hook_resid_post") == 4
    assert hooks.resume_layer_for("blocks.3.hook_resid_pre") == 3
    assert hooks.resume_layer_for("blocks.3.hook_mlp_out") is None


def test_first_readable_position_is_the_one_collection_uses():
    assert hooks.first_readable_position(True) == 1
    assert hooks.first_readable_position(False) == 0


@pytest.mark.parametrize(
    ("architecture", "kind"),
    [("standard", "relu"), ("topk", "topk"), ("jumprelu", "jumprelu"), ("gated", "gated")],
)
def test_sae_kind_follows_the_saelens_class(architecture, kind):
    assert hooks.sae_kind(builders.tiny_sae(architecture=architecture)) == kind


def test_an_unknown_sae_class_is_refused_by_name():
    class Odd(torch.nn.Module):
        pass

    with pytest.raises(CompatibilityError, match="Odd is not supported"):
        hooks.sae_kind(Odd())


@pytest.mark.parametrize("reshapes", [True, False])
def test_hook_z_heads_are_flattened_for_the_sae(tiny_model, reshapes):
    sae = builders.tiny_sae(hook_name="blocks.0.attn.hook_z")
    if not reshapes:
        sae.turn_off_forward_pass_hook_z_reshaping()
    tokens = torch.randint(3, 100, (2, 5))
    acts = hooks.hook_activations(tiny_model, tokens, "blocks.0.attn.hook_z")
    assert acts.shape == (2, 5, 4, 8)
    flat = acts.flatten(2)
    expected = sae.encode(flat) if not reshapes else sae.encode(acts)
    assert torch.allclose(hooks.encode(sae, acts), expected)
    assert hooks.hook_width(tiny_model, "blocks.0.attn.hook_z") == 32


def test_gated_gate_is_positive_exactly_when_the_feature_fires(tiny_model):
    sae = builders.tiny_sae(architecture="gated", seed=2)
    target = FeatureTarget(tiny_model, sae, "max")
    acts = target.hook_acts(torch.randint(3, 100, (8, 6)))[:, 1:]
    enc = hooks.encode_with_pre(sae, acts)
    fires = enc.acts > 0
    margin = torch.minimum(enc.gate_pre, enc.pre)
    assert fires.any() and (~fires).any()
    assert torch.equal(fires, margin > 0)


KINDS = [
    ("blocks.0.hook_resid_post", "topk"),
    ("blocks.0.hook_resid_post", "jumprelu"),
    ("blocks.0.hook_resid_post", "gated"),
    ("blocks.0.hook_resid_post", "standard"),
    ("blocks.0.attn.hook_z", "standard"),
]


@pytest.mark.parametrize(("hook_name", "architecture"), KINDS)
def test_every_sae_kind_collects_inverts_and_explains(tiny_model, hook_name, architecture):
    sae = builders.tiny_sae(hook_name=hook_name, architecture=architecture, seed=1)
    stats = collect_activations(
        tiny_model, sae, random_prompts(40), get_default_config().data, progress=False
    )
    assert int((stats.firing_count > 0).sum()) > 0
    target = FeatureTarget(tiny_model, sae, "last")
    start = target.read_ids(torch.randint(3, 100, (64, 6)), torch.arange(64) % sae.cfg.d_sae)
    silent = [int(f) for f in (start.activation == 0).nonzero().squeeze(-1)[:2]]
    assert silent, "the test needs features that do not fire at random"
    fast = {"length": 6, "max_steps": 40, "refine_steps": 10, "refine_candidates": 32}
    records = optimize_features(tiny_model, sae, silent, fast, seed=0, progress=False)
    assert max(r.refined_activation for r in records) > 0, "a silent feature was made to fire"
    for record in records:
        assert record.refined_activation >= record.trajectory["soft_activation"][0]
    fired = [int(f) for f in (stats.firing_count > 0).nonzero().squeeze(-1)[:2]]
    results = generate_explanations(
        tiny_model, sae, fired, None, None, {"n_heldout": 4}, stats=stats, seed=0
    )
    assert all(r.explanation for r in results)
