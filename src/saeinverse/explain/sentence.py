"""What a reader sees first: one plain sentence of at most ``MAX_WORDS`` words naming what fires.

An explanation is an ``Explanation``: the ``sentence``, and the ``rule`` (the checkable
statement that follows it, ``saeinverse.explain.rules``; empty when the explainer writes only
words, as a language model does). ``describe`` builds the sentence of a rule from the rule and
its evidence:

- **what**: the targets' common word or stem (``the word "hash" (also "hashable")``), else the
  first few targets quoted (``"if", "else" or "elif", and 3 more tokens``);
- **where**: the position in the word (``at the start of a word``, ``inside a word``) and the
  tokens it needs before it (``right after "new"``), when every clause needs the same;
- **genre**: the genre most of the firing windows come from (``in Python code``);
- **breadth**: ``Fires weakly on many tokens; most strongly on …`` when the targets carry less
  than ``BROAD_SHARE`` of the feature's activation mass;
- **example**: a few words around the strongest firing of the top exemplar, while the sentence
  stays within ``MAX_WORDS``.

Parts are dropped (the example, then extra targets, then the genre, then the position) until
the sentence fits.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from saeinverse.explain.evidence import ExplainEvidence, display, normalise
from saeinverse.explain.rules import WORD_CLAUSES, Rule, main_genre

MAX_WORDS = 20
STEM_MIN = 3
"""Letters two targets must share at their start to be named by their common stem."""
BROAD_SHARE = 0.3
"""Below this share of the activation mass on its targets, a rule is said to be broad."""
LISTED = 3
"""Targets named in the sentence when they share no stem."""
EXAMPLE_RADIUS = 2
GENRES = {
    "python_docstring": "Python docstrings",
    "python_source": "Python code",
    "code_python": "Python code",
    "python_reference": "Python reference docs",
    "code_other": "source code",
    "other_languages": "non-English text",
    "numbers_data": "numeric data",
    "names_dates": "names and dates",
    "qa_trivia": "trivia questions",
    "social_chat": "chat messages",
    "emails_letters": "emails and letters",
    "legal_formal": "legal text",
    "reviews_opinion": "reviews",
    "speech_transcripts": "speech transcripts",
    "encyclopedic": "encyclopedia articles",
}
"""Bundled-corpus genres as a reader names them (any other: its name with spaces, 'text')."""


@dataclass(frozen=True)
class Explanation:
    """What an explainer writes for one feature: a sentence, then the rule (may be empty)."""

    sentence: str
    rule: str = ""

    def text(self) -> str:
        """Both, for a reader: the sentence, then the rule."""
        return f"{self.sentence} Rule: {self.rule}" if self.rule else self.sentence


def as_explanation(written: Explanation | str) -> Explanation:
    """An explainer's output as an ``Explanation`` (a plain string is a sentence, cut to
    ``MAX_WORDS`` words)."""
    if isinstance(written, Explanation):
        return written
    return Explanation(first_words(str(written), MAX_WORDS))


def first_words(text: str, n: int) -> str:
    """``text`` cut to its first ``n`` words (ending with a full stop when cut)."""
    words = text.split()
    if len(words) <= n:
        return text.strip()
    return " ".join(words[:n]).rstrip(",;:") + "."


def word_count(text: str) -> int:
    return len(text.split())


def describe(rule: Rule, evidence: ExplainEvidence) -> str:
    """The rule's sentence (see the module docstring)."""
    if not rule.targets:
        return "Fires on nothing the evidence shows."
    forms = _forms(rule)
    stem = common_stem(forms)
    genre = main_genre(evidence)
    where = _where(rule)
    example = _example(evidence)
    broad = _mass(rule, evidence) < BROAD_SHARE
    for listed, keep_genre, keep_where, keep_example in (
        (LISTED, True, True, True),
        (LISTED, True, True, False),
        (1, True, True, False),
        (1, False, True, False),
        (1, False, False, False),
    ):
        what = _what(forms, stem, listed)
        text = "Fires weakly on many tokens; most strongly on " if broad else "Fires on "
        text += what
        if keep_where and where:
            text += " " + where
        if keep_genre and genre:
            text += " in " + GENRES.get(genre, genre.replace("_", " ") + " text")
        if keep_example and example:
            text += f", as in “{example}”"
        text += "."
        if word_count(text) <= MAX_WORDS:
            return text
    return first_words(text, MAX_WORDS)


def _forms(rule: Rule) -> list[str]:
    """The rule's targets as shown (stripped, one per normalised form), in the rule's order."""
    seen: dict[str, str] = {}
    for clause in rule.clauses():
        for target in clause.targets:
            shown = display(target).strip() or display(target)
            seen.setdefault(normalise(target), shown)
    return list(seen.values())


def common_stem(forms: list[str]) -> str | None:
    """The longest start (``STEM_MIN`` letters or more, lower case) that the most targets share
    once their punctuation is dropped; None when no two targets (or a lone target) have one."""
    letters = [re.sub(r"[^0-9a-z]", "", f.lower()) for f in forms]
    letters = [w for w in letters if len(w) >= STEM_MIN]
    if len(forms) == 1:
        return letters[0] if letters else None
    best, best_count = None, 1
    for word in dict.fromkeys(letters):
        for end in range(len(word), STEM_MIN - 1, -1):
            count = sum(w.startswith(word[:end]) for w in letters)
            if count > best_count or (count == best_count and best and end > len(best)):
                best, best_count = word[:end], count
    return best


def _what(forms: list[str], stem: str | None, listed: int) -> str:
    """The targets in words: their stem when they share one, else the first ``listed`` quoted."""
    if stem is not None:
        bare = {f: re.sub(r"[^0-9A-Za-z]", "", f) for f in forms}
        others = [f for f in forms if bare[f].lower() != stem]
        shown = next((b for b in bare.values() if b.lower() == stem), stem)
        text = f'the word "{shown}"'
        if others and listed > 1:
            text += " (also " + ", ".join(f'"{f}"' for f in others[: listed - 1]) + ")"
        return text
    shown = [f'"{f}"' for f in forms[:listed]]
    text = shown[0] if len(shown) == 1 else ", ".join(shown[:-1]) + " or " + shown[-1]
    rest = len(forms) - len(shown)
    if rest:
        text += f" and {rest} more token" + ("s" if rest > 1 else "")
    return text


def _where(rule: Rule) -> str:
    """The position every clause needs, in words ('' when they differ or need none)."""
    clauses = rule.clauses()
    words = {c.word for c in clauses}
    afters = {c.after for c in clauses}
    parts = []
    if len(afters) == 1 and clauses[0].after:
        after = [f'"{display(t).strip() or display(t)}"' for t in clauses[0].after[:2]]
        parts.append("right after " + " or ".join(after))
    if len(words) == 1 and clauses[0].word:
        parts.append(WORD_CLAUSES[clauses[0].word].strip())
    return " ".join(parts)


def _mass(rule: Rule, evidence: ExplainEvidence) -> float:
    """Share of the feature's activation mass on the rule's target tokens (1 when unknown)."""
    shares = evidence.candidate_tokens or evidence.top_tokens
    if not shares:
        return 1.0
    forms = {normalise(t) for c in rule.clauses() for t in c.targets}
    return sum(share for token, share in shares if normalise(token) in forms)


def _example(evidence: ExplainEvidence) -> str:
    """A few words around the strongest firing of the top exemplar, plain."""
    windows = [s for s in evidence.exemplars + evidence.decile_samples if s.max_activation > 0]
    if not windows:
        return ""
    seq = windows[0]
    peak = max(range(len(seq.activations)), key=lambda i: seq.activations[i])
    lo, hi = max(0, peak - EXAMPLE_RADIUS), peak + EXAMPLE_RADIUS + 1
    text = "".join(display(t) for t in seq.tokens[lo:hi])
    return " ".join(text.replace('"', "'").replace("“", "'").replace("”", "'").split())
