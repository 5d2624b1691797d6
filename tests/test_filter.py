"""Filtering drops what it should, for the right reasons; the notebook call and its cache."""

from __future__ import annotations

import pytest
import torch

from saeinverse import api as collect_stage
from saeinverse.api import collect_and_filter_data
from saeinverse.collect.accumulator import StatsAccumulator
from saeinverse.collect.stats import FeatureStats
from saeinverse.config import get_default_config, update_config
from saeinverse.filter import FeatureSet, filter_features

N_PROMPTS, LENGTH, D_SAE, D_VOCAB = 10, 11, 8, 100
SINGLE_TOKEN = 50


def constructed_stats() -> FeatureStats:
    """10 prompts of a start token + 10 tokens, 8 features with known behaviour:

    0 dead · 1 fires everywhere · 2 fires once · 3 well-behaved · 4 only on token 50 ·
    5 only at the first two tokens · 6 only in prompt 0 · 7 well-behaved, other positions
    """
    tokens = torch.zeros(N_PROMPTS, LENGTH, dtype=torch.long)
    for i in range(N_PROMPTS):
        tokens[i, 1:] = (torch.arange(10) * 7 + i * 13) % 40 + 3
        tokens[i, 5] = SINGLE_TOKEN
    acts = torch.zeros(N_PROMPTS, LENGTH, D_SAE)
    weight = torch.arange(1, N_PROMPTS + 1, dtype=torch.float32)[:, None]  # unequal prompt mass
    acts[:, :, 1] = 1.0
    acts[3, 7, 2] = 2.0
    acts[:, 6:10, 3] = weight
    acts[:, 5, 4] = weight[:, 0]
    acts[:, 1:3, 5] = weight
    acts[0, 1:, 6] = 3.0
    acts[:, 7:9, 7] = weight
    acts[:, 0, :] = 100.0  # the start token: masked
    acc = StatsAccumulator(D_SAE, D_VOCAB, LENGTH, first_position=1, top_k=3, histogram_bins=8)
    acc.add(acts, tokens, torch.full((N_PROMPTS,), LENGTH), torch.arange(N_PROMPTS))
    return acc.finish(
        [f"prompt {i}" for i in range(N_PROMPTS)],
        tokens,
        torch.full((N_PROMPTS,), LENGTH),
        token_strings={i: f"t{i}" for i in range(D_VOCAB)},
        positional_window=2,
        context_window=2,
    )


def filtering(**overrides):
    values = dict(
        sparsity_min=0.02,
        sparsity_max=0.5,
        entropy_threshold_low=0.3,
        entropy_threshold_high=0.99,
        min_token_entropy=0.2,
        max_positional_share=0.8,
        positional_window=2,
        drop_single_token=False,
        drop_positional=True,
    )
    values.update(overrides)
    return update_config(get_default_config(), {"data": {"filtering": values}}).data.filtering


def test_constructed_statistics_are_as_designed():
    stats = constructed_stats()
    assert stats.n_tokens == 100
    torch.testing.assert_close(
        stats.density, torch.tensor([0, 1, 0.01, 0.4, 0.1, 0.2, 0.1, 0.2], dtype=torch.float64)
    )
    assert float(stats.prompt_entropy[1]) == pytest.approx(1.0)
    assert 0.9 < float(stats.prompt_entropy[3]) < 0.99
    assert float(stats.prompt_entropy[6]) == 0.0
    assert float(stats.token_entropy[4]) == 0.0 and float(stats.token_entropy[3]) > 0.5
    assert float(stats.positional_share[5]) == 1.0 and float(stats.positional_share[3]) == 0.0
    assert float(stats.max_activation.max()) == 10.0  # the start token's 100 never counts
    assert stats.top_tokens(4, 2) == [(SINGLE_TOKEN, "t50", 1.0)]
    top = stats.top_exemplars(3)
    assert [(e.prompt_index, e.activation) for e in top] == [(9, 10.0)] * 3
    assert [e.position for e in top] == [6, 7, 8]  # ties: earlier position first


def test_filter_drops_with_reasons_and_flags():
    result = filter_features(constructed_stats(), filtering())
    assert result.kept.tolist() == [3, 4, 7]
    assert result.reasons == {
        0: ["dead"],
        1: ["dense", "high_entropy"],
        2: ["too_sparse", "low_entropy", "single_token"],
        5: ["positional"],
        6: ["low_entropy"],
    }
    assert result.flags == {4: ["single_token"]}
    assert result.summary() == {
        "kept": 3,
        "dead": 1,
        "dense": 1,
        "too_sparse": 1,
        "low_entropy": 2,
        "high_entropy": 1,
        "single_token": 1,
        "positional": 1,
    }


def test_filter_switches_turn_flags_into_drops_and_back():
    result = filter_features(
        constructed_stats(), filtering(drop_single_token=True, drop_positional=False)
    )
    assert result.kept.tolist() == [3, 5, 7]
    assert result.reasons[4] == ["single_token"]
    assert result.flags == {5: ["positional"]}


def test_feature_set_save_load(tmp_path):
    result = filter_features(constructed_stats(), filtering())
    result.save(tmp_path)
    loaded = FeatureSet.load(tmp_path)
    assert torch.equal(loaded.kept, result.kept)
    assert loaded.reasons == result.reasons and loaded.flags == result.flags
    assert loaded.filtering == result.filtering and loaded.filtering["sparsity_min"] == 0.02


def test_collect_and_filter_data_and_its_cache(tiny_model, tiny_sae, tmp_path, monkeypatch):
    prompts = ["The cat sat on the mat.", "Hello there, world!", "1 + 1 = 2", "x"]
    data = update_config(
        get_default_config(),
        {"data": {"filtering": {"sparsity_min": 0.0, "sparsity_max": 1.0}, "max_length": 16}},
    ).data
    acts, ids, rows = collect_and_filter_data(
        tiny_model, tiny_sae, data, prompts=prompts, cache_dir=tmp_path
    )
    stats = FeatureStats.load(tmp_path)
    assert (
        rows == prompts and acts.shape == (len(prompts), len(ids)) and acts.dtype == torch.float32
    )
    assert ids.dtype == torch.long and torch.equal(ids, FeatureSet.load(tmp_path).kept)
    assert torch.equal(acts, stats.prompt_feature_dense()[:, ids])

    def no_collection(*args, **kwargs):
        raise AssertionError("collected again")

    monkeypatch.setattr(collect_stage, "collect_activations", no_collection)
    again, again_ids, _ = collect_and_filter_data(
        tiny_model, tiny_sae, data, prompts=prompts, cache_dir=tmp_path
    )
    assert torch.equal(again, acts) and torch.equal(again_ids, ids)
    changed = (
        update_config(data, {"max_length": 8}),
        update_config(data, {"use_cached_data": False}),
    )
    for cfg in changed:
        with pytest.raises(AssertionError, match="collected again"):
            collect_and_filter_data(tiny_model, tiny_sae, cfg, prompts=prompts, cache_dir=tmp_path)
    with pytest.raises(AssertionError, match="collected again"):
        collect_and_filter_data(tiny_model, tiny_sae, data, prompts=prompts[:3], cache_dir=tmp_path)
    (tmp_path / "feature_stats.safetensors").write_bytes(b"corrupt")  # key matches, tensors don't
    with pytest.raises(AssertionError, match="collected again"):
        collect_and_filter_data(tiny_model, tiny_sae, data, prompts=prompts, cache_dir=tmp_path)
