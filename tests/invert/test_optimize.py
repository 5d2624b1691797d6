"""Inversion optimises: activations rise, planted features are found, reports are re-checkable."""

from __future__ import annotations

import pytest
import torch

from saeinverse.errors import ConfigError
from saeinverse.invert import (
    load_inversions,
    optimize_feature,
    optimize_features,
    resolve_settings,
    save_inversions,
    score_prompt,
)
from saeinverse.invert.objective import FeatureTarget
from tests import builders

FAST = {
    "length": 6,
    "max_steps": 40,
    "refine_steps": 15,
    "refine_candidates": 32,
    "patience": 20,
}


def silent_features(model, sae, n: int) -> list[int]:
    """Features that do not fire at the last position of random prompts' start (a fair start)."""
    target = FeatureTarget(model, sae, "last")
    ids = torch.randint(3, 100, (64, 6), generator=torch.Generator().manual_seed(5))
    acts = target.read_ids(ids, torch.arange(64)).activation
    return [int(f) for f in (acts == 0).nonzero().squeeze(-1)[:n]]


@pytest.mark.parametrize("sae_name", ["tiny_sae", "tiny_topk_sae"])
def test_activation_rises_far_above_start(tiny_model, sae_name, request):
    sae = request.getfixturevalue(sae_name)
    features = silent_features(tiny_model, sae, 3)
    records = optimize_features(tiny_model, sae, features, FAST, seed=0, progress=False)
    for record in records:
        start = record.trajectory["soft_activation"][0]
        assert record.refined_activation > start + 1.0
        assert record.refined_activation >= record.projected_activation > 0
        assert record.forward_passes == sum(record.forward_passes_by_stage.values())


def planted_sae(model, token: int, feature: int = 3):
    """A ReLU SAE whose feature ``feature`` reads the residual ``token`` produces at the hook.

    At ``blocks.0.hook_resid_pre`` the last position's residual is W_E[token] + W_pos[pos]; the
    encoder column is that token's centred, normalised embedding, and the bias sits halfway
    between the token's own score and the best other token's, so only ``token`` fires.
    """
    sae = builders.tiny_sae(hook_name="blocks.0.hook_resid_pre", seed=4)
    W_E = model.W_E.detach()[3:]  # ordinary tokens (the specials are never used)
    direction = W_E[token - 3] - W_E.mean(0)
    direction = direction / direction.norm()
    scores = W_E @ direction
    others = torch.cat([scores[: token - 3], scores[token - 2 :]])
    assert scores[token - 3] > others.max()
    with torch.no_grad():
        sae.b_dec.zero_()
        sae.W_enc[:, feature] = direction
        bias = -(scores[token - 3] + others.max()) / 2
        last_pos = model.W_pos.detach()[FAST["length"]] @ direction  # position 0 is the start token
        sae.b_enc[feature] = bias - last_pos
    return sae


def test_planted_feature_is_found_from_random_init(tiny_model):
    token, feature = 40, 3
    sae = planted_sae(tiny_model, token, feature)
    reference = score_prompt(tiny_model, sae, feature, [50, 60, 70, 80, 90, token])
    assert reference > 0 and score_prompt(tiny_model, sae, feature, [50, 60, 70, 80, 90, 41]) == 0
    record = optimize_feature(tiny_model, sae, feature, FAST, seed=1)
    assert record.trajectory["soft_activation"][0] == 0  # the random start does not fire
    assert record.refined_tokens[-1] == token or record.refined_activation >= reference
    assert record.refined_activation == pytest.approx(reference, rel=1e-4)


def test_every_reported_hard_prompt_rescores_to_its_activation(tiny_model, tiny_topk_sae):
    settings = {**FAST, "fluency_weight": 0.3, "position": "max"}
    records = optimize_features(tiny_model, tiny_topk_sae, [1, 9], settings, progress=False)
    checked = 0
    for record in records:
        prompts = [
            (record.projected_tokens, record.projected_activation),
            (record.refined_tokens, record.refined_activation),
            *[(p["tokens"], p["activation"]) for p in record.pareto],
        ]
        for tokens, activation in prompts:
            fresh = score_prompt(tiny_model, tiny_topk_sae, record.feature_id, tokens, "max")
            assert fresh == pytest.approx(activation, rel=1e-4, abs=1e-5)
            checked += 1
        assert len(record.pareto) >= 1
        ces = [p["cross_entropy"] for p in record.pareto]
        acts = [p["activation"] for p in record.pareto]
        assert ces == sorted(ces) and acts == sorted(acts)  # a front: more fluent, less active
    assert checked > 4


def test_batch_gives_each_row_what_a_loop_gives(tiny_model, tiny_sae):
    features = [2, 11, 30]
    batched = optimize_features(tiny_model, tiny_sae, features, FAST, seed=3, progress=False)
    looped = [optimize_feature(tiny_model, tiny_sae, f, FAST, seed=3) for f in features]
    for b, single in zip(batched, looped, strict=True):
        assert b.feature_id == single.feature_id
        assert b.trajectory["soft_activation"][0] == pytest.approx(
            single.trajectory["soft_activation"][0], abs=1e-5
        )
        assert b.refined_activation == pytest.approx(single.refined_activation, rel=1e-3, abs=1e-4)
        assert b.forward_passes == single.forward_passes


def test_same_seed_same_result_other_seed_other_start(tiny_model, tiny_sae):
    settings = {**FAST, "max_steps": 5, "refine_steps": 2}
    a = optimize_feature(tiny_model, tiny_sae, 4, settings, seed=7)
    b = optimize_feature(tiny_model, tiny_sae, 4, settings, seed=7)
    c = optimize_feature(tiny_model, tiny_sae, 4, settings, seed=8)
    assert a.refined_tokens == b.refined_tokens and a.trajectory == b.trajectory
    assert a.trajectory["soft_objective"][0] != c.trajectory["soft_objective"][0]


def test_exemplar_init_starts_from_the_exemplar_tail(tiny_model, tiny_sae):
    settings = {**FAST, "init": "exemplar", "max_steps": 0, "refine_steps": 0}
    exemplar = [10, 11, 12, 13, 14, 15, 16, 17]
    record = optimize_feature(
        tiny_model, tiny_sae, 6, settings, exemplar_tokens=exemplar, dataset_max=2.0
    )
    assert record.projected_tokens == exemplar[-6:] == record.refined_tokens
    assert record.refined_ratio == pytest.approx(record.refined_activation / 2.0)
    with pytest.raises(ConfigError, match="exemplar"):
        optimize_feature(tiny_model, tiny_sae, 6, settings)


def test_sequence_budget_is_respected(tiny_model, tiny_sae):
    settings = {**FAST, "max_steps": 10, "refine_steps": 50, "patience": 50, "max_sequences": 200}
    record = optimize_feature(tiny_model, tiny_sae, 0, settings)
    spent = record.forward_passes_by_stage
    assert spent["soft"] + spent["refine"] <= 200


def test_out_of_range_feature_names_the_valid_range(tiny_model, tiny_sae):
    with pytest.raises(ConfigError, match=r"0\.\.63"):
        optimize_features(tiny_model, tiny_sae, [3, 64], FAST, progress=False)
    with pytest.raises(ConfigError, match="unknown optimization key"):
        resolve_settings({"lenght": 4})


def test_inversions_round_trip_through_json(tiny_model, tiny_sae, tmp_path):
    records = optimize_features(
        tiny_model, tiny_sae, [0, 1], {**FAST, "max_steps": 3, "refine_steps": 1}, progress=False
    )
    save_inversions(tmp_path, records)
    loaded = load_inversions(tmp_path)
    assert [r.to_dict() for r in loaded] == [r.to_dict() for r in records]
    assert all(isinstance(t, int) for t in loaded[0].refined_tokens)
