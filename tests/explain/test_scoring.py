"""Scores: 1.0 for an oracle explanation, about 0.5 for a random one; baselines; metrics."""

from __future__ import annotations

import random

import pytest

from saeinverse.explain.evidence import HeldoutEvidence, TokenSequence
from saeinverse.explain.explainers import ChatScorer
from saeinverse.explain.prompts import parse_yes_no
from saeinverse.explain.rules import RuleSimulator, parse_rule, quote
from saeinverse.explain.scoring import (
    balanced_accuracy,
    derangement,
    detection_items,
    fuzzing_items,
    roc_auc,
    score_explanation,
)

LETTERS = "abcdefghijklmnopqrstuvwxyz"


def sequence(chars: str, source: str, trigger: str = "x") -> TokenSequence:
    """A char-level window whose feature fires (activation 1) exactly on ``trigger``."""
    return TokenSequence(
        list(chars), [ord(c) for c in chars], [float(c == trigger) for c in chars], source
    )


def constructed_case(seed: int, n: int = 40, trigger: str = "x") -> HeldoutEvidence:
    """n windows holding the trigger at least once, n windows without it; random letters elsewhere."""
    rng = random.Random(seed)
    others = [c for c in LETTERS if c != trigger]
    positives, negatives = [], []
    for _ in range(n):
        chars = [rng.choice(others) for _ in range(16)]
        for pos in rng.sample(range(16), rng.randint(1, 3)):
            chars[pos] = trigger
        positives.append(sequence("".join(chars), "heldout", trigger))
        negatives.append(
            sequence("".join(rng.choice(others) for _ in range(16)), "negative", trigger)
        )
    return HeldoutEvidence(positives, negatives)


class OracleChat:
    """A chat model that reads each question and answers the truth for a feature firing on 'x'."""

    def complete_many(self, conversations, max_new_tokens):
        replies = []
        for conv in conversations:
            question = conv[-1]["content"]
            text = question.split("Text: ")[1].split("\n")[0]
            if "Are the tokens marked" in question:
                marked = text.split("«")[1:]
                replies.append(
                    "Yes." if marked and all(m.startswith("x") for m in marked) else "No."
                )
            else:
                replies.append("yes" if "x" in text else "no")
        return replies


class CoinChat:
    """Answers yes or no at random (and sometimes nonsense)."""

    def __init__(self, seed):
        self.rng = random.Random(seed)

    def complete_many(self, conversations, max_new_tokens):
        return [
            self.rng.choice(["yes", "no", "Yes!", "No, it does not", "maybe"])
            for _ in conversations
        ]


def test_balanced_accuracy_counts_both_classes_equally():
    assert balanced_accuracy([True, False, False, False], [True, False, False, False]) == 1.0
    assert balanced_accuracy([True, False, False, False], [True, True, True, True]) == 0.5
    assert balanced_accuracy([True, True, False], [False, False, True]) == 0.0
    assert balanced_accuracy([True, False], [None, None]) == 0.5  # unreadable counts as "no"
    assert balanced_accuracy([True, True], [True, False]) is None  # one class only


def test_probabilities_threshold_at_one_half_and_rank_for_the_auc():
    labels = [True, True, False, False]
    biased = [0.4, 0.3, 0.2, 0.1]  # always "no", yet a perfect ranking
    assert balanced_accuracy(labels, biased) == 0.5
    assert roc_auc(labels, biased) == 1.0
    assert roc_auc(labels, [0.5, 0.5, 0.5, 0.5]) == 0.5
    assert roc_auc(labels, [None, 0.9, 0.0, 0.95]) == 0.375  # None ranks as 0; ties count half
    assert roc_auc([True, True], [0.1, 0.2]) is None


def test_fuzzing_items_mark_firing_tokens_or_as_many_silent_ones():
    held = constructed_case(seed=1, n=10)
    items = fuzzing_items(held, seed=0)
    assert len(items) == 20
    for item in items:
        fires = item.sequence.firing
        marked = [i for i, m in enumerate(item.marks) if m]
        if item.label:
            assert marked == [i for i, f in enumerate(fires) if f]
        else:
            assert len(marked) == sum(fires) and not any(fires[i] for i in marked)
    assert [i.marks for i in fuzzing_items(held, seed=0)] == [i.marks for i in items]


def test_oracle_explanation_scores_one_with_the_rule_simulator():
    held = constructed_case(seed=2)
    scores = score_explanation(RuleSimulator(), f"Fires on {quote('x')}.", held, seed=0)
    assert scores["detection"]["balanced_accuracy"] == 1.0
    assert scores["fuzzing"]["balanced_accuracy"] == 1.0
    assert scores["detection"]["n"] == 80 and scores["fuzzing"]["n"] == 80
    assert scores["detection"]["low"] == scores["detection"]["high"] == 1.0
    assert scores["detection_hard"]["value"] is None  # no hard negatives in this case


def test_every_score_has_an_interval_and_a_verdict_against_its_baseline():
    held = constructed_case(seed=6, n=50)
    right, wrong = f"Fires on {quote('x')}.", f"Fires on {quote('q')}."
    scores = score_explanation(RuleSimulator(), right, held, seed=0, baseline=wrong, n_boot=500)
    for name in ("detection", "fuzzing"):
        record = scores[name]
        assert record["low"] <= record["value"] <= record["high"]
        assert record["baseline_low"] <= record["baseline"] <= record["baseline_high"]
        assert record["diff_low"] > 0 and record["verdict"] == "beats"
    swapped = score_explanation(RuleSimulator(), wrong, held, seed=0, baseline=right, n_boot=500)
    assert swapped["detection"]["verdict"] == "worse"
    same = score_explanation(RuleSimulator(), wrong, held, seed=0, baseline=wrong, n_boot=500)
    assert same["detection"]["verdict"] == "undecided"
    assert same["detection"]["diff_low"] == same["detection"]["diff_high"] == 0.0


def test_random_explanations_score_about_one_half():
    detection, fuzzing = [], []
    for seed in range(30):
        rng = random.Random(seed)
        guess = [rng.choice(LETTERS[:23]) for _ in range(2)]  # never 'x'
        explanation = "Fires on " + ", ".join(quote(t) for t in guess)
        scores = score_explanation(RuleSimulator(), explanation, constructed_case(seed), seed)
        detection.append(scores["detection"]["balanced_accuracy"])
        fuzzing.append(scores["fuzzing"]["balanced_accuracy"])
    assert sum(detection) / len(detection) == pytest.approx(0.5, abs=0.05)
    assert sum(fuzzing) / len(fuzzing) == pytest.approx(0.5, abs=0.05)


def test_chat_scorer_scores_one_for_an_oracle_and_one_half_for_a_coin():
    held = constructed_case(seed=3)
    oracle = score_explanation(ChatScorer(OracleChat()), "Fires on the letter x.", held, seed=0)
    assert oracle["detection"]["balanced_accuracy"] == 1.0
    assert oracle["fuzzing"]["balanced_accuracy"] == 1.0
    coin = [
        score_explanation(ChatScorer(CoinChat(s)), "anything", constructed_case(s), s)
        for s in range(20)
    ]
    mean = sum(c["detection"]["balanced_accuracy"] for c in coin) / len(coin)
    assert mean == pytest.approx(0.5, abs=0.06)
    assert all(c["detection"]["unparsed"] > 0 for c in coin)  # 'maybe' is counted, as "no"


def test_detection_items_are_positives_then_negatives_then_hard_ones():
    held = constructed_case(seed=4, n=3)
    held.hard_negatives = held.negatives[:2]
    items = detection_items(held)
    assert [i.label for i in items] == [True] * 3 + [False] * 5
    assert [i.kind for i in items] == ["positive"] * 3 + ["negative"] * 3 + ["hard"] * 2


def test_derangement_moves_every_explanation_and_follows_the_seed():
    for n in (2, 3, 7, 50):
        perm = derangement(n, seed=5)
        assert sorted(perm) == list(range(n))
        assert all(perm[i] != i for i in range(n))
        assert derangement(n, seed=5) == perm
    assert derangement(1, seed=0) is None
    assert derangement(50, seed=1) != derangement(50, seed=2)


def test_yes_no_parsing_and_quoted_tokens_round_trip():
    assert parse_yes_no("Yes, it does.") is True
    assert parse_yes_no("no") is False
    assert parse_yes_no("The answer: NO") is False
    assert parse_yes_no("Perhaps") is None
    tokens = [" the", "\n", 'say "hi"', "«x»"]
    text = "Fires on " + ", ".join(quote(t) for t in tokens) + " (as in: “a «b» c”)."
    rule = parse_rule(text)
    assert rule.targets == tuple(tokens[:3]) + ("<<x>>",) and not rule.after
    assert rule.positions([" The", "x", "\n", "<<x>>"]) == [True, False, True, True]
