"""What a reader sees first: one plain sentence of at most ``MAX_WORDS`` words naming what fires.

An explanation is an ``Explanation``: the ``sentence``, and the ``rule`` (the checkable
statement that follows it, ``saeinverse.explain.rules``; empty when the explainer writes only
words, as a language model does). ``describe`` builds the sentence of a rule from the rule and
its evidence, in the words the feature's own windows use:

- **what**: the targets' common word or stem (``the word "hash" (also "hashable")``), else the
  first few targets quoted (``"if", "else" or "elif" and 3 more``; a target that is one byte of
  a multi-byte character is named ``a piece of a non-Latin character``, not shown as ``�``);
- **where**: the position in the word (``at the start of a word``, ``inside a word``) and the
  tokens it needs before it (``right after "new"``, ``right after a word``), when every clause
  needs the same;
- **genre**: the genre most of the firing windows come from (``in Python code``);
- **context**: up to ``CONTEXT_WORDS`` words of the explaining side's firing windows that are
  at least ``CONTEXT_ENRICHMENT`` times as common there as in its random silent windows
  (``near "self", "object"``; common function words and the targets' own words left out);
- **breadth**: ``Fires weakly on many tokens, most on …`` when the targets carry less than
  ``BROAD_SHARE`` of the feature's activation mass; when such targets share no stem, the
  words holding the top exemplars' strongest firings are named instead, by the stem at least
  half of them share (``the word "hash" (also "hashable", "__hash__")``);
- **examples**: a few words around the strongest firing of up to ``EXAMPLES`` exemplars that
  read differently, each firing most on one of the rule's targets (or in a word holding the
  stem the sentence names) (``as in “__hash__(self)” or “hashable objects”``).

Targets the sentence does not name are counted (``the word "who" and 15 more``). ``parts``
gathers what a sentence can say (``Parts``), ``render`` says a ``Choice`` of it. ``describe``
drops parts in a fixed order (the second example, a context word, extra targets, the first
example, the context, the genre, the position) until the sentence fits;
``saeinverse.explain.wording`` chooses them on the explaining side instead.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from dataclasses import dataclass

from saeinverse.explain.evidence import ExplainEvidence, display, normalise
from saeinverse.explain.rules import BROKEN, PREVIOUS_CLAUSES, WORD_CLAUSES, Rule, main_genre

MAX_WORDS = 20
STEM_MIN = 3
"""Letters two targets must share at their start to be named by their common stem."""
ROOT_MIN = 5
"""A shared start shorter than this is named only when it is a target itself."""
BROAD_SHARE = 0.3
"""Below this share of the activation mass on its targets, a rule is said to be broad."""
LISTED = 3
"""Targets named in the sentence when they share no stem."""
EXAMPLE_RADIUS = 2
"""Tokens either side of an example's strongest firing."""
EXAMPLES = 2
"""Examples a sentence quotes at most (from exemplars that read differently)."""
CONTEXT_WORDS = 3
"""Context words a sentence names at most."""
CONTEXT_ENRICHMENT = 2.0
"""How many times more often (share of windows) a context word appears in the firing windows
than in the random silent ones."""
CONTEXT_SUPPORT = 0.1
"""Share of the firing windows (and at least 3) a context word must appear in."""
STOP_WORDS = frozenset(
    "the and for that this with from are was were been have has had not but you your its his "
    "her they them then than there their which what when where who will would can could should "
    "may might must also into onto over under about after before more most some such only other "
    "each any all one two out our use used using see".split()
)
"""Function words never named as context."""
SHORTER = (
    (EXAMPLES, CONTEXT_WORDS, LISTED, True, True),
    (1, CONTEXT_WORDS, LISTED, True, True),
    (1, 2, LISTED, True, True),
    (1, 2, 1, True, True),
    (0, 2, 1, True, True),
    (0, 0, 1, True, True),
    (0, 0, 1, False, True),
    (0, 0, 1, False, False),
)
"""The sentence's parts, each step shorter (examples, context words, targets listed, genre,
position): the first that fits ``MAX_WORDS`` is kept."""
_WORD = re.compile(r"[A-Za-z_][A-Za-z0-9_]{2,}")
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


@dataclass(frozen=True)
class Parts:
    """What a rule's sentence can say (see the module docstring), before choosing how much."""

    head: str
    forms: list[str]
    stem: str | None
    where: str
    genre: str
    near: list[str]
    examples: list[str]


@dataclass(frozen=True)
class Choice:
    """How much of ``Parts`` a sentence says: targets listed, position and genre said or not,
    and which context words and examples (indices into ``Parts.near`` / ``Parts.examples``)."""

    listed: int = LISTED
    where: bool = True
    genre: bool = True
    near: tuple[int, ...] = ()
    examples: tuple[int, ...] = ()


def parts(
    rule: Rule,
    evidence: ExplainEvidence,
    n_near: int = CONTEXT_WORDS,
    n_examples: int = EXAMPLES,
    *,
    radius: int = EXAMPLE_RADIUS,
    support: float = CONTEXT_SUPPORT,
    enrichment: float = CONTEXT_ENRICHMENT,
) -> Parts | None:
    """The rule's parts, with up to ``n_near`` context words (``support``, ``enrichment``:
    ``context_words``) and ``n_examples`` examples of ``radius`` tokens either side of their
    peak (None: the rule names no target)."""
    if not rule.targets:
        return None
    forms = _forms(rule)
    stem = common_stem(forms)
    near = context_words(evidence, forms, n_near, support, enrichment)
    broad = _mass(rule, evidence) < BROAD_SHARE
    targets: frozenset[str] | str = frozenset().union(*(c.target_forms for c in rule.clauses()))
    if broad and stem is None:
        peaks = _peak_stem(evidence)
        if peaks is not None:
            forms, stem = peaks
            targets = stem
    head = "Fires weakly on many tokens, most on " if broad else "Fires on "
    genre = main_genre(evidence)
    shown = GENRES.get(genre, genre.replace("_", " ") + " text") if genre else ""
    examples = _examples(evidence, n_examples, targets, radius)
    return Parts(head, forms, stem, _where(rule), shown, near, examples)


def render(p: Parts, choice: Choice) -> str:
    """The sentence saying ``choice`` of ``p`` (its length unchecked)."""
    text = p.head + _what(p.forms, p.stem, choice.listed)
    if choice.where and p.where:
        text += " " + p.where
    if choice.genre and p.genre:
        text += " in " + p.genre
    near = [p.near[i] for i in sorted(choice.near) if i < len(p.near)]
    if near:
        text += ", near " + ", ".join(f'"{w}"' for w in near)
    examples = [p.examples[i] for i in sorted(choice.examples) if i < len(p.examples)]
    if examples:
        text += ", as in " + " or ".join(f"“{e}”" for e in examples)
    return text + "."


NOTHING = "Fires on nothing the evidence shows."


def describe(rule: Rule, evidence: ExplainEvidence) -> str:
    """The rule's sentence (see the module docstring): its parts in a fixed order, shortened
    step by step (``SHORTER``) until it fits."""
    p = parts(rule, evidence)
    if p is None:
        return NOTHING
    text = ""
    for n_examples, n_near, listed, keep_genre, keep_where in SHORTER:
        choice = Choice(
            listed, keep_where, keep_genre, tuple(range(n_near)), tuple(range(n_examples))
        )
        text = render(p, choice)
        if word_count(text) <= MAX_WORDS:
            return text
    return first_words(text, MAX_WORDS)


PIECE = "a piece of a non-Latin character"
"""How the sentence names a target that is one byte of a multi-byte character (it shows as
``BROKEN`` alone): in words, not as the replacement character."""


def _forms(rule: Rule) -> list[str]:
    """The rule's targets as shown (stripped, one per normalised form), in the rule's order."""
    seen: dict[str, str] = {}
    for clause in rule.clauses():
        for target in clause.targets:
            shown = display(target).strip() or display(target)
            seen.setdefault(normalise(target), shown)
    return list(seen.values())


def common_stem(forms: list[str]) -> str | None:
    """The longest start that the most targets share once their punctuation is dropped (lower
    case): a target itself (``STEM_MIN`` letters or more) or a start of ``ROOT_MIN`` letters or
    more, so that "exp" never stands for "explicit" and "exponent"; None when no two targets
    (or a lone target) have one."""
    letters = [re.sub(r"[^0-9a-z]", "", f.lower()) for f in forms]
    letters = [w for w in letters if len(w) >= STEM_MIN]
    if len(forms) == 1:
        return letters[0] if letters else None
    whole = set(letters)
    best, best_count = None, 1
    for word in dict.fromkeys(letters):
        for end in range(len(word), STEM_MIN - 1, -1):
            if end < ROOT_MIN and word[:end] not in whole:
                continue
            count = sum(w.startswith(word[:end]) for w in letters)
            if count > best_count or (count == best_count and best and end > len(best)):
                best, best_count = word[:end], count
    return best


def _what(forms: list[str], stem: str | None, listed: int) -> str:
    """The targets in words: the word their stem is (the shortest sharing it when none is) when
    they share one, else the first ``listed`` quoted; either way, how many more are not named
    (targets sharing the stem are counted as named by it)."""
    if stem is not None:
        bare = {f: re.sub(r"[^0-9A-Za-z]", "", f) for f in forms}
        others = [f for f in forms if bare[f].lower() != stem]
        sharing = [b for b in bare.values() if b.lower().startswith(stem)]
        shown = min(sharing, key=lambda b: (b.lower() != stem, len(b)), default=stem)
        text = f'the word "{shown}"'
        also = others[: listed - 1] if listed > 1 else []
        if also:
            text += " (also " + ", ".join(f'"{f}"' for f in also) + ")"
        rest = [f for f in others if f not in also and not bare[f].lower().startswith(stem)]
        if rest:
            text += f" and {len(rest)} more"
        return text
    shown = [PIECE if BROKEN in f else f'"{f}"' for f in forms[:listed]]
    text = shown[0] if len(shown) == 1 else ", ".join(shown[:-1]) + " or " + shown[-1]
    rest = len(forms) - len(shown)
    if rest:
        text += f" and {rest} more"
    return text


def _peak_stem(evidence: ExplainEvidence) -> tuple[list[str], str] | None:
    """The words holding the top exemplars' strongest firings, and the stem at least half of
    them share (None when they share none)."""
    words = []
    for seq in evidence.exemplars:
        if seq.max_activation <= 0:
            continue
        peak = max(range(len(seq.activations)), key=lambda i: seq.activations[i])
        token = seq.tokens[peak]
        left = "".join(seq.tokens[max(0, peak - 3) : peak])
        right = "".join(seq.tokens[peak + 1 : peak + 4])
        word = token.strip()
        if token[:1].isalnum() or token[:1] == "_":
            word = re.search(r"\w*$", left).group() + word
        if token[-1:].isalnum() or token[-1:] == "_":
            word += re.match(r"\w*", right).group()
        if re.search(r"[A-Za-z]", word):
            words.append(word)
    stem = common_stem(words) if len(words) > 1 else None
    if stem is None:
        return None
    sharing = [w for w in words if re.sub(r"[^0-9a-z]", "", w.lower()).startswith(stem)]
    return (list(dict.fromkeys(sharing)), stem) if 2 * len(sharing) >= len(words) else None


def _where(rule: Rule) -> str:
    """The position every clause needs, in words ('' when they differ or need none)."""
    clauses = rule.clauses()
    words = {c.word for c in clauses}
    afters = {c.after for c in clauses}
    previous = {c.previous for c in clauses}
    parts = []
    if len(afters) == 1 and clauses[0].after:
        after = [f'"{display(t).strip() or display(t)}"' for t in clauses[0].after[:2]]
        parts.append("right after " + " or ".join(after))
    elif len(previous) == 1 and clauses[0].previous:
        parts.append(PREVIOUS_CLAUSES[clauses[0].previous].strip())
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


def _examples(
    evidence: ExplainEvidence,
    n: int,
    targets: frozenset[str] | str | None = None,
    radius: int = EXAMPLE_RADIUS,
) -> list[str]:
    """``radius`` tokens either side of the strongest firing of the first ``n`` firing windows
    (exemplars first) that read differently, plain, and show no piece of a character
    (``BROKEN``). With ``targets``, only windows whose strongest firing is on one of them
    (normalised forms), or whose words there hold it (a stem)."""
    out: list[str] = []
    for seq in evidence.exemplars + evidence.decile_samples:
        if len(out) >= n:
            break
        if seq.max_activation <= 0:
            continue
        peak = max(range(len(seq.activations)), key=lambda i: seq.activations[i])
        if isinstance(targets, frozenset) and normalise(seq.tokens[peak]) not in targets:
            continue
        lo, hi = max(0, peak - radius), peak + radius + 1
        text = "".join(seq.tokens[lo:hi]).replace('"', "'").replace("“", "'").replace("”", "'")
        text = " ".join(text.split())
        if isinstance(targets, str) and targets not in text.lower():
            continue
        if text and BROKEN not in text and text.lower() not in {o.lower() for o in out}:
            out.append(text)
    return out


def context_words(
    evidence: ExplainEvidence,
    forms: list[str],
    n: int,
    support: float = CONTEXT_SUPPORT,
    enrichment: float = CONTEXT_ENRICHMENT,
) -> list[str]:
    """Up to ``n`` words typical of the explaining side's firing windows, most enriched first:
    in at least ``support`` of them (and 3) and ``enrichment`` times as common there as in its
    random silent windows (see the module docstring); none without silent windows to compare."""
    firing = evidence.positives()
    silent = [s for s in evidence.silent if s.source == "silent"]
    if not firing or not silent:
        return []

    def windows_with(seqs: list) -> Counter[str]:
        counts: Counter[str] = Counter()
        for seq in seqs:
            counts.update({w.lower() for w in _WORD.findall("".join(seq.tokens))})
        return counts

    on, off = windows_with(firing), windows_with(silent)
    named = {re.sub(r"[^0-9a-z]", "", f.lower()) for f in forms}
    least = max(3.0, support * len(firing))
    scores = {}
    for word, count in on.items():
        if (
            count < least
            or word in STOP_WORDS
            or any(len(t) >= STEM_MIN and t in word for t in named)
        ):
            continue
        ratio = (count + 0.5) / len(firing) / ((off[word] + 0.5) / len(silent))
        if ratio >= enrichment:
            scores[word] = math.log(ratio)
    return sorted(scores, key=lambda w: (-scores[w], w))[:n]
