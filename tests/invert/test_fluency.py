"""The real-text bound: at least 300 random windows of the prompt's length, an interpolated quantile."""

from __future__ import annotations

import pytest
import torch

from saeinverse.config import OptimizationConfig, as_section
from saeinverse.errors import ConfigError, DataError
from saeinverse.invert.fluency import Fluency, measure_bound, real_windows, text_token_rows
from saeinverse.invert.objective import FeatureTarget

TEXTS = [
    "The quick brown fox jumps over the lazy dog, and then it runs away into the woods.",
    "def add(a, b):\n    return a + b\n\nprint(add(2, 3))",
    "Sparse autoencoders split a model's activations into many features, most of them silent.",
    "It was the best of times, it was the worst of times, it was the age of wisdom.",
] * 3


def test_windows_are_random_distinct_and_of_the_prompt_length():
    rows = [torch.arange(1000 * r, 1000 * r + n) for r, n in enumerate([400, 12, 5, 300, 150])]
    windows = real_windows(rows, 12, 300, seed=0)
    assert windows.shape == (300, 12)
    starts = windows[:, 0].tolist()
    assert len(set(starts)) == len(starts)  # drawn without replacement
    assert all((w[1:] - w[:-1] == 1).all() for w in windows)  # contiguous text
    assert len({s % 1000 for s in starts}) > 100  # not only the rows' first tokens
    assert len({s // 1000 for s in starts}) >= 3  # from several rows
    assert len(real_windows(rows[1:3], 12, 300, seed=0)) == 1  # all there are, when fewer
    assert torch.equal(windows, real_windows(rows, 12, 300, seed=0))
    assert not torch.equal(windows, real_windows(rows, 12, 300, seed=1))
    with pytest.raises(DataError, match="12 tokens"):
        real_windows([torch.arange(5)], 12, 300, seed=0)


def test_bound_is_the_interpolated_quantile_of_300_windows(tiny_model, tiny_sae):
    target = FeatureTarget(tiny_model, tiny_sae)
    rows = text_token_rows(tiny_model, TEXTS)
    bound = measure_bound(target, rows, length=12, quantile=0.37, n_windows=300, seed=2)
    assert bound.n_windows == 300 and bound.length == 12
    ce = Fluency(target).cross_entropy(real_windows(rows, 12, 300, seed=2)).sort().values
    position = 0.37 * (len(ce) - 1)  # linear interpolation between order statistics
    lo = int(position)
    expected = ce[lo] + (position - lo) * (ce[lo + 1] - ce[lo])
    assert bound.cross_entropy == pytest.approx(float(expected), rel=1e-5)
    assert bound.p10 <= bound.p50 <= bound.p90
    assert bound.p50 == pytest.approx(float(ce.median()), rel=1e-2)


def test_fewer_than_300_windows_is_refused_by_the_config():
    with pytest.raises(ConfigError, match=r"fluency_windows must be ≥ 300"):
        as_section({"fluency_windows": 64}, OptimizationConfig)
    with pytest.raises(ConfigError, match="fluency_quantile"):
        as_section({"fluency_quantile": 1.5}, OptimizationConfig)


def test_bound_reads_its_cross_entropies_back_from_the_cache(tiny_model, tiny_sae, tmp_path,
                                                            monkeypatch):  # fmt: skip
    target = FeatureTarget(tiny_model, tiny_sae)
    rows = text_token_rows(tiny_model, TEXTS)
    first = measure_bound(target, rows, length=12, n_windows=300, seed=2, cache=tmp_path)
    assert len(list(tmp_path.glob("window-ce-*.json"))) == 1

    def no_forward(*args, **kwargs):
        raise AssertionError("the cached windows were measured again")

    monkeypatch.setattr(Fluency, "cross_entropy", no_forward)
    again = measure_bound(target, rows, length=12, quantile=0.9, n_windows=300, seed=2,
                          cache=tmp_path)  # fmt: skip
    assert again.p50 == first.p50 and again.cross_entropy == pytest.approx(first.p90)
    with pytest.raises(AssertionError, match="measured again"):  # other windows: measured
        measure_bound(target, rows, length=12, n_windows=300, seed=3, cache=tmp_path)
