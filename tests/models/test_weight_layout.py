"""``fast_layout``: the weights TransformerLens copies on every forward are stored so that the copy
is a no-op, and the model computes the same numbers."""

from __future__ import annotations

import einops
import torch

from saeinverse.models.layout import fast_layout
from saeinverse.models.loading import load_model
from saeinverse.models.tiny import TINY_MODEL_NAME, tiny_model


def gated_gqa_model():
    """A tiny SmolLM2-like model: gated SiLU MLP, RMS norms, grouped-query attention."""
    return tiny_model(
        act_fn="silu", gated_mlp=True, normalization_type="RMS", n_key_value_heads=2, d_mlp=48
    )


def copy_free(model) -> dict[str, bool]:
    """Per weight, whether the operand the forward hands ``F.linear`` (built the way
    TransformerLens builds it) is the parameter's own memory, already contiguous: no copy."""
    block = model.blocks[0]
    attn, mlp = block.attn, block.mlp
    operands = {
        "W_U": (model.unembed.W_U, model.unembed.W_U.T),
        "W_Q": (attn.W_Q, einops.rearrange(attn.W_Q, "h m d -> (h d) m")),
        "W_O": (attn.W_O, einops.rearrange(attn.W_O, "h d m -> m (h d)")),
    }
    if hasattr(attn, "_W_K"):
        operands["_W_K"] = (attn._W_K, einops.rearrange(attn._W_K, "h m d -> (h d) m"))
    if hasattr(mlp, "W_gate"):
        for name in ("W_gate", "W_in", "W_out"):
            operands[name] = (getattr(mlp, name), getattr(mlp, name).T)
    return {
        name: op.is_contiguous() and op.data_ptr() == param.data_ptr()
        for name, (param, op) in operands.items()
    }


def test_the_copied_weights_become_contiguous_with_the_same_values():
    model = gated_gqa_model()
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    assert not any(copy_free(model).values())

    fast_layout(model)

    assert all(copy_free(model).values()), copy_free(model)
    for name, p in model.named_parameters():
        assert p.shape == before[name].shape
        assert torch.equal(p.detach(), before[name]), name


def test_the_model_computes_the_same_numbers():
    ids = torch.randint(0, 100, (3, 9), generator=torch.Generator().manual_seed(0))
    model = gated_gqa_model()
    with torch.no_grad():
        logits, cache = model.run_with_cache(ids)
        fast_layout(model)
        logits_after, cache_after = model.run_with_cache(ids)
    torch.testing.assert_close(logits_after, logits, rtol=1e-5, atol=1e-6)
    for name in ("blocks.0.hook_resid_post", "blocks.1.mlp.hook_pre", "blocks.1.attn.hook_z"):
        torch.testing.assert_close(cache_after[name], cache[name], rtol=1e-5, atol=1e-6)


def test_twice_changes_nothing_and_loaded_models_come_laid_out():
    model = fast_layout(gated_gqa_model())
    pointers = {name: p.data_ptr() for name, p in model.named_parameters()}
    assert fast_layout(model) is model
    assert {name: p.data_ptr() for name, p in model.named_parameters()} == pointers

    loaded = load_model(TINY_MODEL_NAME)
    assert all(copy_free(loaded).values()), copy_free(loaded)
    # the plain MLP multiplies W_in as stored (addmm): it is left as it was
    assert loaded.blocks[0].mlp.W_in.is_contiguous()
