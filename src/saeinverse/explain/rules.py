"""Explanations as rules a program can check: the `context` and `tokens` explainers' language.

An explanation names the tokens a feature fires on and, optionally, the context it needs::

    Fires on "Paris", "London" right after "in", "to" at the start of a word (as in: “…”).
    Fires on "if", "else"; or on "return" right after "\\n    "; or on "-" inside a word.

- ``Fires on "a", "b"``: the target tokens (JSON-quoted; compared case- and space-insensitively);
- ``right after "x", "y"``: the token just before must be one of these;
- ``at the start of a word`` / ``inside a word``: the target token begins a word (it starts
  with a space, or follows punctuation) or continues one;
- ``right after a word`` / ``right after punctuation`` / ``right after a space or line break``:
  the token just before ends in a letter, digit or underscore / in another visible character /
  in whitespace;
- ``; or on …``: another clause of the same form; a token satisfies the rule when it satisfies
  any clause;
- ``, mostly in <genre> text`` and ``(as in: “…”)``: for a reader (and the embedding judge);
  never read back.

``parse_rule`` reads that back (an explanation with nothing quoted becomes its content words),
``RuleSimulator`` scores with it: detection says "fires" when some token of the window satisfies
the rule, fuzzing says "correct" when at least half of the marked tokens do.

``saeinverse.explain.context`` writes such rules (the ``context`` and ``tokens`` explainers),
choosing their size by cross-validation on the explaining side.
"""

from __future__ import annotations

import functools
import itertools
import json
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, replace

from saeinverse.explain.evidence import (
    MARK_CLOSE,
    MARK_OPEN,
    ExplainEvidence,
    TokenSequence,
    normalise,
)

TOKEN_MASS_COVERED = 0.8
"""A plain token list stops once its tokens carry this share of the mass."""
N_CONTEXTS = 3
CONTEXT_RADIUS = 4
BROKEN = "\ufffd"
"""What a token shows for a piece of a character (one byte of a multi-byte letter, decoded
alone): a context holding it is left out of the text, which would show it as mojibake."""
GENRE_SHARE = 0.6
"""The `context` explainer names the genre its firing windows come from when this share of
them share one (a phrase for readers and the embedding judge; the simulator ignores it)."""
WORD_CLAUSES = {"start": " at the start of a word", "inside": " inside a word"}
PREVIOUS_CLAUSES = {
    "word": " right after a word",
    "punct": " right after punctuation",
    "space": " right after a space or line break",
}
"""What a clause may need the token before to end in (``previous_kind``)."""
OR_CLAUSE = "; or on "
"""Joins a rule's clauses (a token fires when any clause holds)."""


def quote(token: str) -> str:
    """A token in double quotes, JSON-escaped (the form ``parse_rule`` reads back)."""
    return json.dumps(token.replace(MARK_OPEN, "<<").replace(MARK_CLOSE, ">>"), ensure_ascii=False)


@dataclass(frozen=True)
class Rule:
    """Where a feature fires: target tokens, optionally right after given tokens, at a word part;
    or wherever one of the ``alternatives`` (clauses of their own) holds."""

    targets: tuple[str, ...]
    after: tuple[str, ...] = ()
    word: str | None = None
    """'start', 'inside' or None (either)."""
    previous: str | None = None
    """What the token before ends in: 'word', 'punct', 'space' or None (anything)."""
    alternatives: tuple[Rule, ...] = ()

    def clauses(self) -> tuple[Rule, ...]:
        """This clause (without its alternatives), then each alternative."""
        return self._clauses

    @functools.cached_property
    def _clauses(self) -> tuple[Rule, ...]:
        return (replace(self, alternatives=()), *self.alternatives)

    def clause_text(self) -> str:
        text = ", ".join(quote(t) for t in self.targets)
        if self.after:
            text += " right after " + ", ".join(quote(t) for t in self.after)
        text += PREVIOUS_CLAUSES.get(self.previous or "", "")
        return text + WORD_CLAUSES.get(self.word or "", "")

    def text(self) -> str:
        """The rule in words, without examples."""
        if not self.targets:
            return "Fires on nothing seen in the evidence"
        return "Fires on " + OR_CLAUSE.join(c.clause_text() for c in self.clauses())

    def positions(self, tokens: Sequence[str]) -> list[bool]:
        """Which tokens of a window satisfy the rule."""
        normed = [normalise(t) for t in tokens]
        clauses = self._clauses
        return [any(c.holds_at(tokens, normed, i) for c in clauses) for i in range(len(tokens))]

    @functools.cached_property
    def target_forms(self) -> frozenset[str]:
        return frozenset(normalise(t) for t in self.targets)

    @functools.cached_property
    def after_forms(self) -> frozenset[str]:
        return frozenset(normalise(t) for t in self.after)

    def holds_at(self, tokens: Sequence[str], normed: Sequence[str], i: int) -> bool:
        """Whether token ``i`` satisfies this clause (alternatives aside); ``normed``: the tokens,
        normalised."""
        if normed[i] not in self.target_forms:
            return False
        if self.after and not (i > 0 and normed[i - 1] in self.after_forms):
            return False
        if self.previous and not (i > 0 and previous_kind(tokens[i - 1]) == self.previous):
            return False
        return self.word is None or starts_word(tokens, i) == (self.word == "start")

    def complexity(self) -> int:
        own = len(self.targets) + len(self.after) + (self.word is not None)
        own += self.previous is not None
        return own + sum(c.complexity() for c in self.alternatives)


def starts_word(tokens: Sequence[str], i: int) -> bool:
    """Whether token ``i`` begins a word: it starts with whitespace, or follows a token that does
    not end in a letter or digit (the window's first token counts as a start)."""
    token = tokens[i]
    if i == 0 or not token or token[0].isspace():
        return True
    previous = tokens[i - 1]
    return not previous or not previous[-1].isalnum()


def previous_kind(token: str) -> str | None:
    """What a token ends in: 'word' (a letter, digit or underscore), 'space' (whitespace) or
    'punct' (any other character); None for an empty token."""
    if not token:
        return None
    last = token[-1]
    if last.isalnum() or last == "_":
        return "word"
    return "space" if last.isspace() else "punct"


_QUOTED = re.compile(r'"((?:[^"\\]|\\.)*)"')
_FILLER = frozenset(
    "fires on the a an of in as and or tokens token like right after at start word inside "
    "feature it is to".split()
)


def _quoted(text: str) -> tuple[str, ...]:
    found = []
    for body in _QUOTED.findall(text):
        try:
            found.append(json.loads(f'"{body}"'))
        except json.JSONDecodeError:
            found.append(body)
    return tuple(found)


def _split_clauses(text: str) -> list[str]:
    """``text`` cut at each ``OR_CLAUSE`` outside double quotes."""
    parts, start, i, inside = [], 0, 0, False
    while i < len(text):
        char = text[i]
        if inside and char == "\\":
            i += 2
            continue
        if char == '"':
            inside = not inside
        elif not inside and text.startswith(OR_CLAUSE, i):
            parts.append(text[start:i])
            start = i = i + len(OR_CLAUSE)
            continue
        i += 1
    return [*parts, text[start:]]


def _parse_clause(text: str) -> Rule:
    head, _, tail = text.partition(" right after ")
    word = next((k for k, clause in WORD_CLAUSES.items() if clause in text), None)
    previous = next((k for k, clause in PREVIOUS_CLAUSES.items() if clause in text), None)
    return Rule(_quoted(head), _quoted(tail), word, previous)


def parse_rule(explanation: str) -> Rule:
    """The rule an explanation states (see the module docstring); content words when it quotes
    nothing."""
    text = explanation.split(" (as in:")[0]
    clauses = [_parse_clause(part) for part in _split_clauses(text)]
    clauses = [c for c in clauses if c.targets]
    if not clauses:
        words = [w for w in re.findall(r"\w+", explanation.lower()) if w not in _FILLER]
        return Rule(tuple(dict.fromkeys(words)))
    return replace(clauses[0], alternatives=tuple(clauses[1:]))


class RuleSimulator:
    """Scores with no language model: does the window (or its marked tokens) satisfy the rule?"""

    reads = "rule"
    """It scores an explanation's rule (its sentence when it has none)."""

    def predict(self, explanation: str, items: Sequence, task: str) -> list[float | None]:
        rule = parse_rule(explanation)
        out: list[float | None] = []
        for item in items:
            hits = rule.positions(item.sequence.tokens)
            if task == "detection":
                out.append(float(any(hits)))
            else:
                marked = [h for h, m in zip(hits, item.marks or (), strict=True) if m]
                out.append(float(bool(marked) and sum(marked) * 2 >= len(marked)))
        return out


# ----------------------------------------------------------------------------- explainers


def short_context(seq: TokenSequence) -> str:
    """A few tokens either side of the peak, marked, with no straight double quotes."""
    peak = max(range(len(seq.activations)), key=lambda i: seq.activations[i], default=0)
    lo, hi = max(0, peak - CONTEXT_RADIUS), peak + CONTEXT_RADIUS + 1
    part = TokenSequence(
        seq.tokens[lo:hi], seq.token_ids[lo:hi], seq.activations[lo:hi], seq.source
    )
    return part.render().strip().replace('"', "'")


def main_genre(evidence: ExplainEvidence) -> str | None:
    """The genre most of the firing windows come from (``GENRE_SHARE`` of them), else None."""
    genres = [s.genre for s in evidence.exemplars + evidence.decile_samples if s.max_activation > 0]
    if not genres:
        return None
    genre, count = Counter(genres).most_common(1)[0]
    return genre if genre is not None and count >= GENRE_SHARE * len(genres) else None


def with_examples(
    rule: Rule,
    evidence: ExplainEvidence,
    genre: str | None = None,
    examples: Sequence[TokenSequence] | None = None,
) -> str:
    """The rule's text, the genre it mostly fires in (when given), then marked contexts from
    ``examples`` (default: the evidence's sequences), the first ``N_CONTEXTS`` that show no
    piece of a character (``BROKEN``)."""
    text = rule.text()
    if genre and rule.targets:
        text += ", mostly in " + genre.replace("_", " ") + " text"
    if examples is None:
        examples = evidence.sequences()
    readable = (c for c in map(short_context, examples) if BROKEN not in c)
    contexts = list(itertools.islice(readable, N_CONTEXTS))
    if rule.targets and contexts:
        text += " (as in: " + "; ".join(f"“{c}”" for c in contexts) + ")"
    return text + "."


def token_list(evidence: ExplainEvidence, max_tokens: int) -> Rule:
    """The top tokens until they carry ``TOKEN_MASS_COVERED`` of the mass (at most ``max_tokens``)."""
    chosen, seen, covered = [], set(), 0.0
    for token, share in evidence.top_tokens:
        if covered >= TOKEN_MASS_COVERED or len(chosen) >= max_tokens:
            break
        if normalise(token) not in seen:
            chosen.append(token)
            seen.add(normalise(token))
        covered += share
    return Rule(tuple(chosen))
