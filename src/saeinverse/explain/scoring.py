"""Scores of an explanation on held-out evidence, against the shuffled baseline, and the inversion check.

- **detection**: each held-out window (positives: the feature fires somewhere in it; negatives:
  it fires nowhere) is shown unmarked; the scorer says from the explanation alone whether the
  feature fires. Balanced accuracy = (true-positive rate + true-negative rate) / 2, reported
  twice: against the random negatives (``detection``) and against the hard negatives, silent
  windows that share the explanation's surface (``detection_hard``).
- **fuzzing**: each held-out positive is shown twice: once with its firing tokens marked
  (label: correct) and once with as many non-firing tokens of it marked at random (label:
  wrong); the scorer says whether the marked tokens are where the explanation says it fires.
  Balanced accuracy over those items.
- **baseline**: the same scorer on the same items with another feature's explanation (a
  derangement of the explanations, drawn with the seed). Every score carries a bootstrap 95%
  interval, and the verdict compares it with its baseline (``saeinverse.explain.intervals``).
- **inversion check**: a fresh forward on each refined prompt (``score_prompt``): does it still
  fire, and how strongly relative to the feature's dataset maximum?

A scorer answers each question with P(yes) (1.0 / 0.0 for a plain word; a local LM gives its
own probability): "yes" above 0.5. An answer that cannot be read as yes / no counts as "no" and
is counted in ``unparsed``. Beside balanced accuracy, ``auc`` ranks the items by P(yes) (ROC
AUC: free of a scorer's bias toward one answer). Every chance level is 0.5.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, Protocol

import numpy as np

from saeinverse.explain.evidence import HeldoutEvidence, TokenSequence
from saeinverse.explain.intervals import auc, compare

if TYPE_CHECKING:
    from saeinverse.invert import Inversion

Task = Literal["detection", "fuzzing"]


@dataclass(frozen=True)
class ScoringItem:
    """One question to a scorer: a sequence (with marks, for fuzzing) and the true answer."""

    sequence: TokenSequence
    label: bool
    marks: tuple[bool, ...] | None = None
    """Marked tokens (fuzzing only)."""
    kind: str = "positive"
    """'positive', 'negative' (random) or 'hard' (a hard negative); fuzzing: 'positive' / 'negative'."""


class Scorer(Protocol):
    """Answers each item from an explanation alone: P(yes) in [0, 1], or None if unreadable.

    A plain yes / no is 1.0 / 0.0; the answer is "yes" when the value is above 0.5. A scorer's
    ``reads`` attribute ('rule' or 'sentence'; none: 'sentence') says which part of an
    ``Explanation`` it is given.
    """

    def predict(
        self, explanation: str, items: Sequence[ScoringItem], task: Task
    ) -> list[float | None]: ...


# ----------------------------------------------------------------------------- items


def detection_items(heldout: HeldoutEvidence) -> list[ScoringItem]:
    """Positives, random negatives, then hard negatives, unmarked."""
    return (
        [ScoringItem(s, True) for s in heldout.positives]
        + [ScoringItem(s, False, kind="negative") for s in heldout.negatives]
        + [ScoringItem(s, False, kind="hard") for s in heldout.hard_negatives]
    )


def fuzzing_items(heldout: HeldoutEvidence, seed: int) -> list[ScoringItem]:
    """For each positive: its firing tokens marked (True), and as many random silent ones (False).

    A positive whose every token fires gives only the correct item.
    """
    rng = np.random.default_rng(seed)
    items = []
    for seq in heldout.positives:
        firing = seq.firing
        items.append(ScoringItem(seq, True, tuple(firing)))
        silent = [i for i, f in enumerate(firing) if not f]
        n_marked = min(sum(firing), len(silent))
        if n_marked:
            chosen = set(rng.choice(silent, size=n_marked, replace=False).tolist())
            marks = tuple(i in chosen for i in range(len(firing)))
            items.append(ScoringItem(seq, False, marks, kind="negative"))
    return items


# ----------------------------------------------------------------------------- metrics


def _says_yes(prediction: float | bool | None) -> bool:
    return prediction is not None and float(prediction) > 0.5


def balanced_accuracy(
    labels: Sequence[bool], predictions: Sequence[float | bool | None]
) -> float | None:
    """(TPR + TNR) / 2, a prediction > 0.5 meaning yes and None meaning no; None without both classes."""
    labels = [bool(x) for x in labels]
    guesses = [_says_yes(p) for p in predictions]
    n_pos, n_neg = sum(labels), len(labels) - sum(labels)
    if n_pos == 0 or n_neg == 0:
        return None
    tp = sum(g and y for g, y in zip(guesses, labels, strict=True))
    tn = sum(not g and not y for g, y in zip(guesses, labels, strict=True))
    return 0.5 * (tp / n_pos + tn / n_neg)


def roc_auc(labels: Sequence[bool], predictions: Sequence[float | bool | None]) -> float | None:
    """P(a positive's P(yes) > a negative's), ties counting half (None counts as 0); None without both classes."""
    values = [0.0 if p is None else float(p) for p in predictions]
    pos = [v for v, y in zip(values, labels, strict=True) if y]
    neg = [v for v, y in zip(values, labels, strict=True) if not y]
    if not pos or not neg:
        return None
    return auc(pos, neg)


def predict(
    scorer: Scorer, explanation: str, items: list[ScoringItem], task: Task
) -> list[float | None]:
    """The scorer's answers to ``items`` (one per item, checked)."""
    if not items:
        return []
    predictions = list(scorer.predict(explanation, items, task))
    if len(predictions) != len(items):
        raise ValueError(f"scorer returned {len(predictions)} answers for {len(items)} items")
    return predictions


def summarise(
    items: list[ScoringItem],
    own: list[float | None],
    base: list[float | None] | None,
    negative_kind: str,
    *,
    n_boot: int,
    seed: int,
) -> dict[str, Any]:
    """Balanced accuracy of ``own`` answers (positives vs the ``negative_kind`` items) with its
    interval, TPR / TNR, unparsed answers, threshold-free AUC and, with ``base``, the baseline's
    score and the verdict (``intervals.compare``)."""
    pos = [i for i, it in enumerate(items) if it.kind == "positive"]
    neg = [i for i, it in enumerate(items) if it.kind == negative_kind]
    yes = [float(_says_yes(p)) for p in own]
    base_yes = None if base is None else [float(_says_yes(p)) for p in base]
    out = compare(
        [yes[i] for i in pos],
        [yes[i] for i in neg],
        None if base_yes is None else [base_yes[i] for i in pos],
        None if base_yes is None else [base_yes[i] for i in neg],
        n_boot=n_boot,
        seed=seed,
    )
    labels = [True] * len(pos) + [False] * len(neg)
    chosen = [own[i] for i in pos + neg]
    return {
        "balanced_accuracy": out["value"],
        **out,
        "n": len(labels),
        "tpr": sum(yes[i] for i in pos) / len(pos) if pos else None,
        "tnr": sum(1 - yes[i] for i in neg) / len(neg) if neg else None,
        "unparsed": sum(p is None for p in chosen),
        "auc": roc_auc(labels, chosen),
    }


def score_explanation(
    scorer: Scorer,
    explanation: str,
    heldout: HeldoutEvidence,
    seed: int,
    baseline: str | None = None,
    *,
    n_boot: int = 1000,
) -> dict[str, dict[str, Any]]:
    """Detection (random and hard negatives) and fuzzing of one explanation on one feature's
    held-out evidence; with ``baseline`` (another feature's explanation) scored on the same
    items, each score's verdict against it."""
    detection = detection_items(heldout)
    fuzzing = fuzzing_items(heldout, seed)
    own_d = predict(scorer, explanation, detection, "detection")
    own_f = predict(scorer, explanation, fuzzing, "fuzzing")
    base_d = base_f = None
    if baseline is not None:
        base_d = predict(scorer, baseline, detection, "detection")
        base_f = predict(scorer, baseline, fuzzing, "fuzzing")
    kw = {"n_boot": n_boot, "seed": seed}
    return {
        "detection": summarise(detection, own_d, base_d, "negative", **kw),
        "detection_hard": summarise(detection, own_d, base_d, "hard", **kw),
        "fuzzing": summarise(fuzzing, own_f, base_f, "negative", **kw),
    }


# ----------------------------------------------------------------------------- baseline


def derangement(n: int, seed: int) -> list[int] | None:
    """A permutation of range(n) with no fixed point (None when n < 2), drawn with the seed."""
    if n < 2:
        return None
    rng = np.random.default_rng([int(seed), n])
    while True:  # about e tries on average
        perm = rng.permutation(n)
        if not np.any(perm == np.arange(n)):
            return [int(i) for i in perm]


# ----------------------------------------------------------------------------- inversion check


def inversion_check(model, sae, inversion: Inversion, dataset_max: float | None) -> dict[str, Any]:
    """Does the refined prompt still fire on a fresh forward, and how strongly vs the dataset max?"""
    from saeinverse.invert import score_prompt

    if not inversion.refined_tokens:
        return {
            "text": inversion.refined_text, "activation": None, "dataset_max": dataset_max,
            "ratio": None, "fires": False, "position": inversion.position,
        }  # fmt: skip
    activation = score_prompt(
        model, sae, inversion.feature_id, inversion.refined_tokens, inversion.position
    )
    reference = dataset_max if dataset_max is not None else inversion.dataset_max
    ratio = activation / reference if reference and reference > 0 else None
    return {
        "text": inversion.refined_text,
        "activation": activation,
        "reported_activation": inversion.refined_activation,
        "dataset_max": reference,
        "ratio": ratio,
        "fires": activation > 0,
        "position": inversion.position,
    }
