"""The `context` explainer: the rule (``saeinverse.explain.rules``) that best separates the
explaining side's firing windows from its silent ones.

Two families of candidates compete on the explain-side balanced accuracy
(``explain_side_score``): single clauses over the top 1, 2, … tokens (alone, right after the
tokens that precede their firing occurrences, at a word's start or inside a word), and a rule
grown greedily from one-token clauses over the evidence's ``candidate_tokens``. Ties go to the
simpler rule. The held-out windows never take part in the choice.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import replace

import numpy as np

from saeinverse.explain.evidence import ExplainEvidence, TokenSequence, normalise
from saeinverse.explain.rules import (
    Rule,
    main_genre,
    token_list,
    with_examples,
)

AFTER_COVERED = 0.8
"""The 'right after' set grows until it precedes this share of the firing occurrences."""
MAX_AFTER = 6
AFTER_LEVELS = (0.5,)
"""Shares of a token's firing occurrences a grown clause's 'right after' set covers."""
MAX_AFTER_GROWN = 4
MIN_GAIN_WINDOWS = 1.0
"""A grown rule takes a clause only when it gains at least this many positive windows' worth."""
MAX_TARGETS = 24
"""The `context` explainer's rules name at most this many target tokens (from the evidence's
``candidate_tokens``)."""


class ContextExplainer:
    """The rule that best separates the explaining side's positives from its silent windows.

    Two families of candidates compete on the explain-side score (``explain_side_score``):
    single clauses over the top 1, 2, … tokens (``candidates``), and a rule grown greedily from
    one-token clauses (``grow``: each token bare, at a word's start, inside a word, or right after
    the tokens that precede it), adding the clause that raises the score most until none raises
    it by ``MIN_GAIN_WINDOWS`` positive windows' worth. Ties go to the simpler rule.
    """

    def __init__(self, max_tokens: int = 8, max_targets: int = MAX_TARGETS):
        self.max_tokens, self.max_targets = max_tokens, max(max_targets, max_tokens)

    def explain_many(self, evidence: Sequence[ExplainEvidence]) -> list[str]:
        return [with_examples(self.choose(e)[0], e, main_genre(e)) for e in evidence]

    def choose(self, evidence: ExplainEvidence) -> tuple[Rule, float]:
        """The best candidate rule and its explain-side balanced accuracy."""
        positives = evidence.positives()
        negatives = [s for s in evidence.silent if s.source == "silent"]
        near = [s for s in evidence.silent if s.source != "silent"]
        fallback = token_list(evidence, self.max_tokens)
        if not positives or not (negatives or near):
            return fallback, float("nan")
        tokens = self.tokens(evidence)
        rules = [*self.candidates(tokens, positives), self.grow(tokens, positives, negatives, near)]
        best, best_score = fallback, explain_side_score(fallback, positives, negatives, near)
        for rule in rules:
            score = explain_side_score(rule, positives, negatives, near)
            if score > best_score + 1e-9 or (
                abs(score - best_score) <= 1e-9 and rule.complexity() < best.complexity()
            ):
                best, best_score = rule, score
        return best, best_score

    def tokens(self, evidence: ExplainEvidence) -> list[str]:
        """The candidate target tokens, largest mass first, one spelling each."""
        by_form: dict[str, str] = {}
        for token, _ in evidence.candidate_tokens or evidence.top_tokens:
            by_form.setdefault(normalise(token), token)
        return list(by_form.values())[: self.max_targets]

    def candidates(self, tokens: list[str], positives: list[TokenSequence]) -> list[Rule]:
        rules = []
        for k in range(1, min(len(tokens), self.max_tokens) + 1):
            base = Rule(tuple(tokens[:k]))
            after = preceding(base, positives)
            rules += [base, replace(base, word="start"), replace(base, word="inside")]
            if after:
                rules += [replace(base, after=after), replace(base, after=after, word="start")]
        return rules

    def grow(
        self,
        tokens: list[str],
        positives: list[TokenSequence],
        negatives: list[TokenSequence],
        near: list[TokenSequence],
    ) -> Rule:
        """The greedy rule (see the class docstring); empty targets when no clause helps."""
        units = []
        for token in tokens:
            base = Rule((token,))
            units += [base, replace(base, word="start"), replace(base, word="inside")]
            for covered in AFTER_LEVELS:
                after = preceding(base, positives, covered, MAX_AFTER_GROWN)
                if after and replace(base, after=after) not in units:
                    units.append(replace(base, after=after))
        groups = [g for g in (positives, negatives, near) if g]
        windows = [w for g in groups for w in g]
        hits = _unit_hits(units, windows)
        bounds = np.cumsum([0] + [len(g) for g in groups])
        weights = np.zeros(len(windows))
        weights[: bounds[1]] = 0.5 / len(positives)
        for lo, hi in zip(bounds[1:-1], bounds[2:], strict=True):
            weights[lo:hi] = -0.5 / (hi - lo) / (len(groups) - 1)
        fired = np.zeros(len(windows), dtype=bool)
        chosen: list[Rule] = []
        min_gain = MIN_GAIN_WINDOWS * 0.5 / len(positives)
        while len(chosen) < self.max_targets:
            gains = ((hits & ~fired) * weights).sum(1)
            best = int(gains.argmax())
            if gains[best] < min_gain:
                break
            chosen.append(units[best])
            fired |= hits[best]
        return _merge(chosen)


def _unit_hits(units: list[Rule], windows: list[TokenSequence]) -> np.ndarray:
    """Bool[ndarray, "units windows"]: whether each one-token clause fires somewhere in each window."""
    normed = [[normalise(t) for t in seq.tokens] for seq in windows]
    index = []
    for tokens in normed:
        where: dict[str, list[int]] = {}
        for i, token in enumerate(tokens):
            where.setdefault(token, []).append(i)
        index.append(where)
    hits = np.zeros((len(units), len(windows)), dtype=bool)
    for u, unit in enumerate(units):
        target = normalise(unit.targets[0])
        for w, (seq, where) in enumerate(zip(windows, index, strict=True)):
            hits[u, w] = any(unit.holds_at(seq.tokens, normed[w], i) for i in where.get(target, ()))
    return hits


def _merge(units: list[Rule]) -> Rule:
    """One rule from one-token clauses: those with the same context share a clause (bare first)."""
    clauses: dict[tuple, list[str]] = {}
    for unit in sorted(units, key=lambda u: (bool(u.after), u.word is not None)):
        clauses.setdefault((unit.after, unit.word), []).extend(unit.targets)
    rules = [Rule(tuple(targets), after, word) for (after, word), targets in clauses.items()]
    if not rules:
        return Rule(())
    return replace(rules[0], alternatives=tuple(rules[1:]))


def preceding(
    rule: Rule,
    positives: list[TokenSequence],
    share: float = AFTER_COVERED,
    max_after: int = MAX_AFTER,
) -> tuple[str, ...]:
    """The tokens just before the rule's firing target occurrences, most frequent first, until
    they cover ``share`` of them (at most ``max_after``; empty when that is not reached)."""
    counts: Counter[str] = Counter()
    spelling: dict[str, str] = {}
    total = 0
    for seq in positives:
        for i, (hit, value) in enumerate(zip(rule.positions(seq.tokens), seq.activations,
                                              strict=True)):  # fmt: skip
            if hit and value > 0 and i > 0:
                key = normalise(seq.tokens[i - 1])
                counts[key] += 1
                spelling.setdefault(key, seq.tokens[i - 1])
                total += 1
    chosen, covered = [], 0
    for key, count in counts.most_common(max_after):
        chosen.append(spelling[key])
        covered += count
        if covered >= share * total:
            return tuple(chosen)
    return ()


def explain_side_score(
    rule: Rule,
    positives: list[TokenSequence],
    negatives: list[TokenSequence],
    near: list[TokenSequence],
) -> float:
    """Balanced accuracy of the rule's detection on the explaining side: true-positive rate
    against the mean true-negative rate of random and near (top-token) silent windows."""

    def fires(seq: TokenSequence) -> bool:
        return any(rule.positions(seq.tokens))

    tpr = sum(map(fires, positives)) / len(positives)
    tnrs = [1 - sum(map(fires, group)) / len(group) for group in (negatives, near) if group]
    return 0.5 * (tpr + sum(tnrs) / len(tnrs))
