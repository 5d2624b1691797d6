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
