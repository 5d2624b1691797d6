"""The sentence a reader sees first: short, naming what fires; the artifact keeps it apart from
the rule, and older artifacts still read."""

from __future__ import annotations

import json

import pytest

from saeinverse.config import get_default_config, update_config
from saeinverse.errors import ConfigError
from saeinverse.explain.evidence import ExplainEvidence, TokenSequence
from saeinverse.explain.results import ExplanationResult, load_explanations
from saeinverse.explain.rules import Rule, with_examples
from saeinverse.explain.sentence import (
    MAX_WORDS,
    Choice,
    Explanation,
    as_explanation,
    common_stem,
    describe,
    parts,
    render,
    word_count,
)


def evidence(genre: str | None = None, shares=None) -> ExplainEvidence:
    tokens = ["def", " __", "hash", "__", "(", "self", ")"]
    seq = TokenSequence(tokens, list(range(7)), [0, 0, 2.0, 0, 0, 0, 0], "exemplar", genre=genre)
    return ExplainEvidence(0, exemplars=[seq] * 3, candidate_tokens=shares or [])


def test_targets_sharing_a_word_are_named_by_it_with_the_genre_and_an_example():
    assert common_stem([" hash", "hash", "hashable", "__hash__", " garbage"]) == "hash"
    assert common_stem([" if", " else"]) is None
    assert common_stem([" exponent", " explain"]) is None  # "exp" is no word of theirs
    assert common_stem([" explicitly", " exponent", " explicit"]) == "explicit"
    rule = Rule((" hash", "hashable", "__hash__"))
    text = describe(rule, evidence("python_source", [(" hash", 0.5), ("hashable", 0.3)]))
    assert text.startswith('Fires on the word "hash" (also "hashable"') and "in Python code" in text
    assert "__hash__" in text and word_count(text) <= MAX_WORDS


def test_a_long_rule_still_gets_a_short_sentence_and_a_broad_one_says_so():
    many = tuple(f" token{i}xyz"[: 4 + i % 5] + chr(97 + i) for i in range(24))
    rule = Rule(many[:10], (" after",), "start", alternatives=(Rule(many[10:], word="inside"),))
    shares = [(t, 0.01) for t in many]
    text = describe(rule, evidence("python_docstring", shares))
    assert word_count(text) <= MAX_WORDS and text.startswith("Fires weakly on many tokens")
    narrow = describe(Rule((" if", " else")), evidence(None, [(" if", 0.6), (" else", 0.3)]))
    assert narrow.startswith('Fires on "if" or "else"') and word_count(narrow) <= MAX_WORDS


def test_the_sentence_names_the_kind_of_token_every_clause_needs_before_it():
    shares = [(" =", 0.6), (":", 0.3)]
    both = describe(Rule((" =",), previous="word", alternatives=(Rule((":",), previous="word"),)),
                    evidence(None, shares))  # fmt: skip
    assert both.startswith('Fires on "=" or ":" right after a word')
    mixed = describe(Rule((" =",), previous="word", alternatives=(Rule((":",), previous="space"),)),
                     evidence(None, shares))  # fmt: skip
    assert "right after" not in mixed and word_count(mixed) <= MAX_WORDS


def window(tokens: list[str], peak: int, source: str = "exemplar") -> TokenSequence:
    values = [0.0] * len(tokens)
    if peak >= 0:
        values[peak] = 1.0
    return TokenSequence(tokens, list(range(len(tokens))), values, source)


def test_the_sentence_quotes_distinct_examples_and_words_typical_of_the_firing_windows():
    firing = [window(["def", " __", "hash", "__", "(", "self", ")", " the"], 2) for _ in range(8)]
    firing.append(window([" a", " hashable", " object", " the", " end"], 1))
    silent = [window([" the", " cat", " sat", " on", " mats"], -1, "silent") for _ in range(20)]
    ev = ExplainEvidence(0, exemplars=[firing[0], firing[-1]], firing=firing[1:-1],
                         silent=silent, candidate_tokens=[("hash", 0.9)])  # fmt: skip
    text = describe(Rule(("hash", " hashable")), ev)
    assert "“def __hash__(” or “a hashable object the”" in text
    assert 'near "def", "self"' in text and '"the"' not in text and word_count(text) <= MAX_WORDS
    no_silent = describe(Rule(("hash",)), ExplainEvidence(0, exemplars=firing[:2]))
    assert "near" not in no_silent and no_silent.count("“") == 1


def test_pieces_of_characters_are_named_in_words_and_left_out_of_the_examples():
    # byte tokens of a multi-byte letter, each decoded alone, show U+FFFD: mojibake on a card
    broken = window([" \u05d4\u05dc", "\ufffd", "\ufffd", "\u05e0", " x"], 2)
    readable = window([" the", " word", " hash", " here", " x"], 2)
    ev = ExplainEvidence(0, exemplars=[broken, broken, readable])
    rule = Rule(("\ufffd", " hash"))
    text = describe(rule, ev)
    assert "\ufffd" not in text and "“the word hash here x”" in text
    assert text.startswith('Fires on a piece of a non-Latin character or "hash"')
    full = with_examples(rule, ev)
    assert full.endswith("(as in: “the word« hash» here x”).")
    only_broken = ExplainEvidence(0, exemplars=[broken])
    assert "as in" not in describe(rule, only_broken)
    assert "(as in:" not in with_examples(rule, only_broken)


def test_a_broad_feature_is_named_by_the_word_its_strongest_firings_share():
    exemplars = [window([" as", " hash", "able", " by"], 1), window([" '__", "hash", "__", "()'"], 1),
                 window([" Validate", " a", " hash", "-", "based"], 2)]  # fmt: skip
    shares = [("h", 0.05), (" an", 0.04), (" %", 0.03), (" hash", 0.02)]
    ev = ExplainEvidence(0, exemplars=exemplars, candidate_tokens=shares)
    text = describe(Rule(("h", " an", " %")), ev)
    assert text.startswith('Fires weakly on many tokens, most on the word "hash" (also "hashable"')
    narrow = describe(Rule(("h", " an", " %")), ExplainEvidence(0, exemplars=exemplars))
    assert narrow.startswith('Fires on "h", "an" or "%"')


def test_a_language_models_words_are_its_sentence_cut_to_twenty_words():
    long = " ".join(["word"] * 40)
    assert word_count(as_explanation(long).sentence) == MAX_WORDS
    assert as_explanation("Fires on x.") == Explanation("Fires on x.")
    assert Explanation("A.", 'Fires on "a".').text() == 'A. Rule: Fires on "a".'


def test_a_version_2_artifact_reads_with_its_explanation_as_the_sentence(tmp_path):
    old = {"version": 2, "feature_id": 3, "explainer": "context", "explanation": 'Fires on "a".',
           "detection": 0.8, "scores": {}}  # fmt: skip
    (tmp_path / "explanations.jsonl").write_text(json.dumps(old) + "\n")
    (result,) = load_explanations(tmp_path)
    assert result.sentence == 'Fires on "a".' and result.rule == "" and result.detection == 0.8
    assert ExplanationResult.from_dict(result.to_dict()) == result


def test_an_endpoint_setting_with_a_local_explainer_is_an_error_naming_who_uses_it():
    config = get_default_config()
    with pytest.raises(ConfigError, match=r"explanation.base_url has no effect.*'llm'.*openai"):
        update_config(config, {"explanation": {"explainer": "llm", "base_url": "http://x"}})
    update_config(config, {"explanation": {"explainer": "openai", "base_url": "http://x"}})
    update_config(config, {"explanation": {"scorer": "openai", "base_url": "http://x"}})


def test_targets_a_shared_word_does_not_name_are_counted_not_dropped():
    rule = Rule((" who", " whose", "'s", " their", " my"))
    shares = [(" who", 0.4), (" whose", 0.2), ("'s", 0.2), (" their", 0.1), (" my", 0.1)]
    short = sentence_parts_text(rule, evidence(None, shares), listed=1)
    assert short.startswith('Fires on the word "who" and 3 more')  # "whose" shares the word
    full = sentence_parts_text(rule, evidence(None, shares), listed=3)
    assert '(also "whose", "\'s") and 2 more' in full


def sentence_parts_text(rule: Rule, ev: ExplainEvidence, listed: int) -> str:
    p = parts(rule, ev)
    assert p is not None
    return render(p, Choice(listed=listed, where=False, genre=False))


def test_the_fitters_pool_holds_rarer_context_words_and_longer_examples_than_describe():
    def window(text: str, fires: bool, source: str) -> TokenSequence:
        tokens = [w if i == 0 else " " + w for i, w in enumerate(text.split())]
        values = [2.0 if fires and t == " hash" else 0.0 for t in tokens]
        return TokenSequence(tokens, list(range(len(tokens))), values, source)

    # "object" is in 3 of 40 firing windows (7.5%, under describe's 10%) and in 1 of 40 silent
    # ones (2.3x as common, with half a window added to each count)
    firing = [window(f"one two three hash four five six w{i}", True, "decile:5") for i in range(37)]
    firing += [window("one two object three hash four five six", True, "decile:5")] * 3
    silent = [window(f"seven eight nine ten s{i}", False, "silent") for i in range(39)]
    silent += [window("seven object eight nine ten", False, "silent")]
    ev = ExplainEvidence(0, exemplars=firing[:1], firing=firing[1:], silent=silent,
                         candidate_tokens=[(" hash", 0.9)])  # fmt: skip
    rule = Rule((" hash",))
    narrow = parts(rule, ev, 12, 1)
    wide = parts(rule, ev, 12, 1, radius=3, support=0.05, enrichment=1.5)
    assert narrow is not None and wide is not None
    assert "object" not in narrow.near and "object" in wide.near
    assert narrow.examples == ["two three hash four five"]
    assert wide.examples == ["one two three hash four five six"]
