"""Evidence about one feature: token windows with per-token activations, in two separate parts.

``ExplainEvidence`` is everything the explainer may see (top exemplars, decile samples, refined
prompts, top tokens); ``HeldoutEvidence`` (activating and non-activating windows) scores the
explanation and is never handed to an explainer. How they are drawn: ``saeinverse.explain.sampling``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

MARK_OPEN, MARK_CLOSE = "«", "»"
"""Delimiters around marked (activating) tokens in rendered text."""


@dataclass
class TokenSequence:
    """A window of tokens with the feature's activation on each of them."""

    tokens: list[str]
    token_ids: list[int]
    activations: list[float]
    source: str
    """'exemplar', 'decile:<d>' (d = 0 lowest .. 9 highest), 'refined', 'heldout', 'silent',
    'negative' (random) or 'hard:token' / 'hard:genre' (a hard negative)."""
    prompt_index: int | None = None
    """Index in the collection prompts, or in the extra held-out prompts when ``origin`` is
    'extra' (None for a refined prompt)."""
    start: int = 0
    """Position of ``tokens[0]`` in its prompt (the start token is position 0)."""
    genre: str | None = None
    """The bundled corpus's genre of its prompt (None: not a bundled text)."""
    origin: str = "run"
    """'run': a prompt of the collection; 'extra': a bundled-corpus prompt drawn to top up the
    held-out or the explaining side."""

    @property
    def max_activation(self) -> float:
        return max(self.activations, default=0.0)

    @property
    def firing(self) -> list[bool]:
        """Which tokens the feature fires on (activation > 0)."""
        return [a > 0 for a in self.activations]

    def render(self, marks: Sequence[bool] | None = None) -> str:
        """The text, with each run of marked tokens wrapped in «»; ``marks=None``: the firing ones."""
        marks = self.firing if marks is None else list(marks)
        parts, inside = [], False
        for token, marked in zip(self.tokens, marks, strict=True):
            if marked != inside:
                parts.append(MARK_OPEN if marked else MARK_CLOSE)
                inside = marked
            parts.append(display(token))
        if inside:
            parts.append(MARK_CLOSE)
        return "".join(parts)

    def plain(self) -> str:
        """The text with no marks."""
        return self.render([False] * len(self.tokens))


def display(token: str) -> str:
    """A token as shown in prompts: newlines and tabs made visible, marks escaped."""
    token = token.replace("\n", "\\n").replace("\t", "\\t")
    return token.replace(MARK_OPEN, "<<").replace(MARK_CLOSE, ">>")


def normalise(token: str) -> str:
    """Tokens compare case- and space-insensitively (a space-only token compares as itself)."""
    token = display(token)
    return token.strip().lower() or token


@dataclass
class ExplainEvidence:
    """Everything the explainer may see about one feature."""

    feature_id: int
    exemplars: list[TokenSequence] = field(default_factory=list)
    decile_samples: list[TokenSequence] = field(default_factory=list)
    refined: list[TokenSequence] = field(default_factory=list)
    top_tokens: list[tuple[str, float]] = field(default_factory=list)
    """(token, share of the feature's activation mass), largest first, held-out prompts excluded."""
    silent: list[TokenSequence] = field(default_factory=list)
    """Windows of the explaining side where the feature never fires (random ones, then ones that
    hold its top tokens): what an explanation must not cover."""
    firing: list[TokenSequence] = field(default_factory=list)
    """More firing windows of the explaining side (around the peak of the other firing prompts
    outside the held-out set): what a rule is fitted on, beside the exemplars and decile samples.
    Not shown to a language model."""
    candidate_tokens: list[tuple[str, float]] = field(default_factory=list)
    """A longer ``top_tokens`` list (same order and shares) a rule may draw its targets from."""

    def positives(self) -> list[TokenSequence]:
        """Every firing window of the explaining side (exemplars, decile samples, ``firing``)."""
        return [s for s in self.exemplars + self.decile_samples + self.firing
                if s.max_activation > 0]  # fmt: skip

    def sequences(self) -> list[TokenSequence]:
        return [*self.exemplars, *self.decile_samples, *self.refined]


@dataclass
class HeldoutEvidence:
    """What scores an explanation; never shown to the explainer.

    ``negatives`` are random silent windows; ``hard_negatives`` are silent windows that share the
    explanation's surface: they hold one of the feature's top tokens (source 'hard:token'), or,
    when those run short, come from the genre of its exemplars ('hard:genre').
    """

    positives: list[TokenSequence] = field(default_factory=list)
    negatives: list[TokenSequence] = field(default_factory=list)
    hard_negatives: list[TokenSequence] = field(default_factory=list)


@dataclass
class FeatureEvidence:
    feature_id: int
    dataset_max: float | None
    explain: ExplainEvidence
    heldout: HeldoutEvidence


def evidence_summary(evidence: FeatureEvidence) -> dict[str, Any]:
    """A small JSON-ready summary of what the explainer saw and what scored it."""
    ex = evidence.explain
    return {
        "top_tokens": [[t, round(s, 4)] for t, s in ex.top_tokens],
        "exemplars": [s.render() for s in ex.exemplars[:3]],
        "n_explain_sequences": len(ex.sequences()),
        "n_heldout_positive": len(evidence.heldout.positives),
        "n_heldout_negative": len(evidence.heldout.negatives),
        "n_heldout_hard_negative": len(evidence.heldout.hard_negatives),
        "hard_negative_kinds": _kinds(evidence.heldout.hard_negatives),
        "heldout_origins": _kinds(
            evidence.heldout.positives + evidence.heldout.negatives, "origin"
        ),
    }


def _kinds(sequences: list[TokenSequence], attribute: str = "source") -> dict[str, int]:
    """How many sequences have each value of ``attribute``."""
    counts: dict[str, int] = {}
    for seq in sequences:
        key = str(getattr(seq, attribute))
        counts[key] = counts.get(key, 0) + 1
    return counts
