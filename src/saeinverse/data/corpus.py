"""The offline default corpus: text every Python installation carries, plus our own passages.

Three stdlib sources (the reference documentation in `pydoc_data.topics`, docstrings of the
standard library, chunks of its source code) and the passages this package ships under
`data/passages/*.jsonl` (narrative, dialogue, news, code, lists, other languages, ...). Nothing is
downloaded and nothing is written to disk; the stdlib part is parsed with `ast`, never imported,
and is cached in-process.

Build order: `bundled_passages` and `stdlib_texts` give the raw texts; `default_corpus` joins them,
drops duplicates, and splits every genre separately into train and held-out texts.
"""

from __future__ import annotations

import ast
import functools
import hashlib
import json
import logging
import os
import random
import re
import sysconfig
import warnings
from collections import Counter
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from saeinverse.errors import ConfigError, DataError

log = logging.getLogger(__name__)

PASSAGES_PACKAGE = "saeinverse.data"
PASSAGES_DIR = "passages"

#: Genre names of the three stdlib sources (bundled passages carry their own genre names).
GENRE_REFERENCE = "python_reference"
GENRE_DOCSTRING = "python_docstring"
GENRE_SOURCE = "python_source"

#: Stdlib folders skipped when collecting docstrings and source: tests, GUI code, installed
#: packages, and data tables (codec tables in `encodings`, `pydoc_data` is read as reference).
STDLIB_SKIP_DIRS = frozenset(
    {
        "__pycache__",
        "dist-packages",
        "encodings",
        "ensurepip",
        "idle_test",
        "idlelib",
        "lib2to3",
        "pydoc_data",
        "site-packages",
        "test",
        "tests",
        "tkinter",
        "turtledemo",
    }
)

#: Stdlib file name prefixes skipped: tests and the generated build-variable tables.
STDLIB_SKIP_FILE_PREFIXES = ("test", "_sysconfigdata")

_DOC_NODES = (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)
_STATEMENT_FIELDS = ("body", "orelse", "finalbody", "handlers", "cases")
_BLANK_LINES = re.compile(r"\n[ \t]*\n")


@dataclass(frozen=True)
class Corpus:
    """A fixed train/held-out split of texts, each with the genre it came from."""

    train: list[str]
    """Training texts, shuffled."""
    heldout: list[str]
    """Held-out texts, shuffled; disjoint from `train`."""
    train_genres: list[str]
    """Genre of each training text (parallel to `train`)."""
    heldout_genres: list[str]
    """Genre of each held-out text (parallel to `heldout`)."""

    def __post_init__(self) -> None:
        if len(self.train) != len(self.train_genres):
            raise ValueError("train and train_genres differ in length")
        if len(self.heldout) != len(self.heldout_genres):
            raise ValueError("heldout and heldout_genres differ in length")

    def genre_counts(self) -> dict[str, tuple[int, int]]:
        """Map each genre to its (train, held-out) number of texts, genres sorted by name."""
        train, heldout = Counter(self.train_genres), Counter(self.heldout_genres)
        return {g: (train[g], heldout[g]) for g in sorted(train | heldout)}


def bundled_passages() -> list[dict[str, str]]:
    """Read the passages shipped as package data, in file-name order then line order.

    Every `data/passages/<genre>.jsonl` file holds one JSON object per line with the keys
    `genre` and `text`. Returns those objects as `{"genre": str, "text": str}` dicts.
    Raises `DataError` on a line that is not such an object.
    """
    folder = resources.files(PASSAGES_PACKAGE).joinpath(PASSAGES_DIR)
    files = sorted((f for f in folder.iterdir() if f.name.endswith(".jsonl")), key=lambda f: f.name)
    passages = []
    for file in files:
        for lineno, line in enumerate(file.read_text(encoding="utf-8").splitlines(), 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
                passages.append({"genre": str(record["genre"]), "text": str(record["text"])})
            except (json.JSONDecodeError, KeyError, TypeError) as exc:
                raise DataError(f"bad passage at {file.name}:{lineno}: {exc}") from exc
    return passages


def stdlib_texts(
    min_chars_topics: int = 200,
    min_chars_doc: int = 300,
    n_source_chunks: int = 300,
    source_chunk_lines: int = 40,
    max_chars: int = 2000,
) -> list[str]:
    """Texts taken from the running Python's standard library, in a fixed order.

    In order, and without duplicates:

    1. `pydoc_data.topics.topics` (the language reference behind `help()`), topic by topic in
       sorted order: each topic is cut at blank lines into paragraphs, consecutive paragraphs are
       joined into chunks of at most `max_chars` characters, and chunks shorter than
       `min_chars_topics` are dropped.
    2. Docstrings (cleaned as by `inspect.cleandoc`) of the modules, classes and functions in the
       stdlib's `.py` files, read with `ast` (nothing is imported), files in sorted path order,
       skipping `STDLIB_SKIP_DIRS` and `STDLIB_SKIP_FILE_PREFIXES`: each docstring is cut into
       chunks of at most `max_chars` characters the same way, and chunks shorter than
       `min_chars_doc` are dropped.
    3. `n_source_chunks` source chunks of `source_chunk_lines` lines each, picked evenly spaced
       from all consecutive chunks of those same files, cut to at most `max_chars` characters
       the same way and kept if at least `min_chars_doc` characters long.

    The result depends only on the arguments and on the Python installation.
    """
    by_genre = stdlib_texts_by_genre(
        min_chars_topics, min_chars_doc, n_source_chunks, source_chunk_lines, max_chars
    )
    return [text for texts in by_genre.values() for text in texts]


def stdlib_texts_by_genre(
    min_chars_topics: int = 200,
    min_chars_doc: int = 300,
    n_source_chunks: int = 300,
    source_chunk_lines: int = 40,
    max_chars: int = 2000,
) -> dict[str, list[str]]:
    """`stdlib_texts` grouped by source: `python_reference`, `python_docstring`, `python_source`.

    Same arguments, texts and order as `stdlib_texts`; built once per process and argument set.
    """
    cached = _stdlib_sources(
        min_chars_topics, min_chars_doc, n_source_chunks, source_chunk_lines, max_chars
    )
    return {genre: list(texts) for genre, texts in cached.items()}


def default_corpus(seed: int = 0, heldout_fraction: float = 0.05) -> Corpus:
    """The offline default corpus: `bundled_passages()` plus `stdlib_texts()`, split by genre.

    Texts are grouped by genre (each passage genre, `python_reference`, `python_docstring`,
    `python_source`) and duplicates dropped (first occurrence kept, passages first). With a
    `random.Random(seed)`, each genre in sorted order is shuffled and its first
    `round(n * heldout_fraction)` texts (at least 1 when `heldout_fraction > 0` and the genre
    has two or more texts) go to `heldout`, the rest to `train`; both splits are then shuffled.
    So every genre is in both splits, and the same seed always gives the same split.
    """
    if not 0.0 <= heldout_fraction < 1.0:
        raise ConfigError(f"heldout_fraction must be in [0, 1), got {heldout_fraction}")
    by_genre: dict[str, list[str]] = {}
    for passage in bundled_passages():
        by_genre.setdefault(passage["genre"], []).append(passage["text"])
    by_genre.update(stdlib_texts_by_genre())

    seen: set[str] = set()
    rng = random.Random(seed)
    train: list[tuple[str, str]] = []
    heldout: list[tuple[str, str]] = []
    for genre in sorted(by_genre):
        texts = _unique(by_genre[genre], seen)
        rng.shuffle(texts)
        n_heldout = _n_heldout(len(texts), heldout_fraction)
        heldout += [(genre, t) for t in texts[:n_heldout]]
        train += [(genre, t) for t in texts[n_heldout:]]
    rng.shuffle(train)
    rng.shuffle(heldout)
    corpus = Corpus(
        train=[t for _, t in train],
        heldout=[t for _, t in heldout],
        train_genres=[g for g, _ in train],
        heldout_genres=[g for g, _ in heldout],
    )
    log.info(
        "default corpus: %d train texts (%d chars), %d held-out texts (%d chars), %d genres",
        len(corpus.train),
        sum(map(len, corpus.train)),
        len(corpus.heldout),
        sum(map(len, corpus.heldout)),
        len(by_genre),
    )
    return corpus


def _unique(texts: list[str] | tuple[str, ...], seen: set[str]) -> list[str]:
    """`texts` without those in `seen` or repeated, in order; adds the kept ones to `seen`."""
    kept = []
    for text in texts:
        if text not in seen:
            seen.add(text)
            kept.append(text)
    return kept


def _n_heldout(n: int, fraction: float) -> int:
    """How many of a genre's `n` texts are held out: at least one, never all."""
    if fraction == 0.0 or n < 2:
        return 0
    return min(n - 1, max(1, round(n * fraction)))


def text_hash(text: str) -> str:
    """A short stable name of a text (the first 16 hex digits of its SHA-256)."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


@functools.lru_cache(maxsize=4)
def _stdlib_sources(
    min_chars_topics: int,
    min_chars_doc: int,
    n_source_chunks: int,
    source_chunk_lines: int,
    max_chars: int,
) -> dict[str, tuple[str, ...]]:
    """The three stdlib sources by genre name, each deduplicated in order (see `stdlib_texts`)."""
    from pydoc_data.topics import topics  # stdlib data module, a plain dict of strings

    reference = [
        chunk
        for name in sorted(topics)
        for chunk in _chunks(topics[name], max_chars)
        if len(chunk) >= min_chars_topics
    ]
    files = _stdlib_files()
    docstrings: list[str] = []
    sources: list[list[str]] = []
    for path in files:
        text = path.read_text(encoding="utf-8", errors="replace")
        sources.append(text.splitlines())
        for doc in _docstrings(text):
            docstrings += [c for c in _chunks(doc, max_chars) if len(c) >= min_chars_doc]
    code = [
        chunk
        for block in _pick_line_blocks(sources, n_source_chunks, source_chunk_lines)
        for chunk in _chunks(block, max_chars)
        if len(chunk) >= min_chars_doc
    ]
    log.debug(
        "stdlib: %d files, %d reference, %d docstring, %d code chunks",
        len(files),
        len(reference),
        len(docstrings),
        len(code),
    )
    seen: set[str] = set()
    return {
        GENRE_REFERENCE: tuple(_unique(reference, seen)),
        GENRE_DOCSTRING: tuple(_unique(docstrings, seen)),
        GENRE_SOURCE: tuple(_unique(code, seen)),
    }


def _stdlib_files() -> list[Path]:
    """The stdlib's `.py` files in sorted path order, without the `STDLIB_SKIP_*` ones."""
    root = Path(sysconfig.get_paths()["stdlib"])
    files = []
    for folder, dirs, names in os.walk(root):
        dirs[:] = sorted(
            d for d in dirs if d not in STDLIB_SKIP_DIRS and not d.startswith(("test", "config-"))
        )
        files += [
            Path(folder, n)
            for n in sorted(names)
            if n.endswith(".py") and not n.startswith(STDLIB_SKIP_FILE_PREFIXES)
        ]
    return files


def _docstrings(source: str) -> list[str]:
    """Docstrings of the module and of every class and function in `source`, in source order."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # invalid escapes etc. in old stdlib files
            tree = ast.parse(source)
    except (SyntaxError, ValueError):
        return []
    docs = []
    stack: list[ast.AST] = [tree]
    while stack:  # statements only: expressions never hold a def, and there are 10x more of them
        node = stack.pop()
        if isinstance(node, _DOC_NODES) and (doc := ast.get_docstring(node)):
            docs.append(doc)
        for field in _STATEMENT_FIELDS:
            children = getattr(node, field, None)
            if isinstance(children, list):
                stack += reversed(children)
    return docs


def _pick_line_blocks(files: list[list[str]], n_blocks: int, n_lines: int) -> list[str]:
    """`n_blocks` blocks of `n_lines` consecutive lines, evenly spaced over all files' blocks."""
    starts = [(i, s) for i, lines in enumerate(files) for s in range(0, len(lines), n_lines)]
    if not starts or n_blocks <= 0:
        return []
    picked = sorted({starts[k * len(starts) // n_blocks] for k in range(n_blocks)})
    return ["\n".join(files[i][s : s + n_lines]).strip("\n") for i, s in picked]


def _chunks(text: str, max_chars: int) -> list[str]:
    """Cut `text` at blank lines and rejoin consecutive paragraphs into chunks of <= `max_chars`.

    A text that fits is returned whole (outer newlines stripped). A paragraph longer than
    `max_chars` is cut between lines first; a single line longer than `max_chars` stays whole.
    """
    text = text.strip("\n")
    if len(text) <= max_chars:
        return [text] if text.strip() else []
    paragraphs = [p.strip("\n") for p in _BLANK_LINES.split(text)]
    pieces = [
        piece
        for p in paragraphs
        if p.strip()
        for piece in (_join_greedy(p.split("\n"), "\n", max_chars) if len(p) > max_chars else [p])
    ]
    return _join_greedy(pieces, "\n\n", max_chars)


def _join_greedy(pieces: list[str], sep: str, max_chars: int) -> list[str]:
    """Join consecutive `pieces` with `sep` greedily into strings of at most `max_chars`."""
    out: list[str] = []
    current: list[str] = []
    size = 0
    for piece in pieces:
        if current and size + len(sep) + len(piece) > max_chars:
            out.append(sep.join(current))
            current, size = [], 0
        size += (len(sep) if current else 0) + len(piece)
        current.append(piece)
    if current:
        out.append(sep.join(current))
    return out
