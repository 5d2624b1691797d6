"""Rules: what a context explanation says, how it is read back and simulated, how it is chosen."""

from __future__ import annotations

import random

import numpy as np

from saeinverse.explain.context import (
    ContextExplainer,
    Side,
    TokensExplainer,
    explain_side_score,
)
from saeinverse.explain.evidence import ExplainEvidence, HeldoutEvidence, TokenSequence
from saeinverse.explain.rules import (
    Rule,
    RuleSimulator,
    parse_rule,
    previous_kind,
    starts_word,
)
from saeinverse.explain.scoring import score_explanation

WORDS = [" the", " cat", " sat", " on", " a", " mat", " new", " York", " bank", " river"]


def window(rng: random.Random, plant: list[str] | None = None, fire_after: str = " new"):
    """Random words; ' York' fires only right after ' new' (the planted context rule)."""
    tokens = [rng.choice(WORDS) for _ in range(12)]
    if plant:
        at = rng.randrange(1, 12 - len(plant))
        tokens[at : at + len(plant)] = plant
    acts = [
        1.0 if t == " York" and i > 0 and tokens[i - 1] == fire_after else 0.0
        for i, t in enumerate(tokens)
    ]
    return TokenSequence(tokens, list(range(12)), acts, "exemplar" if any(acts) else "silent")


def contextual_case(seed: int, n: int = 50):
    """Positives hold 'new York'; hard negatives hold 'York' after another word; random ones
    hold no 'York'."""
    rng = random.Random(seed)
    positives = [window(rng, [" new", " York"]) for _ in range(n)]
    near = []
    while len(near) < n:
        seq = window(rng, [rng.choice([" the", " cat", " river"]), " York"])
        if not any(seq.activations):
            seq.source = "silent:token"
            near.append(seq)
    silent = []
    while len(silent) < n:
        seq = window(rng)
        if " York" not in seq.tokens:
            silent.append(seq)
    return positives, silent, near


def test_rule_text_round_trips_and_matches_in_context():
    rule = Rule((" York",), (" new",), "start")
    text = rule.text() + " (as in: “a «b»”)."
    assert text.startswith('Fires on " York" right after " new" at the start of a word')
    assert parse_rule(text) == rule
    assert rule.positions([" new", " York", " York", "new", "York"]) == [
        False, True, False, False, False,
    ]  # fmt: skip
    assert starts_word([" a", "b", "-", "c"], 1) is False and starts_word([" a", "-", "c"], 2)
    assert parse_rule("The feature fires on dates and years.").targets == ("dates", "years")


def test_context_explainer_finds_the_context_a_token_list_misses():
    positives, silent, near = contextual_case(seed=0)
    evidence = ExplainEvidence(
        0,
        exemplars=positives[:30],
        top_tokens=[(" York", 1.0)],
        silent=silent[:30] + near[:30],
    )
    context = ContextExplainer().explain_many([evidence])[0].rule
    tokens = TokensExplainer().explain_many([evidence])[0].rule
    assert parse_rule(context).after == (" new",) and parse_rule(context).targets == (" York",)
    assert parse_rule(tokens) == Rule((" York",))
    held_pos, held_silent, held_near = contextual_case(seed=1)
    held = HeldoutEvidence(held_pos, held_silent, held_near)
    smart = score_explanation(RuleSimulator(), context, held, seed=0, n_boot=200)
    naive = score_explanation(RuleSimulator(), tokens, held, seed=0, n_boot=200)
    assert smart["detection"]["value"] == 1.0 and smart["detection_hard"]["value"] == 1.0
    assert naive["detection"]["value"] == 1.0  # lexical match passes random negatives...
    assert naive["detection_hard"]["value"] == 0.5  # ...and fails every hard one


def test_a_clause_that_separates_silent_windows_of_its_token_is_kept_and_needs_them():
    positives, silent, near = contextual_case(seed=4)
    held = HeldoutEvidence(*contextual_case(seed=5))
    found = {}
    for name, negatives in (("with", silent[:30] + near[:30]), ("without", silent[:30])):
        evidence = ExplainEvidence(0, exemplars=positives[:30], top_tokens=[(" York", 1.0)],
                                   silent=negatives)  # fmt: skip
        rule = ContextExplainer().choose(evidence)[0]
        scores = score_explanation(RuleSimulator(), rule.text(), held, seed=0, n_boot=100)
        found[name] = rule, scores["detection_hard"]["value"]
    assert found["with"][0].after == (" new",) and found["with"][1] == 1.0
    assert found["without"][0] == Rule((" York",)) and found["without"][1] == 0.5


def test_context_explainer_keeps_the_plain_list_when_context_adds_nothing():
    rng = random.Random(3)
    positives = [window(rng, [" new", " York"]) for _ in range(20)]
    for seq in positives:  # now ' York' fires everywhere
        seq.activations = [float(t == " York") for t in seq.tokens]
    silent = [s for s in (window(rng) for _ in range(60)) if " York" not in s.tokens][:20]
    evidence = ExplainEvidence(0, exemplars=positives, top_tokens=[(" York", 0.9), (" the", 0.1)],
                               silent=silent)  # fmt: skip
    rule, score = ContextExplainer().choose(evidence)
    assert rule == Rule((" York",)) and score == 1.0


def test_rules_with_several_clauses_read_back_even_when_a_token_holds_the_separator():
    rule = Rule((" if", '"; or on "'), alternatives=(Rule((" return",), ("\n    ",)),
                                                      Rule(("-",), word="inside")))  # fmt: skip
    text = rule.text() + ", mostly in python source text (as in: “a «b»”)."
    assert text.count("; or on ") == 3  # one inside the quoted token
    assert parse_rule(text) == rule
    assert rule.positions([" if", "x", "\n    ", " return", " return", "a", "-", " -"]) == [
        True, False, False, True, False, False, True, False,
    ]  # fmt: skip


def test_a_clause_on_the_kind_of_token_before_reads_back_and_matches():
    rule = Rule(("\n",), previous="word", alternatives=(Rule((" =",), previous="space"),))
    text = rule.text() + " (as in: “a «b»”)."
    assert text.startswith('Fires on "\\n" right after a word; or on " =" right after a space')
    assert parse_rule(text) == rule
    tokens = ["\n", " wraps", "\n", ":", "\n", "x_", " =", "  ", " =", "\n\n", "\n"]
    assert rule.positions(tokens) == [
        False, False, True, False, False, False, False, False, True, False, False,
    ]  # fmt: skip
    assert previous_kind("x_") == "word" and previous_kind(").") == "punct"
    assert previous_kind("\n  ") == "space" and previous_kind("") is None


def wrapped_lines_case(seed: int, n: int = 60):
    """'\n' fires where a line wraps inside a sentence (right after one of many words); it stays
    silent after ':' or '.' or another line break (the hard negatives)."""
    rng = random.Random(seed)
    words = [f" w{i}" for i in range(40)]

    def make(before, fires):
        tokens = [rng.choice(words) for _ in range(12)]
        at = rng.randrange(2, 11)
        tokens[at - 1 : at + 1] = [before, "\n"]
        acts = [float(fires and t == "\n") for t in tokens]
        return TokenSequence(tokens, list(range(12)), acts, "exemplar" if fires else "silent")

    positives = [make(rng.choice(words), True) for _ in range(n)]
    near = [make(rng.choice([":", ".", "\n\n"]), False) for _ in range(n)]
    for seq in near:
        seq.source = "silent:token"
    silent = [make(rng.choice(words), False) for _ in range(n)]
    for seq in silent:  # no line break at all
        seq.tokens = [t if t != "\n" else " w0" for t in seq.tokens]
    return positives, silent, near


def test_a_token_that_fires_only_after_a_word_gets_that_clause_and_passes_hard_negatives():
    positives, silent, near = wrapped_lines_case(seed=0)
    evidence = ExplainEvidence(0, exemplars=positives, silent=silent + near,
                               top_tokens=[("\n", 1.0)])  # fmt: skip
    rule = ContextExplainer().choose(evidence)[0]
    assert rule == Rule(("\n",), previous="word")
    held = HeldoutEvidence(*wrapped_lines_case(seed=1))
    smart = score_explanation(RuleSimulator(), rule.text(), held, seed=0, n_boot=100)
    naive = score_explanation(RuleSimulator(), Rule(("\n",)).text(), held, seed=0, n_boot=100)
    assert smart["detection_hard"]["value"] == 1.0 and naive["detection_hard"]["value"] == 0.5


def two_context_case(seed: int, n: int = 60):
    """' York' fires right after ' new' and ' bank' fires at the start of a word, never inside
    one; negatives hold ' York' after another word, 'bank' inside a word, or neither."""
    rng = random.Random(seed)
    filler = [" the", " cat", " sat", " on", " a", " mat", " river"]

    def make(plant, fires):
        tokens = [rng.choice(filler) for _ in range(12)]
        at = rng.randrange(1, 12 - len(plant))
        tokens[at : at + len(plant)] = plant
        acts = [float(fires and ((t == " York" and tokens[i - 1] == " new") or t == " bank"))
                for i, t in enumerate(tokens)]  # fmt: skip
        return TokenSequence(tokens, list(range(12)), acts, "exemplar" if fires else "silent")

    positives = [make([" new", " York"] if i % 2 else [" bank"], True) for i in range(n)]
    near = [make([" the", " York"] if i % 2 else [" river", "bank"], False) for i in range(n)]
    for seq in near:
        seq.source = "silent:token"
    silent = [make([" cat"], False) for _ in range(n)]
    return positives, silent, near


def test_grown_rule_joins_clauses_that_no_single_clause_can_state():
    positives, silent, near = two_context_case(seed=0)
    evidence = ExplainEvidence(0, exemplars=positives, silent=silent + near,
                               top_tokens=[(" York", 0.5), (" bank", 0.5)])  # fmt: skip
    explainer = ContextExplainer()
    rule, score = explainer.choose(evidence)
    assert score == 1.0 and len(rule.clauses()) == 2
    assert {(c.targets, c.after) for c in rule.clauses()} >= {((" York",), (" new",))}
    side = Side(positives, silent, near)
    every = np.ones(len(side.windows), dtype=bool)
    fitted = explainer.fitted(explainer.tokens(evidence), side, every, Rule((" York",)))
    best_single = max(explain_side_score(r, positives, silent, near)
                      for key, r in fitted.items() if key[0] == "single")  # fmt: skip
    assert best_single < 0.9
    held_pos, held_silent, held_near = two_context_case(seed=1)
    held = HeldoutEvidence(held_pos, held_silent, held_near)
    scores = score_explanation(RuleSimulator(), rule.text(), held, seed=0, n_boot=100)
    assert scores["detection"]["value"] == 1.0 and scores["detection_hard"]["value"] == 1.0


def test_more_firing_windows_of_the_explaining_side_are_fitted_on_not_only_exemplars():
    positives, silent, near = two_context_case(seed=2)
    york = [p for p in positives if " York" in p.tokens]
    bank = [p for p in positives if " York" not in p.tokens]
    evidence = ExplainEvidence(0, exemplars=york[:8], firing=bank, silent=silent + near,
                               top_tokens=[(" York", 0.5), (" bank", 0.5)])  # fmt: skip
    assert len(evidence.positives()) == 8 + len(bank)
    rule, _ = ContextExplainer().choose(evidence)
    assert any(" bank" in c.targets for c in rule.clauses())
    only_exemplars = ExplainEvidence(0, exemplars=york[:8], silent=silent + near,
                                     top_tokens=[(" York", 0.5), (" bank", 0.5)])  # fmt: skip
    narrow, _ = ContextExplainer().choose(only_exemplars)
    assert not any(" bank" in c.targets for c in narrow.clauses())


def test_a_target_that_fits_one_window_only_never_earns_its_place():
    """' York' fires in 40 windows; each of 12 more fires on a word seen in that window alone.
    Every such word raises the fit on the windows it was fitted on, none on a fold it was not."""
    rng = random.Random(5)
    positives = [window(rng, [" new", " York"]) for _ in range(40)]
    singles = [f" word{i}" for i in range(12)]
    for word in singles:
        tokens = [rng.choice(WORDS[:6]) for _ in range(12)]
        tokens[5] = word
        positives.append(TokenSequence(tokens, list(range(12)), [float(t == word) for t in tokens],
                                       "exemplar"))  # fmt: skip
    silent = [s for s in (window(rng) for _ in range(200)) if " York" not in s.tokens][:60]
    top = [(" York", 0.7)] + [(w, 0.3 / len(singles)) for w in singles]
    evidence = ExplainEvidence(0, exemplars=positives, top_tokens=top[:8], candidate_tokens=top,
                               silent=silent)  # fmt: skip
    rule, _ = ContextExplainer().choose(evidence)
    assert " York" in rule.targets and len([t for c in rule.clauses() for t in c.targets]) <= 2
    side = Side(positives, silent, [])
    every = np.ones(len(side.windows), dtype=bool)
    in_sample = ContextExplainer().grow(ContextExplainer().tokens(evidence), side, every)
    assert len(in_sample) >= 12  # fitted on every window, each single word would be kept


PRECEDING_SNIPPET = """
import numpy as np
from saeinverse.explain.context import Side
from saeinverse.explain.evidence import TokenSequence

def window(before, target):
    return TokenSequence([before, target], [0, 1], [0.0, 1.0], "firing")

positives = [window(b, t) for b, t in (("x", "a"), ("y", "b"), ("z", "c"), ("w", "d"))]
side = Side(positives, [], [])
print(side.preceding(("d", "c", "b", "a"), np.ones(4, dtype=bool), 0.5, 4))
"""


def test_a_context_clause_does_not_depend_on_the_hash_seed():
    """Tied preceding tokens are ranked by their text, not by a set's order (which changes with
    PYTHONHASHSEED from one process to the next: an interrupted run once resumed to another
    rule)."""
    import os
    import subprocess
    import sys

    outputs = set()
    for hash_seed in ("1", "2", "3", "4", "5", "6"):
        env = {**os.environ, "PYTHONHASHSEED": hash_seed}
        done = subprocess.run(
            [sys.executable, "-c", PRECEDING_SNIPPET], env=env, capture_output=True, text=True
        )
        assert done.returncode == 0, done.stderr
        outputs.add(done.stdout.strip())
    assert outputs == {"('w', 'x')"}
