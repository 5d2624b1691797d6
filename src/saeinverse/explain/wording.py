"""The sentence's wording chosen on the explaining side: which parts say the most about the feature.

``sentence.describe`` says a rule's parts in a fixed order and drops them, last first, until
the sentence fits ``MAX_WORDS``. Which parts tell a reader the most differs by feature: the
genre says nothing when the feature fires in the corpus's commonest genre, an example of code
says more than a context word about a code feature. ``SentenceFitter`` chooses them from the
evidence, as the rule's size is chosen (``saeinverse.explain.context``), on the explaining side
only; the held-out windows never take part.

Each sentence the parts can make is embedded (``embed``: the embedding judge's model,
all-MiniLM-L6-v2), and so is each window of the explaining side; a sentence's *fit* is the ROC AUC
of its cosine similarity, firing windows against random silent ones; the firing windows are those
of the explaining side's other firing prompts, not the ones its examples are quoted from
(``fit_windows``). The search starts from the sentence's core (the targets, their position, the
genre: ``describe``'s longest form that fits without examples or context words) and takes, one at a
time, the change that raises the fit most: add one of ``POOL_NEAR`` context words or one of
``POOL_EXAMPLES`` examples, list one target or ``LISTED``, say the genre or not. Its pool is wider
than ``describe``'s parts: context words half as common in the firing windows (``POOL_SUPPORT``)
and less enriched (``POOL_ENRICHMENT``), examples of ``POOL_RADIUS`` tokens either side of the
peak, since a part enters only when it raises the fit. The position stays as the core says it: it
is part of what fires (letting the search drop it moved the bench's held-out judge score by 0.001).
It stops when no change that keeps the sentence within ``MAX_WORDS`` raises the fit by more than
``MIN_GAIN``. Without firing or random silent windows it falls back to ``describe``.

The embedding judge scores the same kind of similarity on the held-out windows, so this is the
judge's own yardstick applied to the explaining side, as the rule is fitted with the simulator
that scores it: a sentence wins only when its words match windows it was not chosen on.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace

import numpy as np

from saeinverse.explain.evidence import ExplainEvidence, TokenSequence
from saeinverse.explain.intervals import auc
from saeinverse.explain.judge import window_text
from saeinverse.explain.rules import Rule
from saeinverse.explain.sentence import (
    LISTED,
    MAX_WORDS,
    SHORTER,
    Choice,
    Parts,
    describe,
    parts,
    render,
    word_count,
)

POOL_NEAR = 48
"""Context words the search may add (most enriched first)."""
POOL_SUPPORT, POOL_ENRICHMENT = 0.05, 1.5
"""A context word the search may add is in at least this share of the firing windows (and 3),
and this many times as common there as in the random silent ones: looser than ``describe``'s
(``sentence.CONTEXT_SUPPORT``, ``CONTEXT_ENRICHMENT``), since only a word that raises the fit is
taken."""
POOL_EXAMPLES = 32
"""Examples the search may add (from exemplars and decile samples that read differently)."""
POOL_RADIUS = 3
"""Tokens either side of an example's peak (``describe`` quotes 2): a longer quote is more
of the window the judge compares the sentence with."""
MIN_GAIN = 1e-3
"""A change is taken only when it raises the fit by more than this."""
MIN_OTHERS = 10
"""The fit's firing side is the explaining side's other firing windows (not the exemplars and
decile samples that examples are quoted from) when it has at least this many of them."""

Embed = Callable[[Sequence[str]], np.ndarray]
"""Texts -> Float[ndarray, "n d"] unit rows (``EmbeddingJudge.embed``)."""


class SentenceFitter:
    """A rule's sentence, its parts chosen by how well it matches the firing windows (see the
    module docstring)."""

    def __init__(self, embed: Embed):
        self.embed = embed

    def describe(self, rule: Rule, evidence: ExplainEvidence) -> str:
        firing = [window_text(s) for s in fit_windows(evidence)]
        silent = [window_text(s) for s in evidence.silent if s.source == "silent"]
        p = parts(
            rule, evidence, POOL_NEAR, POOL_EXAMPLES,
            radius=POOL_RADIUS, support=POOL_SUPPORT, enrichment=POOL_ENRICHMENT,
        )  # fmt: skip
        start = None if p is None else core(p)
        if not firing or not silent or start is None:
            return describe(rule, evidence)
        windows = self.embed(firing + silent)
        on, off = windows[: len(firing)], windows[len(firing) :]
        fits: dict[Choice, float] = {}

        def fit(choices: list[Choice]) -> list[float]:
            new = [c for c in choices if c not in fits]
            if new:
                vectors = self.embed([render(p, c) for c in new])
                for c, v in zip(new, vectors, strict=True):
                    fits[c] = auc(on @ v, off @ v)
            return [fits[c] for c in choices]

        best, best_fit = start, fit([start])[0]
        while True:
            moves = [m for m in changes(p, best) if word_count(render(p, m)) <= MAX_WORDS]
            if not moves:
                break
            scores = fit(moves)
            i = int(np.argmax(scores))
            if scores[i] <= best_fit + MIN_GAIN:
                break
            best, best_fit = moves[i], scores[i]
        return render(p, best)


def fit_windows(evidence: ExplainEvidence) -> list[TokenSequence]:
    """The firing windows a sentence's fit is measured on: the explaining side's firing prompts
    other than the exemplars and decile samples (``MIN_OTHERS`` or more), else every firing
    window. An example quoted from a window matches that window almost exactly, which would
    favour examples over words for no held-out gain; and the held-out positives are drawn as the
    other firing prompts are, not as the strongest windows."""
    others = [s for s in evidence.firing if s.max_activation > 0]
    return others if len(others) >= MIN_OTHERS else evidence.positives()


def core(p: Parts) -> Choice | None:
    """``describe``'s longest form without examples or context words that fits (None: none)."""
    for _, _, listed, keep_genre, keep_where in SHORTER:
        choice = Choice(listed, keep_where, keep_genre)
        if word_count(render(p, choice)) <= MAX_WORDS:
            return choice
    return None


def changes(p: Parts, c: Choice) -> list[Choice]:
    """Every choice one change away from ``c`` (see the module docstring), in a fixed order."""
    out = [replace(c, listed=1 if c.listed != 1 else LISTED)]
    if p.genre:
        out.append(replace(c, genre=not c.genre))
    out += [
        replace(c, near=tuple(sorted((*c.near, i)))) for i in range(len(p.near)) if i not in c.near
    ]
    out += [
        replace(c, examples=tuple(sorted((*c.examples, i))))
        for i in range(len(p.examples))
        if i not in c.examples
    ]
    return out
