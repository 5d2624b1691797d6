"""Fluent rows start from the feature's own exemplar windows, and the headline is never below the
best of them within the bound (both re-scored like every prompt)."""

from __future__ import annotations

import pytest
import torch

from saeinverse.collect.activations import collect_activations
from saeinverse.config import get_default_config, update_config
from saeinverse.data.sources import load_prompts
from saeinverse.invert import FeatureTarget, optimize_features, score_prompt
from saeinverse.invert.cost import Cost
from saeinverse.invert.fluency import default_bound
from saeinverse.invert.inputs import exemplar_windows
from saeinverse.invert.starts import fluent_starts

LENGTH = 6


def _stats(model, sae):
    config = update_config(get_default_config(), {"data": {"n_prompts": 60, "max_length": 24}})
    prompts = load_prompts(config.data, seed=0)
    return collect_activations(model, sae, prompts, config.data, progress=False)


def test_exemplar_windows_are_the_top_contexts_cut_at_their_peak(tiny_model, tiny_topk_sae):
    stats = _stats(tiny_model, tiny_topk_sae)
    features = [int(f) for f in (stats.firing_count > 5).nonzero().squeeze(-1)[:4]]
    windows = exemplar_windows(stats, features, LENGTH, count=3)
    assert set(windows) == set(features)
    for f in features:
        assert 1 <= len(windows[f]) <= 3 and all(len(w) == LENGTH for w in windows[f])
        tops = [e for e in stats.top_exemplars(f) if e.position + 1 - LENGTH >= 1]
        first = tops[0]
        assert windows[f][0] == stats.tokens[first.prompt_index, first.position + 1 - LENGTH :
                                             first.position + 1].tolist()  # fmt: skip
        kept = exemplar_windows(stats, [f], LENGTH, exclude_prompts={f: {first.prompt_index}})
        assert windows[f][0] not in kept.get(f, []), "a held-out prompt gives no window"


def test_a_fluent_row_starts_from_the_most_active_exemplar_window_within_the_hinge(
    tiny_model, tiny_topk_sae
):
    stats = _stats(tiny_model, tiny_topk_sae)
    features = [int(f) for f in (stats.firing_count > 5).nonzero().squeeze(-1)[:3]]
    windows = exemplar_windows(stats, features, LENGTH, count=4)
    target = FeatureTarget(tiny_model, tiny_topk_sae)
    opt = update_config(get_default_config(), {"optimization": {"length": LENGTH}}).optimization
    bound = default_bound(target, opt, seed=0)
    starts, spent, beams = fluent_starts(
        target, bound, float("inf"), features, 0, [windows[f] for f in features]
    )
    cost = Cost.of(target, LENGTH)
    for i, f in enumerate(features):
        start = starts[i].tolist()
        assert start in windows[f]
        acts = [score_prompt(tiny_model, tiny_topk_sae, f, w, "last") for w in windows[f]]
        assert score_prompt(tiny_model, tiny_topk_sae, f, start, "last") >= max(acts) - 1e-5
        assert spent[i] == pytest.approx(len(windows[f]) * (1 + cost.full))
        assert beams[i] == [], "a feature with a window within the hinge needs no beam"


def _invert_with_windows(model, sae, n: int, opt: dict):
    """The first ``n`` features firing in a small collection, inverted with their exemplar
    windows (``opt`` over 6-token prompts and 8 candidates): (windows by feature, records)."""
    stats = _stats(model, sae)
    features = [int(f) for f in (stats.firing_count > 5).nonzero().squeeze(-1)[:n]]
    windows = exemplar_windows(stats, features, LENGTH, count=4)
    opt = {"length": LENGTH, "refine_candidates": 8, **opt}
    records = optimize_features(model, sae, features, opt, exemplar_windows=windows, progress=False)
    return windows, records


def test_the_headline_is_never_below_the_best_exemplar_window_within_the_bound(
    tiny_model, tiny_topk_sae
):
    opt = {"max_steps": 6, "refine_steps": 2, "fluency_quantile": 0.9}
    windows, records = _invert_with_windows(tiny_model, tiny_topk_sae, 3, opt)
    seen = 0
    for record in records:
        if record.exemplar_window is None:
            continue
        seen += 1
        assert record.exemplar_window["tokens"] in windows[record.feature_id]
        assert record.headline is not None
        assert record.headline["activation"] >= record.exemplar_window["activation"]
        assert record.exemplar_window["cross_entropy"] <= record.fluency_bound["cross_entropy"]
    assert seen, "no exemplar window was within the bound: the test shows nothing"


def test_the_unconstrained_row_starts_from_the_soft_prompt_or_a_more_active_window(
    tiny_model, tiny_topk_sae
):
    opt = {"max_steps": 2, "refine_steps": 1}
    windows, records = _invert_with_windows(tiny_model, tiny_topk_sae, 6, opt)
    from_window = 0
    for record in records:
        acts = [score_prompt(tiny_model, tiny_topk_sae, record.feature_id, w, "last")
                for w in windows[record.feature_id]]  # fmt: skip
        start = record.trajectory["refine_activation"][0]
        assert start == pytest.approx(max(record.projected_activation, *acts), abs=1e-5)
        from_window += max(acts) > record.projected_activation
    assert from_window, "the soft prompt beat every window: the test shows nothing"


def test_without_a_window_within_the_hinge_the_fluent_row_starts_from_the_beam(
    tiny_model, tiny_topk_sae
):
    from saeinverse.invert.beam import beam_prompts
    from saeinverse.invert.objective import allowed_token_mask
    from saeinverse.invert.project import Vocabulary
    from saeinverse.invert.starts import BEAM, generator

    target = FeatureTarget(tiny_model, tiny_topk_sae)
    vocab = Vocabulary(tiny_model, allowed_token_mask(tiny_model))
    opt = update_config(get_default_config(), {"optimization": {"length": LENGTH}}).optimization
    bound = default_bound(target, opt, seed=0)
    features = [3, 9]
    calls = []

    def beam(need):
        calls.append(need)
        return beam_prompts(
            target, vocab.allowed, vocab.W_E, torch.tensor([features[i] for i in need]),
            [1.0] * len(need), bound.cross_entropy, 4.0, LENGTH, 4, 8,
            [generator(0, features[i], BEAM) for i in need],
        )  # fmt: skip

    # no exemplar windows at all (a notebook without a collection): the beam, not random windows
    starts, spent, beams = fluent_starts(
        target, bound, bound.cross_entropy, features, 0, None, beam
    )
    expected = beam(list(range(len(features))))
    assert calls[0] == [0, 1]
    for i in range(len(features)):
        assert starts[i].tolist() == expected.prompts[i][0] == beams[i][0]
        assert spent[i] == pytest.approx(expected.spent[i])
    # a window within the hinge wins over the beam, which then is not run for that feature
    window = starts[1].tolist()
    calls.clear()
    starts, _, beams = fluent_starts(target, bound, float("inf"), features, 0, [[], [window]], beam)
    assert calls == [[0]] and beams[1] == [] and starts[1].tolist() == window


def test_a_firing_window_above_the_hinge_beats_a_silent_beam_prompt(tiny_model, tiny_topk_sae):
    """As the key ranks every firing prompt above every silent one, a start that fires (a real
    window above the hinge) is preferred to a beam prompt that does not, whatever the fluency
    penalty; against a beam prompt that fires, the fluent row's score decides."""
    from saeinverse.invert.beam import BeamResult

    target = FeatureTarget(tiny_model, tiny_topk_sae)
    opt = update_config(get_default_config(), {"optimization": {"length": LENGTH}}).optimization
    bound = default_bound(target, opt, seed=0)
    rows = torch.randint(
        0, tiny_model.cfg.d_vocab, (64, LENGTH), generator=torch.Generator().manual_seed(0)
    )
    for feature in range(tiny_topk_sae.cfg.d_sae):
        act = target.read_ids(rows, torch.full((64,), feature)).activation
        if (act > 0).any() and (act <= 0).any():
            break
    else:
        pytest.fail("no feature fires on some windows and not on others: the test shows nothing")
    window, other = rows[int(act.argmax())].tolist(), rows[int(act.argmin())].tolist()
    hinge = -1.0  # every window lies above it: its score is far below the beam prompt's

    def rank(i, key, ce):
        return key - 4.0 * max(ce - hinge, 0.0)

    for beam_fires, expected in ((False, window), (True, other)):

        def beam(need, fires=beam_fires):
            return BeamResult([[other]], [[1.0 if fires else 0.0]], [[0.0]], [[0.0]], [0.0])

        starts, _, _ = fluent_starts(target, bound, hinge, [feature], 0, [[window]], beam, rank)
        assert starts[0].tolist() == expected
