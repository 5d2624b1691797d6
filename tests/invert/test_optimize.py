"""Inversion optimises: activations rise, planted features are found, records are re-checkable,
the budget bounds the whole search, and a feature's result does not depend on its batch."""

from __future__ import annotations

import pytest
import torch

from saeinverse.config import OptimizationConfig, as_section
from saeinverse.errors import ConfigError
from saeinverse.invert import (
    FluencyBound,
    load_inversions,
    optimize_feature,
    optimize_features,
    plan_budget,
    save_inversions,
    score_prompt,
)
from saeinverse.invert.budget import soft_leftover
from saeinverse.invert.cost import Cost, step_cost
from saeinverse.invert.fluency import Fluency
from saeinverse.invert.objective import FeatureTarget
from saeinverse.invert.starts import FLUENT, UNCONSTRAINED
from tests import builders

FAST = {
    "length": 6,
    "max_steps": 40,
    "refine_steps": 15,
    "refine_candidates": 32,
    "patience": 20,
}
BOUND = FluencyBound(4.6, 0.5, 300, 6, 4.2, 4.6, 5.0)
"""A bound in the tiny model's range of cross-entropies (so tests need no corpus)."""


def silent_features(model, sae, n: int) -> list[int]:
    """Features that do not fire at the last position of random prompts (a fair start)."""
    target = FeatureTarget(model, sae, "last")
    ids = torch.randint(3, 100, (64, 6), generator=torch.Generator().manual_seed(5))
    acts = target.read_ids(ids, torch.arange(64)).activation
    return [int(f) for f in (acts == 0).nonzero().squeeze(-1)[:n]]


def invert(model, sae, features, settings=FAST, **kwargs):
    kwargs.setdefault("fluency_bound", BOUND)
    return optimize_features(model, sae, features, settings, progress=False, **kwargs)


@pytest.mark.parametrize("sae_name", ["tiny_sae", "tiny_topk_sae"])
def test_activation_rises_far_above_start(tiny_model, sae_name, request):
    sae = request.getfixturevalue(sae_name)
    features = silent_features(tiny_model, sae, 3)
    for record in invert(tiny_model, sae, features, seed=0):
        start = record.trajectory["soft_activation"][0]
        assert record.refined_activation > start + 1.0
        assert record.refined_activation >= record.projected_activation > 0
        assert record.forward_passes == pytest.approx(sum(record.forward_passes_by_stage.values()))


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
    record = optimize_feature(tiny_model, sae, feature, FAST, seed=1, fluency_bound=BOUND)
    assert record.trajectory["soft_activation"][0] == 0  # the random start does not fire
    assert record.refined_tokens[-1] == token
    assert record.refined_activation == pytest.approx(reference, rel=1e-4)


def test_every_reported_prompt_rescores_to_its_numbers(tiny_model, tiny_topk_sae):
    settings = {**FAST, "position": "max"}
    records = invert(tiny_model, tiny_topk_sae, [1, 9], settings)
    target = FeatureTarget(tiny_model, tiny_topk_sae, "max")
    checked = 0
    for record in records:
        points = [
            {"tokens": record.projected_tokens, "activation": record.projected_activation},
            {
                "tokens": record.refined_tokens,
                "activation": record.refined_activation,
                "cross_entropy": record.refined_cross_entropy,
            },
            *record.pareto,
            *([record.headline] if record.headline else []),
        ]
        for p in points:
            fresh = score_prompt(tiny_model, tiny_topk_sae, record.feature_id, p["tokens"], "max")
            assert fresh == pytest.approx(p["activation"], rel=1e-4, abs=1e-5)
            if "cross_entropy" in p:
                ce = Fluency(target).cross_entropy(torch.tensor([p["tokens"]]))
                assert float(ce) == pytest.approx(p["cross_entropy"], rel=1e-4)
            checked += 1
        ces = [p["cross_entropy"] for p in record.pareto]
        acts = [p["activation"] for p in record.pareto]
        assert ces == sorted(ces) and acts == sorted(acts)  # a front: more fluent, less active
        assert record.refined_activation == max(acts)  # the unconstrained best ends the front
    assert checked > 6


def test_headline_is_the_most_active_front_prompt_within_the_bound(tiny_model, tiny_topk_sae):
    records = invert(tiny_model, tiny_topk_sae, [1, 9, 20])
    assert any(r.headline is not None for r in records)
    for r in records:
        assert r.fluency_bound == BOUND.to_dict()
        within = [p for p in r.pareto if p["cross_entropy"] <= BOUND.cross_entropy]
        if r.headline is None:
            assert not within
            continue
        assert r.headline["cross_entropy"] <= BOUND.cross_entropy
        assert r.headline in r.pareto
        assert r.headline["activation"] == max(p["activation"] for p in within)
        assert r.headline == r.best_within(BOUND.cross_entropy)


@pytest.mark.parametrize("population", [1, 3])
def test_a_feature_gets_the_same_inversion_alone_or_in_a_batch_of_16(
    tiny_model, tiny_topk_sae, population
):
    """Per-feature random streams and per-row stopping: batching changes nothing but speed
    (a population's pool and shared budget are per feature too).

    Equality is exact here (tiny model, one thread); on a large model batched matrix products
    may differ in the last bits, which could flip a near-tie between two candidates.
    """
    settings = {**FAST, "max_steps": 15, "refine_steps": 6, "population": population}
    features = list(range(0, 64, 4))
    batch = invert(tiny_model, tiny_topk_sae, features, settings, seed=11)
    for f in (features[0], features[7], features[15]):
        alone = optimize_feature(
            tiny_model, tiny_topk_sae, f, settings, seed=11, fluency_bound=BOUND
        )
        in_batch = batch[features.index(f)]
        assert alone.refined_tokens == in_batch.refined_tokens
        assert alone.pareto == in_batch.pareto and alone.headline == in_batch.headline
        assert alone.forward_passes_by_stage == in_batch.forward_passes_by_stage
        assert alone.refined_activation == pytest.approx(in_batch.refined_activation, rel=1e-5)


def test_same_seed_same_result_other_seed_other_start(tiny_model, tiny_sae):
    settings = {**FAST, "max_steps": 5, "refine_steps": 2}
    a = optimize_feature(tiny_model, tiny_sae, 4, settings, seed=7, fluency_bound=BOUND)
    b = optimize_feature(tiny_model, tiny_sae, 4, settings, seed=7, fluency_bound=BOUND)
    c = optimize_feature(tiny_model, tiny_sae, 4, settings, seed=8, fluency_bound=BOUND)
    assert a.refined_tokens == b.refined_tokens and a.trajectory == b.trajectory
    assert a.trajectory["soft_objective"][0] != c.trajectory["soft_objective"][0]


def test_the_soft_stage_starts_from_the_exemplar_then_its_top_window_then_at_random(
    tiny_model, tiny_sae
):
    settings = {**FAST, "init": "exemplar", "max_steps": 0, "refine_steps": 0}
    exemplar = [10, 11, 12, 13, 14, 15, 16, 17]
    record = optimize_feature(
        tiny_model, tiny_sae, 6, settings, exemplar_tokens=exemplar, dataset_max=2.0,
        fluency_bound=BOUND,
    )  # fmt: skip
    assert record.projected_tokens == exemplar[-6:]
    assert record.refined_ratio == pytest.approx(record.refined_activation / 2.0)
    # without exemplar tokens, the first exemplar window; with neither, the random start
    windows = {6: [[20, 21, 22, 23, 24, 25], [30, 31, 32, 33, 34, 35]]}
    (from_window,) = optimize_features(
        tiny_model, tiny_sae, [6], settings, exemplar_windows=windows, fluency_bound=BOUND,
        progress=False,
    )  # fmt: skip
    assert from_window.projected_tokens == windows[6][0]
    bare = optimize_feature(tiny_model, tiny_sae, 6, settings, fluency_bound=BOUND)
    random = optimize_feature(
        tiny_model, tiny_sae, 6, {**settings, "init": "random"}, fluency_bound=BOUND
    )
    assert bare.projected_tokens == random.projected_tokens != exemplar[-6:]


def test_ratios_divide_by_the_named_reference_max(tiny_model, tiny_sae):
    record = optimize_feature(
        tiny_model, tiny_sae, 6, {**FAST, "max_steps": 3, "refine_steps": 1},
        dataset_max=2.0, reference_max=4.0, reference_tokens=150_000, fluency_bound=BOUND,
    )  # fmt: skip
    assert record.refined_ratio == pytest.approx(record.refined_activation / 4.0)
    assert record.reference_name == "reference max over 150,000 tokens"


# ----------------------------------------------------------------------------- the budget


def test_the_budget_bounds_the_soft_stage_too(tiny_model, tiny_sae):
    # The soft stage alone (300 steps) does not fit 200 sequences: refused, naming the key.
    settings = {**FAST, "max_steps": 300, "patience": 1000, "max_sequences": 200}
    with pytest.raises(ConfigError, match=r"max_sequences=200.*3 x max_steps \+ 1 = 901"):
        optimize_feature(tiny_model, tiny_sae, 0, settings, fluency_bound=BOUND)
    # One that fits spends at most the budget on the soft stage and every refinement row.
    fits = {
        **FAST, "max_steps": 60, "refine_steps": 500, "patience": 1000, "max_sequences": 800,
        "fluent_start": "text",
    }  # fmt: skip
    record = optimize_feature(tiny_model, tiny_sae, 0, fits, fluency_bound=BOUND)
    spent = record.forward_passes_by_stage
    assert spent["soft"] == 3 * 60 + 1 and spent["soft"] + spent["refine"] <= 800
    cost = Cost.of(FeatureTarget(tiny_model, tiny_sae), 6)
    step = step_cost(cost, 32, 8, True, True)  # the most one (fluent) step may spend
    assert spent["refine"] > 800 - 181 - 2 * step  # the budget, not the steps, stopped it


def test_plan_budget_splits_the_rest_between_the_rows():
    s = as_section(
        {"max_steps": 99, "max_sequences": 4000, "fluent_share": 0.25, "fluent_start": "text"},
        OptimizationConfig,
    )
    plan = plan_budget(s)
    assert plan.soft_steps == 99
    rest = 4000 - (3 * 99 + 1)  # a soft step is a forward and a backward
    assert [b for _, b in plan.rows] == pytest.approx([rest * 0.75, rest * 0.25])
    unconstrained = as_section({"fluency_weight": 0.0}, OptimizationConfig)
    assert len(plan_budget(unconstrained).rows) == 1


def test_what_an_early_stopped_soft_stage_leaves_goes_to_the_fluent_rows_from_text():
    s = as_section({"max_steps": 100, "max_sequences": 4000, "population": 2}, OptimizationConfig)
    plan = plan_budget(s)
    streams = [stream for stream, _ in plan.rows] * 2  # two features
    owners = [0] * len(plan.rows) + [1] * len(plan.rows)
    budgets = [b for _, b in plan.rows] * 2
    # feature 0 stopped after 60 of its 100 soft steps; feature 1 ran them all
    out = soft_leftover(plan, budgets, owners, streams, [3 * 60 + 1, 3 * 100 + 1])
    gained = [after - before for before, after in zip(budgets, out, strict=True)]
    text_rows = [i for i, st in enumerate(streams) if st == FLUENT]
    assert [gained[i] for i in text_rows] == pytest.approx([60, 60, 0, 0])  # 120 split in two
    assert sum(gained) == pytest.approx(3 * 40)
    # without fluent rows, the unconstrained row takes it
    alone = as_section(
        {"max_steps": 100, "max_sequences": 4000, "fluency_weight": 0}, OptimizationConfig
    )
    plan = plan_budget(alone)
    (only,) = soft_leftover(plan, [b for _, b in plan.rows], [0], [UNCONSTRAINED], [31.0])
    assert only == pytest.approx(plan.rows[0][1] + 270)


def test_out_of_range_feature_and_bad_keys_are_refused(tiny_model, tiny_sae):
    with pytest.raises(ConfigError, match=r"0\.\.63"):
        invert(tiny_model, tiny_sae, [3, 64])
    with pytest.raises(ConfigError, match="lenght"):
        invert(tiny_model, tiny_sae, [3], {"lenght": 4})
    with pytest.raises(ConfigError, match="fluency_windows"):
        invert(tiny_model, tiny_sae, [3], {"fluency_windows": 64})


def test_inversions_round_trip_through_json(tiny_model, tiny_sae, tmp_path):
    records = invert(tiny_model, tiny_sae, [0, 1], {**FAST, "max_steps": 3, "refine_steps": 1})
    save_inversions(tmp_path, records)
    loaded = load_inversions(tmp_path)
    assert [r.to_dict() for r in loaded] == [r.to_dict() for r in records]
    assert all(isinstance(t, int) for t in loaded[0].refined_tokens)


def test_fluent_row_starts_from_the_real_window_closest_to_firing(tiny_model, tiny_topk_sae):
    from saeinverse.invert.fluency import measure_bound, text_token_rows
    from saeinverse.invert.starts import FLUENT_START, fluent_starts, generator

    texts = ["The quick brown fox jumps over the lazy dog near the river bank."] * 4 + [
        "def add(a, b):\n    return a + b  # the sum of two numbers"
    ] * 4
    target = FeatureTarget(tiny_model, tiny_topk_sae)
    bound = measure_bound(target, text_token_rows(tiny_model, texts), 6, 0.5, 300, seed=0)
    pool = bound.fluent_windows(bound.cross_entropy)
    assert pool is not None and (bound.window_ce[: len(bound.windows)] >= 0).all()
    features = [3, 9]
    starts, screened, _ = fluent_starts(target, bound, bound.cross_entropy, features, seed=4)
    for i, f in enumerate(features):
        picks = torch.randperm(len(pool), generator=generator(4, f, FLUENT_START))[:64]
        keys = target.read_ids(pool[picks], torch.full((len(picks),), f)).key
        assert torch.equal(starts[i], pool[picks[int(keys.argmax())]])
        assert screened[i] == len(picks)
    # the screening is paid from the fluent row's budget, and its start is within the bound
    settings = {**FAST, "refine_steps": 0, "fluent_start": "text", "beam_width": 0}
    record = optimize_feature(tiny_model, tiny_topk_sae, 9, settings, seed=4, fluency_bound=bound)
    fluent = 1 + Cost.of(target, 6).full  # a fluent start: its activation, its cross-entropy
    assert record.forward_passes_by_stage["refine"] == pytest.approx(1 + fluent + screened[1])
    assert record.trajectory["fluent_cross_entropy"][0] <= bound.cross_entropy + 1e-5
    # fluent_start='soft': the fluent row starts where the unconstrained row does, unscreened;
    # 'both': a second fluent row from the soft prompt beside the one from real text
    for mode, spent in (("soft", 1 + fluent), ("both", 1 + 2 * fluent + screened[1])):
        record = optimize_feature(
            tiny_model, tiny_topk_sae, 9, {**settings, "fluent_start": mode}, seed=4,
            fluency_bound=bound,
        )  # fmt: skip
        t = record.trajectory
        assert record.forward_passes_by_stage["refine"] == pytest.approx(spent)
        from_soft = t["fluent_activation" if mode == "soft" else "fluent_soft_activation"]
        assert from_soft[0] == t["refine_activation"][0]
        if mode == "both":
            assert t["fluent_cross_entropy"][0] <= bound.cross_entropy + 1e-5


def test_fluent_start_both_gives_the_text_row_two_thirds_of_the_fluent_share():
    s = as_section(
        {"max_steps": 99, "max_sequences": 4000, "fluent_share": 0.5, "fluent_start": "both"},
        OptimizationConfig,
    )
    rest = 4000 - (3 * 99 + 1)
    assert [b for _, b in plan_budget(s).rows] == pytest.approx([rest / 2, rest / 3, rest / 6])
    with pytest.raises(ConfigError, match="fluent_start"):
        as_section({"fluent_start": "random"}, OptimizationConfig)


def test_the_fluent_row_from_the_soft_prompt_is_held_at_real_text_p90(
    tiny_model, tiny_topk_sae, monkeypatch
):
    """The row from text aims at the headline bound, the one from the soft prompt at p90 (the
    front's fluent point); a fluency_target the user sets holds both."""
    import saeinverse.invert.optimize as optimize

    seen = []

    def spy(target, vocab, pop, s, **kwargs):
        seen.append(list(pop.hinge))
        return refine(target, vocab, pop, s, **kwargs)

    refine = optimize.refine
    monkeypatch.setattr(optimize, "refine", spy)
    settings = {**FAST, "refine_steps": 1, "fluent_start": "both", "beam_width": 0}
    optimize_feature(tiny_model, tiny_topk_sae, 9, settings, seed=0, fluency_bound=BOUND)
    assert seen[-1] == [None, BOUND.cross_entropy, BOUND.p90]
    target = {**settings, "fluency_target": 4.4}
    optimize_feature(tiny_model, tiny_topk_sae, 9, target, seed=0, fluency_bound=BOUND)
    assert seen[-1] == [None, 4.4, 4.4]
