"""The offline default corpus: shipped passages, stdlib texts, the seeded train/held-out split."""

from __future__ import annotations

import json
from importlib import resources

import pytest

from saeinverse.data import corpus as corpus_mod
from saeinverse.data.corpus import (
    GENRE_DOCSTRING,
    GENRE_REFERENCE,
    GENRE_SOURCE,
    Corpus,
    bundled_passages,
    default_corpus,
    stdlib_texts,
    stdlib_texts_by_genre,
)
from saeinverse.errors import ConfigError

STDLIB_GENRES = {GENRE_REFERENCE, GENRE_DOCSTRING, GENRE_SOURCE}


@pytest.fixture(scope="module")
def passages() -> list[dict[str, str]]:
    return bundled_passages()


@pytest.fixture(scope="module")
def corpus() -> Corpus:
    return default_corpus()


def test_passage_files_are_one_json_object_per_line_named_after_their_genre():
    folder = resources.files(corpus_mod.PASSAGES_PACKAGE).joinpath(corpus_mod.PASSAGES_DIR)
    files = [f for f in folder.iterdir() if f.name.endswith(".jsonl")]
    assert len(files) >= 14
    for file in files:
        for line in file.read_text(encoding="utf-8").splitlines():
            record = json.loads(line)
            assert set(record) == {"genre", "text"}
            assert file.name == f"{record['genre']}.jsonl"


def test_bundled_passages_are_many_unique_and_span_many_genres(passages):
    texts = [p["text"] for p in passages]
    genres = {p["genre"] for p in passages}
    assert len(passages) >= 360
    assert len(genres) >= 14
    assert len(set(texts)) == len(texts)
    assert all(t.strip() and t == t.strip() for t in texts)
    per_genre = {g: sum(p["genre"] == g for p in passages) for g in genres}
    assert min(per_genre.values()) >= 15


def test_bundled_passages_cover_code_numbers_and_other_scripts(passages):
    texts = " ".join(p["text"] for p in passages)
    for marker in ("def ", "SELECT ", "#include", "{", "2024", "€", "é", "ß", "ü", "ñ"):
        assert marker in texts
    for script in ("\u0400", "\u0370", "\u0600", "\u0900", "\u3040", "\u4e00", "\uac00"):
        # Cyrillic, Greek, Arabic, Devanagari, Japanese kana, CJK, Hangul: one character of each
        block = range(ord(script), ord(script) + 0x100 if script != "\u4e00" else 0x9FFF)
        assert any(ord(ch) in block for ch in texts), f"no text in the block at {script!r}"


def test_stdlib_texts_are_deterministic_and_respect_the_minimum_lengths():
    texts = stdlib_texts()
    assert texts == stdlib_texts()
    by_genre = stdlib_texts_by_genre()
    assert set(by_genre) == STDLIB_GENRES
    assert texts == [t for genre_texts in by_genre.values() for t in genre_texts]
    assert len(set(texts)) == len(texts)
    assert all(len(t) >= 200 for t in by_genre[GENRE_REFERENCE])
    assert all(len(t) >= 300 for t in by_genre[GENRE_DOCSTRING] + by_genre[GENRE_SOURCE])
    assert all(len(t) <= 2000 or "\n" not in t for t in texts)


def test_stdlib_texts_hold_reference_docs_docstrings_and_source():
    by_genre = stdlib_texts_by_genre()
    assert len(by_genre[GENRE_REFERENCE]) >= 100
    assert len(by_genre[GENRE_DOCSTRING]) >= 500
    assert len(by_genre[GENRE_SOURCE]) >= 200
    reference = "\n".join(by_genre[GENRE_REFERENCE])
    assert 'The "if" statement' in reference
    assert any(t.startswith("JSON (JavaScript Object Notation)") for t in by_genre[GENRE_DOCSTRING])
    code_like = [t for t in by_genre[GENRE_SOURCE] if "def " in t or "import " in t or " = " in t]
    assert len(code_like) >= 0.8 * len(by_genre[GENRE_SOURCE])


def test_stdlib_texts_follow_their_arguments():
    texts = stdlib_texts(min_chars_topics=1000, min_chars_doc=1000, n_source_chunks=10)
    assert texts and all(len(t) >= 1000 for t in texts)
    assert len(texts) < len(stdlib_texts())


def test_default_corpus_is_the_union_of_passages_and_stdlib_texts(corpus, passages):
    everything = corpus.train + corpus.heldout
    assert len(set(everything)) == len(everything)
    assert set(everything) == {p["text"] for p in passages} | set(stdlib_texts())


def test_default_corpus_is_fixed_for_a_seed_and_differs_across_seeds(corpus):
    again = default_corpus(seed=0)
    assert again == corpus
    other = default_corpus(seed=1)
    assert other.train != corpus.train
    assert set(other.heldout) != set(corpus.heldout)


def test_default_corpus_returns_fresh_lists(corpus):
    first = default_corpus()
    first.train.clear()
    assert default_corpus().train == corpus.train


def test_split_is_disjoint_and_every_genre_is_in_both_splits(corpus, passages):
    assert not set(corpus.train) & set(corpus.heldout)
    counts = corpus.genre_counts()
    assert set(counts) == {p["genre"] for p in passages} | STDLIB_GENRES
    assert all(n_train > 0 and n_heldout > 0 for n_train, n_heldout in counts.values())
    passage_texts = {p["text"] for p in passages}
    assert passage_texts & set(corpus.heldout)
    assert set(stdlib_texts()) & set(corpus.heldout)
    genre_of = dict(
        zip(corpus.train + corpus.heldout, corpus.train_genres + corpus.heldout_genres, strict=True)
    )
    assert all(genre_of[p["text"]] == p["genre"] for p in passages)


def test_corpus_sizes_are_in_a_sane_range(corpus):
    n_chars = sum(map(len, corpus.train + corpus.heldout))
    # About 4 characters per token: roughly 300k-600k tokens on Python 3.11.
    assert 1_000_000 <= n_chars <= 4_000_000
    assert sum(map(len, corpus.train)) >= 800_000  # >= ~200k training tokens
    heldout_share = len(corpus.heldout) / (len(corpus.train) + len(corpus.heldout))
    assert 0.03 <= heldout_share <= 0.08


def test_heldout_fraction_zero_gives_no_heldout_and_bad_fractions_are_refused(corpus):
    whole = default_corpus(heldout_fraction=0.0)
    assert whole.heldout == [] and whole.heldout_genres == []
    assert sorted(whole.train) == sorted(corpus.train + corpus.heldout)
    for bad in (-0.1, 1.0, 1.5):
        with pytest.raises(ConfigError, match="heldout_fraction"):
            default_corpus(heldout_fraction=bad)


def test_corpus_refuses_genre_lists_of_the_wrong_length():
    with pytest.raises(ValueError, match="train_genres"):
        Corpus(train=["a", "b"], heldout=[], train_genres=["x"], heldout_genres=[])
