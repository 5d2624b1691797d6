"""The `context` and `tokens` explainers: rules (``saeinverse.explain.rules``) and a sentence.

The `context` explainer fits the rule that best separates the explaining side's firing windows
from its silent ones, as small as cross-validation allows. Each candidate is a *recipe*, a way
to fit a rule on some windows:

- ``single``: one clause over the top k tokens (k = 1 … ``max_tokens``): alone, at a word's
  start, inside a word, right after the tokens that precede their firing occurrences, or right
  after the kind of token (a word, punctuation, a space or line break) that most often does;
- ``grown``: a rule grown greedily from one-token clauses over the evidence's
  ``candidate_tokens`` (each bare, at a word's start, inside a word, right after the kind of
  token that most often precedes its firings, or right after the tokens that precede half of
  them), stopped after n of them (at most ``MAX_CLAUSES`` clauses).

**Size by cross-validation.** The explaining side's windows (firing, random silent, silent
around a top token) are cut into ``CV_FOLDS`` folds, stratified by kind and seeded by the
feature. Every recipe is fitted on all folds but one and scored on that one (balanced accuracy,
``explain_side_score``). The chosen recipe is the smallest (fewest targets, then fewest clauses,
then fewest words) whose mean fold score is within one standard error of the best mean; it is
then fitted on the whole explaining side. A clause or target thus stays only when it earns its
place on windows it was not fitted on. The held-out windows never take part.

Both explainers return an ``Explanation``: a plain sentence (``sentence.describe``, or its parts
chosen on the explaining side by ``wording.SentenceFitter``), then the rule with the genre and
examples (``rules.with_examples``).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import replace

import numpy as np

from saeinverse.explain.evidence import ExplainEvidence, TokenSequence, normalise
from saeinverse.explain.rules import Rule, main_genre, previous_kind, token_list, with_examples
from saeinverse.explain.sentence import Explanation, describe

AFTER_COVERED = 0.8
"""A single clause's 'right after' set grows until it precedes this share of the firings."""
MAX_AFTER = 6
AFTER_GROWN = 0.5
"""Share of a token's firing occurrences a grown clause's 'right after' set covers."""
MAX_AFTER_GROWN = 4
MAX_TARGETS = 24
"""The `context` explainer's rules name at most this many target tokens (from the evidence's
``candidate_tokens``)."""
MAX_CLAUSES = 3
"""A grown rule has at most this many clauses."""
CV_FOLDS = 10
"""Folds of the explaining side that choose a rule's size."""
Describe = Callable[[Rule, ExplainEvidence], str]
"""A rule's sentence: ``sentence.describe``, or ``wording.SentenceFitter.describe``."""
SINGLE_KINDS = ("bare", "start", "inside", "after", "after start", "after kind")


class ContextExplainer:
    """The smallest rule that separates the explaining side's positives from its silent windows
    as well as the best one does, within one standard error (see the module docstring)."""

    def __init__(
        self, max_tokens: int = 8, max_targets: int = MAX_TARGETS, sentence: Describe = describe
    ):
        self.max_tokens, self.max_targets = max_tokens, max(max_targets, max_tokens)
        self.sentence = sentence

    def explain_many(self, evidence: Sequence[ExplainEvidence]) -> list[Explanation]:
        out = []
        for e in evidence:
            rule = self.choose(e)[0]
            out.append(Explanation(self.sentence(rule, e), with_examples(rule, e, main_genre(e))))
        return out

    def choose(self, evidence: ExplainEvidence) -> tuple[Rule, float]:
        """The chosen rule and its balanced accuracy on the whole explaining side."""
        positives = evidence.positives()
        negatives = [s for s in evidence.silent if s.source == "silent"]
        near = [s for s in evidence.silent if s.source != "silent"]
        fallback = token_list(evidence, self.max_tokens)
        if not positives or not (negatives or near):
            return fallback, float("nan")
        side = Side(positives, negatives, near)
        tokens = self.tokens(evidence)
        everything = np.ones(len(side.windows), dtype=bool)
        final = self.fitted(tokens, side, everything, fallback)
        folds = side.folds(CV_FOLDS, evidence.feature_id)
        n_folds = int(folds.max()) + 1
        if n_folds < 2:  # too few windows to cross-validate: the best fit, ties to the simpler
            scores = {key: [side.score(side.hits(rule), everything)] for key, rule in final.items()}
        else:
            scores = {key: [] for key in final}
            for fold in range(n_folds):
                fitted = self.fitted(tokens, side, folds != fold, fallback)
                for key, rule in fitted.items():
                    scores[key].append(side.score(side.hits(rule), folds == fold))
        key = smallest_within_one_se(scores, {k: size(r) for k, r in final.items()})
        return final[key], side.score(side.hits(final[key]), everything)

    def tokens(self, evidence: ExplainEvidence) -> list[str]:
        """The candidate target tokens, largest mass first, one spelling each."""
        by_form: dict[str, str] = {}
        for token, _ in evidence.candidate_tokens or evidence.top_tokens:
            by_form.setdefault(normalise(token), token)
        return list(by_form.values())[: self.max_targets]

    def fitted(
        self, tokens: list[str], side: Side, train: np.ndarray, fallback: Rule
    ) -> dict[tuple, Rule]:
        """Every recipe's rule fitted on the ``train`` windows, by recipe key (targets: the
        candidate tokens that fire in a ``train`` window, in the candidates' order; the plain
        token list when none does)."""
        rules: dict[tuple, Rule] = {}
        tokens = [t for t in tokens if side.fires_on(normalise(t), train)] or list(fallback.targets)
        for k in range(1, self.max_tokens + 1):
            base = Rule(tuple(tokens[:k]))
            after = side.preceding(base.targets, train, AFTER_COVERED, MAX_AFTER) or ()
            before = side.preceding_kind(base.targets, train)
            variants = (base, replace(base, word="start"), replace(base, word="inside"),
                        replace(base, after=after), replace(base, after=after, word="start"),
                        replace(base, previous=before))  # fmt: skip
            for kind, rule in zip(SINGLE_KINDS, variants, strict=True):
                rules[("single", k, kind)] = rule
        path = self.grow(tokens, side, train)
        for n in range(1, self.max_targets + 1):
            rules[("grown", n)] = merge(path[:n])
        return rules

    def grow(self, tokens: list[str], side: Side, train: np.ndarray) -> list[Rule]:
        """One-token clauses in the greedy order: each adds the most explain-side balanced
        accuracy on ``train`` (until none adds any, or ``max_targets``), at most ``MAX_CLAUSES``
        contexts."""
        units = []
        for token in tokens:
            base = Rule((token,))
            units += [base, replace(base, word="start"), replace(base, word="inside")]
            before = side.preceding_kind(base.targets, train)
            if before is not None:
                units.append(replace(base, previous=before))
            after = side.preceding(base.targets, train, AFTER_GROWN, MAX_AFTER_GROWN)
            if after and replace(base, after=after) not in units:
                units.append(replace(base, after=after))
        if not units:
            return []
        hits = np.stack([side.clause_hits(u) for u in units])[:, train]
        weights = side.weights(train)
        contexts = [(u.after, u.word, u.previous) for u in units]
        fired = np.zeros(hits.shape[1], dtype=bool)
        chosen: list[int] = []
        while len(chosen) < self.max_targets:
            gains = ((hits & ~fired) * weights).sum(1)
            used = {contexts[i] for i in chosen}
            if len(used) >= MAX_CLAUSES:
                gains[[c not in used for c in contexts]] = -np.inf
            gains[chosen] = -np.inf
            best = int(gains.argmax())
            if gains[best] <= 1e-12:
                break
            chosen.append(best)
            fired |= hits[best]
        return [units[i] for i in chosen]


def size(rule: Rule) -> tuple[int, int, int]:
    """How big a rule reads: its targets, its clauses, its complexity."""
    clauses = rule.clauses() if rule.targets else ()
    return sum(len(c.targets) for c in clauses), len(clauses), rule.complexity()


def smallest_within_one_se(scores: dict[tuple, list[float]], sizes: dict[tuple, tuple]) -> tuple:
    """The smallest recipe whose mean fold score is within one standard error of the best
    mean (the larger mean among equally small ones)."""
    means = {k: float(np.mean(v)) for k, v in scores.items()}
    best = max(means, key=lambda k: (means[k], [-s for s in sizes[k]]))
    values = np.asarray(scores[best])
    se = float(values.std(ddof=1) / np.sqrt(len(values))) if len(values) > 1 else 0.0
    eligible = [k for k in scores if means[k] >= means[best] - se - 1e-9]
    return min(eligible, key=lambda k: (sizes[k], -means[k]))


def merge(units: list[Rule]) -> Rule:
    """One rule from one-token clauses: those with the same context share a clause (bare first)."""
    clauses: dict[tuple, list[str]] = {}
    for unit in sorted(units, key=lambda u: (bool(u.after), bool(u.previous), bool(u.word))):
        clauses.setdefault((unit.after, unit.word, unit.previous), []).extend(unit.targets)
    rules = [Rule(tuple(t), after, word, prev) for (after, word, prev), t in clauses.items()]
    if not rules:
        return Rule(())
    return replace(rules[0], alternatives=tuple(rules[1:]))


class Side:
    """The explaining side's windows: firing (group 0), random silent (1), silent around a top
    token (2); each clause's hits on them computed once."""

    def __init__(
        self,
        positives: list[TokenSequence],
        negatives: list[TokenSequence],
        near: list[TokenSequence],
    ):
        groups = [positives, negatives, near]
        self.windows = [w for g in groups for w in g]
        self.group = np.concatenate([np.full(len(g), i) for i, g in enumerate(groups)])
        self.normed = [[normalise(t) for t in w.tokens] for w in self.windows]
        self.index: list[dict[str, list[int]]] = []
        for tokens in self.normed:
            where: dict[str, list[int]] = {}
            for i, token in enumerate(tokens):
                where.setdefault(token, []).append(i)
            self.index.append(where)
        self._hits: dict[Rule, np.ndarray] = {}
        self._before: dict[tuple, list[str]] = {}
        self._firing: dict[str, set[int]] | None = None

    def folds(self, k: int, seed: int) -> np.ndarray:
        """Int[ndarray, "windows"]: each window's fold, stratified by group (fewer folds when
        a group has fewer than ``k`` windows)."""
        sizes = [int((self.group == g).sum()) for g in range(3)]
        k = min([k] + [s for s in sizes if s])
        rng = np.random.default_rng([int(seed), 5])
        fold = np.zeros(len(self.windows), dtype=np.int64)
        for g in range(3):
            where = np.flatnonzero(self.group == g)
            fold[where[rng.permutation(len(where))]] = np.arange(len(where)) % max(k, 1)
        return fold

    def fires_on(self, form: str, mask: np.ndarray) -> bool:
        """Whether the feature fires on a token of this normalised form in a masked positive."""
        if self._firing is None:
            self._firing = {}
            for w in np.flatnonzero(self.group == 0):
                for token, value in zip(self.normed[w], self.windows[w].activations, strict=True):
                    if value > 0:
                        self._firing.setdefault(token, set()).add(int(w))
        return any(mask[w] for w in self._firing.get(form, ()))

    def clause_hits(self, clause: Rule) -> np.ndarray:
        """Bool[ndarray, "windows"]: whether the clause (alternatives aside) holds somewhere."""
        found = self._hits.get(clause)
        if found is None:
            found = np.zeros(len(self.windows), dtype=bool)
            for w, (window, where) in enumerate(zip(self.windows, self.index, strict=True)):
                found[w] = any(clause.holds_at(window.tokens, self.normed[w], i)
                               for form in clause.target_forms for i in where.get(form, ()))  # fmt: skip
            self._hits[clause] = found
        return found

    def hits(self, rule: Rule) -> np.ndarray:
        """Bool[ndarray, "windows"]: whether the rule holds somewhere in each window."""
        out = np.zeros(len(self.windows), dtype=bool)
        for clause in rule.clauses() if rule.targets else ():
            out |= self.clause_hits(clause)
        return out

    def score(self, fired: np.ndarray, mask: np.ndarray) -> float:
        """Balanced accuracy on the windows in ``mask``: true-positive rate against the mean
        true-negative rate of the silent groups present."""
        tpr = fired[mask & (self.group == 0)].mean()
        tnrs = [1 - fired[mask & (self.group == g)].mean() for g in (1, 2)
                if (mask & (self.group == g)).any()]  # fmt: skip
        return float(0.5 * (tpr + np.mean(tnrs)))

    def weights(self, mask: np.ndarray) -> np.ndarray:
        """Each masked window's weight in the balanced accuracy (positives +, silent −)."""
        group = self.group[mask]
        present = [g for g in (1, 2) if (group == g).any()]
        weights = np.where(group == 0, 0.5 / max((group == 0).sum(), 1), 0.0)
        for g in present:
            weights[group == g] = -0.5 / (group == g).sum() / len(present)
        return weights

    def preceding(
        self, targets: tuple[str, ...], mask: np.ndarray, share: float, max_after: int
    ) -> tuple[str, ...]:
        """The tokens just before the targets' firing occurrences in the masked positives, most
        frequent first, until they cover ``share`` of them (at most ``max_after``; empty when
        that is not reached)."""
        counts: Counter[str] = Counter()
        spelling: dict[str, str] = {}
        for token in self._preceding(targets, mask):
            key = normalise(token)
            counts[key] += 1
            spelling.setdefault(key, token)
        total, chosen, covered = sum(counts.values()), [], 0
        ranked = sorted(counts.items(), key=lambda kc: (-kc[1], kc[0]))[:max_after]
        for key, count in ranked:
            chosen.append(spelling[key])
            covered += count
            if covered >= share * total:
                return tuple(chosen)
        return ()

    def preceding_kind(self, targets: tuple[str, ...], mask: np.ndarray) -> str | None:
        """What the token just before the targets' firing occurrences in the masked positives
        most often ends in (``rules.previous_kind``; None when they have none before them)."""
        kinds = Counter(previous_kind(t) for t in self._preceding(targets, mask))
        kinds.pop(None, None)
        return min(kinds, key=lambda k: (-kinds[k], k)) if kinds else None

    def _preceding(self, targets: tuple[str, ...], mask: np.ndarray) -> list[str]:
        """The token just before each firing occurrence of the targets in the masked positives
        (windows in order, then the targets' normalised forms in a fixed order: no hash-seed
        ties); scanned once per targets and mask, as both contexts read it."""
        forms = tuple(sorted({normalise(t) for t in targets}))
        key = (forms, mask.tobytes())
        found = self._before.get(key)
        if found is None:
            found = []
            for w in np.flatnonzero(mask & (self.group == 0)):
                window, where = self.windows[w], self.index[w]
                for form in forms:
                    found += [window.tokens[i - 1] for i in where.get(form, ())
                              if i > 0 and window.activations[i] > 0]  # fmt: skip
            self._before[key] = found
        return found


def explain_side_score(
    rule: Rule,
    positives: list[TokenSequence],
    negatives: list[TokenSequence],
    near: list[TokenSequence],
) -> float:
    """Balanced accuracy of the rule's detection on the explaining side: true-positive rate
    against the mean true-negative rate of random and near (top-token) silent windows."""
    side = Side(positives, negatives, near)
    return side.score(side.hits(rule), np.ones(len(side.windows), dtype=bool))


class TokensExplainer:
    """'Fires on "a", "b" (as in: “…«a»…”)': the top tokens, deterministic."""

    def __init__(self, max_tokens: int = 8, sentence: Describe = describe):
        self.max_tokens, self.sentence = max_tokens, sentence

    def explain_many(self, evidence: Sequence[ExplainEvidence]) -> list[Explanation]:
        out = []
        for e in evidence:
            rule = token_list(e, self.max_tokens)
            out.append(Explanation(self.sentence(rule, e), with_examples(rule, e)))
        return out
