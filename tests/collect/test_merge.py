"""Shards merged as a binary counter equal one pass over all prompts (no Ray needed)."""

from __future__ import annotations

import pytest
import torch

from saeinverse.collect.activations import collect_activations
from saeinverse.collect.sharded import merge_in_order
from saeinverse.config import get_default_config, update_config
from tests import builders


@pytest.mark.parametrize("n_shards", [1, 5])
def test_shards_merged_in_order_equal_one_pass(n_shards):
    model, sae = builders.tiny_model(), builders.tiny_sae(k=4)
    cfg = update_config(get_default_config(), {"data": {"n_prompts": 40, "max_length": 24}}).data
    prompts = [f"{i}: the {'cat sat on ' * (i % 4)}mat, {i * 7} times." for i in range(40)]
    whole = collect_activations(model, sae, prompts, cfg, progress=False)
    size = -(-len(prompts) // n_shards)
    parts = [
        collect_activations(model, sae, prompts[i : i + size], cfg, progress=False)
        for i in range(0, len(prompts), size)
    ]
    assert len(parts) == n_shards
    merged = merge_in_order(parts)
    assert merged.prompts == whole.prompts and merged.n_tokens == whole.n_tokens
    for name in ("firing_count", "max_activation", "histogram", "exemplar_prompt", "tokens"):
        assert torch.equal(getattr(merged, name), getattr(whole, name)), name
    torch.testing.assert_close(merged.activation_sum, whole.activation_sum, rtol=1e-9, atol=0)
    assert torch.equal(merged.prompt_feature_dense(), whole.prompt_feature_dense())


def test_nothing_to_merge_is_none():
    assert merge_in_order([]) is None
