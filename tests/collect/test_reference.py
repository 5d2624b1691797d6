"""The reference maximum is collection's maximum, streamed over more text, cached per SAE."""

from __future__ import annotations

import pytest
import torch

from saeinverse.collect.activations import collect_activations
from saeinverse.collect.reference import (
    ReferenceMax,
    cached_reference_max,
    larger_of,
    reference_max,
    token_windows,
)
from saeinverse.config import get_default_config, update_config
from tests import builders

TEXTS = ["import os", "x = f(y)", "the cat sat on the mat", "def g(): pass", "Hello, world!"]


@pytest.mark.parametrize("exclude_bos", [True, False])
def test_reference_max_equals_collections_max_on_the_same_prompts(
    tiny_model, tiny_topk_sae, exclude_bos
):
    data = update_config(
        get_default_config(), {"data": {"exclude_bos": exclude_bos, "max_length": 64}}
    ).data
    stats = collect_activations(tiny_model, tiny_topk_sae, TEXTS, data, progress=False)
    ref = reference_max(
        tiny_model, tiny_topk_sae, TEXTS, window=64, exclude_bos=exclude_bos, progress=False
    )
    assert ref.n_tokens == stats.n_tokens
    torch.testing.assert_close(ref.max_activation, stats.max_activation.float())
    assert ref.name == f"reference max over {stats.n_tokens:,} tokens"


def test_long_texts_are_cut_into_windows_and_the_token_limit_stops_the_pass(tiny_model):
    long = ["abcdefghij" * 20]  # 200 characters: 200 tokens with the char tokenizer
    windows, counted = token_windows(tiny_model, long, window=64, max_tokens=None, first=1)
    assert [len(w) for w in windows] == [64, 64, 64, 12]  # 63 + 63 + 63 + 11 text tokens
    assert all(int(w[0]) == 0 for w in windows)  # each starts with the start token
    assert counted == 200
    windows, counted = token_windows(tiny_model, long * 5, window=64, max_tokens=250, first=1)
    assert 250 <= counted < 250 + 63


def test_cached_per_sae(tiny_model, tiny_topk_sae, tmp_path, monkeypatch):
    import saeinverse.data.corpus as corpus

    class Fake:
        train = TEXTS * 4

    monkeypatch.setattr(corpus, "default_corpus", lambda seed=0: Fake())
    first = cached_reference_max(tiny_model, tiny_topk_sae, tmp_path, progress=False)
    files = list(tmp_path.glob("reference-max-*.safetensors"))
    assert len(files) == 1
    again = cached_reference_max(tiny_model, tiny_topk_sae, tmp_path, progress=False)
    assert torch.equal(first.max_activation, again.max_activation)
    assert again.n_tokens == first.n_tokens
    other = builders.tiny_sae(k=4, seed=9)  # other weights: another file
    cached_reference_max(tiny_model, other, tmp_path, progress=False)
    assert len(list(tmp_path.glob("reference-max-*.safetensors"))) == 2


def test_the_runs_collection_wins_when_it_counted_more(tiny_model, tiny_topk_sae):
    data = get_default_config().data
    stats = collect_activations(tiny_model, tiny_topk_sae, TEXTS, data, progress=False)
    small = ReferenceMax(torch.zeros(64), 3, "x")
    assert larger_of(small, stats).n_tokens == stats.n_tokens
    big = ReferenceMax(torch.zeros(64), 10**6, "x")
    assert larger_of(big, stats) is big


def test_the_pass_keeps_each_features_most_active_windows(tiny_model, tiny_topk_sae):
    """Strongest first, one per window, each re-forwarded to its recorded activation."""
    from saeinverse.invert import score_prompt

    texts = [t * 3 for t in TEXTS] + ["abcdefghij" * 20]
    ref = reference_max(tiny_model, tiny_topk_sae, texts, window=32, progress=False)
    windows = ref.windows
    fired = (ref.max_activation > 0).nonzero().squeeze(-1).tolist()
    assert fired and windows is not None
    checked = 0
    for f in fired[:12]:
        tails = windows.tails(f, start=0)
        values = [v for _, _, v in tails]
        assert values == sorted(values, reverse=True) and values[0] == pytest.approx(
            float(ref.max_activation[f])
        )
        assert len({(i, tuple(row)) for i, row, _ in tails}) == len(tails)
        for index, row, value in tails:
            assert 0 not in row  # the start token is left out
            assert "".join(tiny_model.to_str_tokens(torch.tensor(row))) in texts[index]
            fresh = score_prompt(tiny_model, tiny_topk_sae, f, row, "last")
            assert fresh == pytest.approx(value, rel=1e-4, abs=1e-5)
            checked += 1
    assert checked > 12


def test_the_cache_keeps_the_windows(tiny_model, tiny_topk_sae, tmp_path, monkeypatch):
    import saeinverse.data.corpus as corpus

    class Fake:
        train = TEXTS * 4

    monkeypatch.setattr(corpus, "default_corpus", lambda seed=0: Fake())
    first = cached_reference_max(tiny_model, tiny_topk_sae, tmp_path, progress=False)
    again = cached_reference_max(tiny_model, tiny_topk_sae, tmp_path, progress=False)
    assert first.windows is not None and again.windows is not None
    for name, tensor in first.windows.to_tensors().items():
        assert torch.equal(tensor, again.windows.to_tensors()[name]), name
    f = int(first.max_activation.argmax())
    reals = again.windows.real_windows(f, Fake.train, start=0)
    assert reals and reals[0].activation == pytest.approx(float(first.max_activation[f]))
    assert reals[0].text == corpus.text_hash(Fake.train[int(again.windows.text[f, 0])])
