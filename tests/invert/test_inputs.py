"""Collection hands inversion its dataset maxima and exemplars, read the same way inversion reads."""

from __future__ import annotations

import pytest

from saeinverse.collect.activations import collect_activations
from saeinverse.config import get_default_config
from saeinverse.invert import dataset_maxima, exemplar_tails, score_prompt


def test_exemplar_tail_rescores_to_the_collected_activation(tiny_model, tiny_topk_sae):
    prompts = ["import os", "x = f(y)", "the cat sat", "def g(): pass", "Hello, world!"]
    stats = collect_activations(
        tiny_model, tiny_topk_sae, prompts, get_default_config().data, progress=False
    )
    features = [int(f) for f in (stats.firing_count > 0).nonzero().squeeze(-1)[:5]]
    maxima = dataset_maxima(stats, features)
    tails = exemplar_tails(stats, features, length=32)  # longer than every prompt
    assert set(tails) == set(features)
    for f in features:
        best = stats.top_exemplars(f, 1)[0]
        assert tails[f][-1] == int(stats.tokens[best.prompt_index, best.position])
        assert 0 not in tails[f]  # the start token is not part of a prompt
        fresh = score_prompt(tiny_model, tiny_topk_sae, f, tails[f], "last")
        assert fresh == pytest.approx(maxima[f], rel=1e-4, abs=1e-5)


def test_exemplar_init_never_starts_from_a_held_out_prompt(tiny_model, tiny_topk_sae):
    """The explain stage holds prompts out for scoring; inversion must not start from them."""
    prompts = ["import os", "x = f(y)", "the cat sat", "def g(): pass", "Hello, world!"] * 2
    stats = collect_activations(
        tiny_model, tiny_topk_sae, prompts, get_default_config().data, progress=False
    )
    features = [int(f) for f in (stats.firing_count > 2).nonzero().squeeze(-1)[:6]]
    top = {f: stats.top_exemplars(f, 1)[0].prompt_index for f in features}
    tails = exemplar_tails(
        stats, features, length=6, exclude_prompts={f: {top[f]} for f in features}
    )
    for f in features:
        allowed = [e for e in stats.top_exemplars(f) if e.prompt_index != top[f]]
        best = allowed[0]
        lo = max(stats.first_position, best.position - 5)
        assert tails[f] == stats.tokens[best.prompt_index, lo : best.position + 1].tolist()
    # every exemplar held out: no start prompt at all (the feature is left out)
    everything = set(range(len(prompts)))
    assert exemplar_tails(stats, features[:1], 6, exclude_prompts=everything) == {}


def test_reference_windows_are_cut_at_their_peak_and_follow_the_exemplars():
    from saeinverse.collect.reference import RealWindow
    from saeinverse.invert.inputs import merge_windows, reference_windows

    real = {
        3: [
            RealWindow((5, 6, 7, 8, 9), "t1", 4.0),
            RealWindow((7, 8), "t2", 3.0),  # shorter than the length: only as a context
            RealWindow((9, 9, 9), "t3", 1.0),
        ]
    }
    got = reference_windows(real, [3, 4], length=3)
    assert got == {3: [[7, 8, 9], [9, 9, 9]]}  # the last 3 tokens, strongest first; 4: none
    contexts = reference_windows(real, [3], length=4, whole=False)
    assert contexts == {3: [[6, 7, 8, 9], [7, 8], [9, 9, 9]]}
    exemplars = {3: [[1, 1, 1], [9, 9, 9]], 5: [[2, 2, 2]]}
    merged = merge_windows(exemplars, got)
    assert merged == {3: [[1, 1, 1], [9, 9, 9], [7, 8, 9]], 5: [[2, 2, 2]]}
