"""The sentence's parts chosen on the explaining side: the words that match the firing windows."""

from __future__ import annotations

import numpy as np
import pytest

from saeinverse.explain.evidence import ExplainEvidence, TokenSequence
from saeinverse.explain.intervals import auc
from saeinverse.explain.judge import EmbeddingJudge, window_text
from saeinverse.explain.rules import Rule
from saeinverse.explain.sentence import MAX_WORDS, describe, word_count
from saeinverse.explain.wording import SentenceFitter

ANIMALS = [
    "the cat chased the mouse across the kitchen",
    "the dog barked at the mailman all morning",
    "a horse galloped over the field of grass",
    "the parrot repeated every word the child said",
    "cows graze slowly on the green hill",
    "the kitten slept beside the warm fire",
    "an owl hooted from the old oak tree",
    "the rabbit hid under the garden fence",
    "a fox crept toward the sleeping hens",
    "the puppy chewed the leather shoe",
    "the goat climbed onto the stone wall",
    "ducks swam across the quiet pond",
]
FINANCE = [
    "the bank raised the interest rate again",
    "stocks fell sharply when the market opened",
    "the fund bought shares in the bank",
    "bond yields rose after the rate decision",
    "the loan was repaid before the deadline",
    "inflation pushed the central bank to act",
    "the company reported a quarterly loss",
    "investors sold the shares at a profit",
]


def words(text: str, fires: bool, source: str) -> TokenSequence:
    tokens = [w if i == 0 else " " + w for i, w in enumerate(text.split())]
    values = [1.0 if fires and t.strip() == "the" else 0.0 for t in tokens]
    return TokenSequence(tokens, list(range(len(tokens))), values, source)


@pytest.fixture(scope="module")
def judge():
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HF_HUB_OFFLINE", "1")
        yield EmbeddingJudge()


def evidence(with_silent: bool = True) -> ExplainEvidence:
    # The strongest firings are two finance windows: the fixed sentence quotes them first.
    exemplars = [words(t, True, "exemplar") for t in FINANCE[:2] + ANIMALS[:6]]
    firing = [words(t, True, "decile:5") for t in ANIMALS[6:]]
    silent = [words(t, False, "silent") for t in FINANCE[2:]] if with_silent else []
    return ExplainEvidence(0, exemplars=exemplars, firing=firing, silent=silent,
                           candidate_tokens=[(" the", 0.9)])  # fmt: skip


HELD_POSITIVE = [
    "the hamster ran inside the wheel",
    "a cat and the dog played together",
    "the sheep followed the farmer home",
    "the bird built a nest in the tree",
]
HELD_NEGATIVE = [
    "the treasury sold bonds to the banks",
    "the price of the shares doubled",
    "the budget deficit grew last year",
    "the firm paid a dividend to the investors",
]


def held_out_fit(judge: EmbeddingJudge, sentence: str) -> float:
    v = judge.embed([sentence])[0]
    pos, neg = judge.embed(HELD_POSITIVE) @ v, judge.embed(HELD_NEGATIVE) @ v
    return auc(pos, neg)


def test_the_fitted_sentence_quotes_what_matches_the_firing_windows_and_scores_higher(judge):
    ev, rule = evidence(), Rule((" the",))
    fixed = describe(rule, ev)
    assert "bank" in fixed  # the fixed order quotes the strongest firing: a finance window
    fitted = SentenceFitter(judge.embed).describe(rule, ev)
    assert fitted.startswith('Fires on the word "the"') and word_count(fitted) <= MAX_WORDS
    assert "bank" not in fitted and "interest" not in fitted
    assert any(w in fitted for w in ("cat", "dog", "horse", "parrot", "cows", "kitten", "owl"))
    assert held_out_fit(judge, fitted) > held_out_fit(judge, fixed)


def test_the_fit_reads_only_the_explaining_side_and_falls_back_without_silent_windows(judge):
    rule = Rule((" the",))
    alone = evidence(with_silent=False)
    assert SentenceFitter(judge.embed).describe(rule, alone) == describe(rule, alone)
    seen: list[str] = []

    def embed(texts):
        seen.extend(texts)
        return judge.embed(texts)

    SentenceFitter(embed).describe(rule, evidence())
    ev = evidence()
    explaining = {window_text(s) for s in ev.positives() + ev.silent}
    windows = [t for t in seen if not t.startswith("Fires on")]
    assert windows and set(windows) <= explaining
    assert not set(seen) & set(HELD_POSITIVE + HELD_NEGATIVE)
    assert np.all([word_count(t) <= MAX_WORDS for t in seen if t.startswith("Fires on")])


MORE_ANIMALS = [
    "the lamb followed its mother through the gate",
    "a mule carried the sacks up the path",
    "the cat stretched on the sunny windowsill",
    "the donkey brayed at the passing cart",
]
ELSEWHERE = [
    "the orchestra tuned up before the symphony began",
    "the striker scored in the final minute of the match",
    "the storm brought heavy rain over the coast",
    "the chef seasoned the soup with fresh basil",
]


def test_the_fit_is_measured_on_the_other_firing_windows_not_the_quoted_ones(judge):
    # Examples are quoted from the exemplars; with enough other firing windows, those are what
    # the fit compares a sentence with, so a quote cannot score by matching its own window.
    exemplars = [words(t, True, "exemplar") for t in ELSEWHERE + ANIMALS[:2]]
    firing = [words(t, True, "firing") for t in ANIMALS[2:] + MORE_ANIMALS]
    silent = [words(t, False, "silent") for t in FINANCE]
    ev = ExplainEvidence(0, exemplars=exemplars, firing=firing, silent=silent,
                         candidate_tokens=[(" the", 0.9)])  # fmt: skip
    seen: list[str] = []

    def embed(texts):
        seen.extend(texts)
        return judge.embed(texts)

    fitted = SentenceFitter(embed).describe(Rule((" the",)), ev)
    windows = {t for t in seen if not t.startswith("Fires on")}
    assert windows == {window_text(s) for s in firing + silent}
    assert not any(w in fitted for w in ("orchestra", "striker", "storm", "chef", "soup"))
    assert held_out_fit(judge, fitted) > held_out_fit(judge, describe(Rule((" the",)), ev))
