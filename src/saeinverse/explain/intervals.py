"""Bootstrap intervals for explanation scores, and the verdict against the shuffled baseline.

Every score here is a ROC AUC of a scorer's values, positives against negatives:
P(a positive's value > a negative's) with ties counting half. For yes / no answers this *is*
balanced accuracy ((TPR + TNR) / 2), so one estimator serves detection, fuzzing (scorer answers)
and the embedding judge (similarities).

The interval resamples positives and negatives separately, with replacement (a stratified
bootstrap, ``n_boot`` resamples drawn with the seed), and takes the 2.5 and 97.5 percentiles.
The explanation and its shuffled baseline are scored on the *same* items, so each resample scores
both on the same draw: the interval of their difference is paired. The verdict:

- ``beats``: the 95% interval of (score − shuffled score) lies above 0;
- ``worse``: it lies below 0;
- ``undecided``: it holds 0 (too few items, or no real difference).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

LEVEL = 0.95


def _wins(pos: np.ndarray, neg: np.ndarray) -> np.ndarray:
    """Float[ndarray, "n_pos n_neg"]: 1 where the positive's value is higher, ½ on ties."""
    return (pos[:, None] > neg[None, :]) + 0.5 * (pos[:, None] == neg[None, :])


def auc(pos: Sequence[float], neg: Sequence[float]) -> float:
    """P(a positive's value > a negative's), ties counting half (both must be non-empty)."""
    return float(_wins(np.asarray(pos, dtype=np.float64), np.asarray(neg, dtype=np.float64)).mean())


def _values(values: Sequence[float | bool | None]) -> np.ndarray:
    return np.array([0.0 if v is None else float(v) for v in values], dtype=np.float64)


def compare(
    own_pos: Sequence[float | bool | None],
    own_neg: Sequence[float | bool | None],
    base_pos: Sequence[float | bool | None] | None = None,
    base_neg: Sequence[float | bool | None] | None = None,
    *,
    n_boot: int = 1000,
    seed: int = 0,
) -> dict[str, Any]:
    """Score (AUC) with its bootstrap interval; with a baseline, its score, interval, the paired
    interval of the difference and the verdict. ``value`` is None without both classes."""
    own_p, own_n = _values(own_pos), _values(own_neg)
    out: dict[str, Any] = {"n_positive": len(own_p), "n_negative": len(own_n)}
    keys = ("value", "low", "high")
    if not len(own_p) or not len(own_n):
        out |= dict.fromkeys(keys)
        if base_pos is not None:
            out |= dict.fromkeys(("baseline", "baseline_low", "baseline_high",
                                  "diff_low", "diff_high", "verdict"))  # fmt: skip
        return out
    rng = np.random.default_rng([int(seed), 11])
    n_p, n_n = len(own_p), len(own_n)
    counts_p = _resample_counts(rng, n_p, n_boot)
    counts_n = _resample_counts(rng, n_n, n_boot)
    own_w = _wins(own_p, own_n)
    own = np.einsum("bi,ij,bj->b", counts_p, own_w, counts_n) / (n_p * n_n)
    out |= dict(zip(keys, (float(own_w.mean()), *_percentiles(own)), strict=True))
    if base_pos is None or base_neg is None:
        return out
    base_w = _wins(_values(base_pos), _values(base_neg))
    base = np.einsum("bi,ij,bj->b", counts_p, base_w, counts_n) / (n_p * n_n)
    low, high = _percentiles(own - base)
    out |= {
        "baseline": float(base_w.mean()),
        "baseline_low": _percentiles(base)[0],
        "baseline_high": _percentiles(base)[1],
        "diff_low": low,
        "diff_high": high,
        "verdict": verdict(low, high),
    }
    return out


def verdict(diff_low: float | None, diff_high: float | None) -> str | None:
    """'beats', 'worse' or 'undecided' from the interval of (score − shuffled score)."""
    if diff_low is None or diff_high is None:
        return None
    if diff_low > 0:
        return "beats"
    if diff_high < 0:
        return "worse"
    return "undecided"


def _resample_counts(rng: np.random.Generator, n: int, n_boot: int) -> np.ndarray:
    """Float[ndarray, "n_boot n"]: how often each item is drawn in each resample."""
    draws = rng.integers(0, n, size=(n_boot, n))
    counts = np.zeros((n_boot, n), dtype=np.float64)
    np.add.at(counts, (np.arange(n_boot)[:, None], draws), 1.0)
    return counts


def _percentiles(values: np.ndarray) -> tuple[float, float]:
    tail = (1 - LEVEL) / 2 * 100
    low, high = np.percentile(values, [tail, 100 - tail])
    return float(low), float(high)
