"""Bootstrap intervals and verdicts: coverage of the truth, paired differences, the seed."""

from __future__ import annotations

import numpy as np
import pytest

from saeinverse.explain.intervals import compare, verdict
from saeinverse.explain.scoring import roc_auc


def test_the_value_is_the_auc_and_equals_balanced_accuracy_for_yes_no_answers():
    rng = np.random.default_rng(0)
    pos, neg = rng.random(30).tolist(), (rng.random(40) - 0.2).tolist()
    out = compare(pos, neg, n_boot=200)
    assert out["value"] == pytest.approx(roc_auc([True] * 30 + [False] * 40, pos + neg))
    yes_pos, yes_neg = [1.0] * 21 + [0.0] * 9, [1.0] * 10 + [0.0] * 30
    assert compare(yes_pos, yes_neg, n_boot=200)["value"] == pytest.approx(
        0.5 * (21 / 30 + 30 / 40)
    )
    assert out["n_positive"] == 30 and out["n_negative"] == 40


def test_the_95_percent_interval_covers_the_truth_about_95_percent_of_the_time():
    rng = np.random.default_rng(1)
    truth, covered, widths = 0.7, 0, []
    for trial in range(200):  # a scorer right 70% of the time on each class
        pos = (rng.random(50) < truth).astype(float).tolist()
        neg = (rng.random(50) >= truth).astype(float).tolist()
        out = compare(pos, neg, n_boot=400, seed=trial)
        covered += out["low"] <= truth <= out["high"]
        widths.append(out["high"] - out["low"])
    assert 0.88 <= covered / 200 <= 0.99
    assert 0.12 < float(np.mean(widths)) < 0.22  # about ±0.09 with 50 + 50 items


def test_verdict_comes_from_the_paired_difference():
    rng = np.random.default_rng(2)
    pos = (rng.random(60) < 0.8).astype(float).tolist()
    neg = (rng.random(60) < 0.2).astype(float).tolist()
    coin_pos = (rng.random(60) < 0.5).astype(float).tolist()
    coin_neg = (rng.random(60) < 0.5).astype(float).tolist()
    good = compare(pos, neg, coin_pos, coin_neg, n_boot=500, seed=3)
    assert good["verdict"] == "beats" and good["diff_low"] > 0
    assert compare(coin_pos, coin_neg, pos, neg, n_boot=500, seed=3)["verdict"] == "worse"
    few = compare(pos[:4], neg[:4], coin_pos[:4], coin_neg[:4], n_boot=500, seed=3)
    assert few["verdict"] == "undecided" and few["diff_low"] <= 0 <= few["diff_high"]
    assert compare(pos, neg, n_boot=300, seed=9) == compare(pos, neg, n_boot=300, seed=9)
    assert verdict(None, None) is None


def test_no_items_of_a_class_gives_no_value():
    out = compare([1.0, 0.0], [], [0.0, 1.0], [], n_boot=100)
    assert out["value"] is None and out["verdict"] is None
