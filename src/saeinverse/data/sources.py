"""Prompt sources: the bundled default corpus, local text files, and Hugging Face datasets.

`load_prompts(data_cfg, seed)` reads `data.source` and draws `data.n_prompts` prompts uniformly at
random with `seed` (reservoir sampling, so a large file or a stream is never held whole):

- ``"default"``: the bundled corpus (`saeinverse.data.corpus`), split ``train`` or ``heldout``.
- a ``.txt`` file: one prompt per non-empty line (trailing whitespace removed, indentation kept).
- a ``.jsonl`` file: one JSON object per line, the prompt in ``data.text_column``.
- a ``.parquet`` file: the prompt in column ``data.text_column``.
- anything else: a Hugging Face dataset name (or a local dataset folder, checked first by
  `check_dataset_folder`: it must hold UTF-8 data files `datasets` reads), streamed with
  ``datasets.load_dataset(source, split=data.split, streaming=True)``. The draw is uniform over
  the first ``max(10 × n_prompts, 10_000)`` rows of the stream (a stream has no known end).
  Hub access follows `saeinverse.hub.hub_should_be_offline` (HF_HUB_OFFLINE if set,
  else a quick reachability probe); offline, a hub name fails at once with a DataError.

Empty or whitespace-only texts are skipped. The result is in the order drawn (random).
"""

from __future__ import annotations

import codecs
import contextlib
import json
import logging
import random
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

from saeinverse.errors import DataError

logger = logging.getLogger(__name__)

STREAM_POOL_FACTOR = 10
"""A streamed dataset's draw covers its first max(STREAM_POOL_FACTOR × n_prompts, STREAM_POOL_MIN) rows."""
STREAM_POOL_MIN = 10_000
DEFAULT_SOURCE = "default"


def load_prompts(data_cfg: Mapping[str, Any], seed: int = 0) -> list[str]:
    """`data_cfg.n_prompts` prompts drawn at random (with `seed`) from `data_cfg.source`."""
    n = int(data_cfg["n_prompts"])
    if n < 1:
        raise DataError(f"data.n_prompts must be at least 1, got {n}")
    source = str(data_cfg["source"])
    texts, limit, where = _open_source(source, data_cfg, seed)
    prompts = reservoir_sample(texts, n, seed, limit=limit)
    if not prompts:
        raise DataError(f"the prompt source {where} holds no non-empty text")
    if len(prompts) < n:
        logger.warning("%s holds %d prompts, fewer than n_prompts=%d", where, len(prompts), n)
    logger.info("drew %d prompts from %s (seed %d)", len(prompts), where, seed)
    return prompts


def reservoir_sample(
    texts: Iterable[str], n: int, seed: int, limit: int | None = None
) -> list[str]:
    """A uniform random sample of `n` non-blank texts (all of them, shuffled, if fewer).

    Algorithm R over the first `limit` texts (all if None), then shuffled: deterministic for a
    given seed and input order.
    """
    rng = random.Random(seed)
    reservoir: list[str] = []
    for seen, text in enumerate(_non_blank(texts)):
        if limit is not None and seen >= limit:
            break
        if len(reservoir) < n:
            reservoir.append(text)
        else:
            slot = rng.randrange(seen + 1)
            if slot < n:
                reservoir[slot] = text
    rng.shuffle(reservoir)
    return reservoir


def _non_blank(texts: Iterable[str]) -> Iterator[str]:
    for text in texts:
        if text and not text.isspace():
            yield text


def _open_source(
    source: str, data_cfg: Mapping[str, Any], seed: int
) -> tuple[Iterable[str], int | None, str]:
    """(texts, how many to draw from at most, a description for messages)."""
    if source == DEFAULT_SOURCE:
        return _default_corpus(str(data_cfg["split"]), seed), None, "the default corpus"
    path = Path(source).expanduser()
    reader = _FILE_READERS.get(path.suffix.lower())
    if path.is_dir():
        check_dataset_folder(path)
    elif reader is not None:
        if not path.is_file():
            raise DataError(f"prompt file {path} does not exist")
        return _guarded(reader(path, str(data_cfg["text_column"])), path), None, str(path)
    elif path.exists():
        raise DataError(
            f"data.source {source!r} is a file of an unknown kind: give a .txt, .jsonl or "
            ".parquet file, a dataset folder, 'default' or a Hugging Face dataset name"
        )
    n = int(data_cfg["n_prompts"])
    limit = max(STREAM_POOL_FACTOR * n, STREAM_POOL_MIN)
    texts = _hf_stream(source, str(data_cfg["split"]), str(data_cfg["text_column"]))
    return texts, limit, f"dataset {source!r}"


_CORPUS_SPLITS = ("train", "heldout")


def _default_corpus(split: str, seed: int) -> list[str]:
    if split not in _CORPUS_SPLITS:
        raise DataError(f"the default corpus has splits {list(_CORPUS_SPLITS)}, not {split!r}")
    from saeinverse.data.corpus import default_corpus

    return getattr(default_corpus(seed), split)


# ----------------------------------------------------------------------------- local files


def _read_txt(path: Path, text_column: str) -> Iterator[str]:
    """One prompt per non-empty line (`text_column` does not apply)."""
    del text_column
    with open(path, encoding="utf-8") as handle:
        for line in handle:
            yield line.rstrip()


def _read_jsonl(path: Path, text_column: str) -> Iterator[str]:
    """The `text_column` field of each JSON object, one object per line."""
    with open(path, encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as err:
                raise DataError(f"{path} line {number} is not valid JSON: {err}") from err
            if not isinstance(record, dict):
                raise DataError(f"{path} line {number} is not a JSON object")
            if text_column not in record:
                raise _missing_column(text_column, list(record), f"{path} line {number}")
            yield _as_text(record[text_column], f"{path} line {number}")


def _read_parquet(path: Path, text_column: str) -> Iterator[str]:
    """The `text_column` of a parquet file, read batch by batch."""
    import pyarrow.parquet as pq

    try:
        parquet = pq.ParquetFile(path)
    except Exception as err:  # pyarrow raises several types for a corrupt file
        raise DataError(f"{path} is not a readable parquet file: {err}") from err
    names = parquet.schema_arrow.names
    if text_column not in names:
        raise _missing_column(text_column, names, str(path))
    for batch in parquet.iter_batches(columns=[text_column]):
        for value in batch.column(0).to_pylist():
            yield _as_text(value, str(path))


def _guarded(texts: Iterator[str], path: Path) -> Iterator[str]:
    """`texts`, with an unreadable or non-UTF-8 file turned into one DataError line."""
    try:
        yield from texts
    except UnicodeDecodeError as err:
        raise DataError(
            f"prompt file {path} is not UTF-8 text (byte offset {err.start}): convert it to UTF-8"
        ) from err
    except OSError as err:
        raise DataError(f"cannot read prompt file {path}: {err.strerror or err}") from err


_FILE_READERS: dict[str, Callable[[Path, str], Iterator[str]]] = {
    ".txt": _read_txt,
    ".jsonl": _read_jsonl,
    ".parquet": _read_parquet,
}


def _missing_column(column: str, available: list[str], where: str) -> DataError:
    return DataError(
        f"{where} has no text column {column!r} (set data.text_column); "
        f"available columns: {', '.join(map(str, available)) or 'none'}"
    )


def _as_text(value: Any, where: str) -> str:
    if value is None:
        return ""
    if not isinstance(value, str):
        raise DataError(f"{where}: the text column holds {type(value).__name__}, not text")
    return value


# ----------------------------------------------------------------------------- dataset folders

FOLDER_DATA_SUFFIXES = (".txt", ".jsonl", ".json", ".csv", ".parquet")
"""Data files `datasets` reads from a local folder (text kinds must be UTF-8)."""
_TEXT_SUFFIXES = (".txt", ".jsonl", ".json", ".csv")
_UTF8_PROBE_BYTES = 1 << 16


def check_dataset_folder(folder: Path) -> None:
    """DataError unless `folder` holds data files `datasets` can read, the text ones UTF-8.

    Checked before `datasets` opens the folder, whose own errors (a UnicodeDecodeError deep in
    a builder, "No (supported) data files found") do not say which file or what to do. Only the
    first 64 KiB of each text file are decoded (a cheap check, not a proof).
    """
    files = sorted(
        f
        for f in folder.rglob("*")
        if f.is_file()
        and f.suffix.lower() in FOLDER_DATA_SUFFIXES
        and not any(part.startswith(".") for part in f.relative_to(folder).parts)
    )
    if not files:
        raise DataError(
            f"data.source {str(folder)!r} is a directory without data files "
            f"({', '.join(FOLDER_DATA_SUFFIXES)}): give a prompt file (.txt / .jsonl / .parquet), "
            "a dataset folder, 'default' or a Hugging Face dataset name"
        )
    for file in files:
        if file.suffix.lower() not in _TEXT_SUFFIXES:
            continue
        try:
            with open(file, "rb") as handle:
                head = handle.read(_UTF8_PROBE_BYTES)
        except OSError as err:
            raise DataError(f"cannot read {file} in data.source: {err.strerror}") from err
        try:
            codecs.getincrementaldecoder("utf-8")().decode(head, final=False)
        except UnicodeDecodeError as err:
            raise DataError(
                f"{file} in the data.source directory is not UTF-8 text "
                f"(byte {head[err.start]:#04x} at offset {err.start}): "
                "convert it, move it out, or name one prompt file as data.source"
            ) from err


# ----------------------------------------------------------------------------- Hugging Face


def _hf_stream(name: str, split: str, text_column: str) -> Iterator[str]:
    """Stream `text_column` of a Hugging Face dataset; DataError if it cannot be opened."""
    from saeinverse.hub import hub_should_be_offline

    local = Path(name).expanduser().is_dir()
    offline = False if local else hub_should_be_offline()
    rows = iter(())
    first = None
    with _datasets_hub_mode(offline):
        import datasets

        try:
            dataset = datasets.load_dataset(name, split=split, streaming=True)
            rows = iter(dataset)
            first = next(rows, None)
        except Exception as err:  # datasets raises many types: connection, 404, bad split...
            raise _hub_error(name, split, offline, err) from err
    if first is None:
        return
    if text_column not in first:
        raise _missing_column(text_column, list(first), f"dataset {name!r}")
    yield _as_text(first[text_column], f"dataset {name!r}")
    for row in rows:
        yield _as_text(row[text_column], f"dataset {name!r}")


def _hub_error(name: str, split: str, offline: bool, err: Exception) -> DataError:
    if offline:
        return DataError(
            f"data.source {name!r} is not a local file and the Hugging Face Hub is offline: "
            "a hub dataset needs network access (set HF_HUB_OFFLINE=0 where the hub is "
            "reachable), or give a local .txt / .jsonl / .parquet path, or 'default' for the "
            f"bundled corpus. ({_one_line(err)})"
        )
    return DataError(
        f"could not open dataset {name!r} split {split!r}: {_one_line(err)}. "
        "data.source takes 'default', a .txt / .jsonl / .parquet path or a Hugging Face dataset."
    )


def _one_line(err: Exception) -> str:
    """``Type: first line of the message`` (library errors often span several lines)."""
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[0] if text else ''}".rstrip(": ")


@contextlib.contextmanager
def _datasets_hub_mode(offline: bool) -> Iterator[None]:
    """`hub_mode` plus `datasets`' own offline flag (which it reads once, at import)."""
    import datasets.config

    from saeinverse.hub import hub_mode

    saved = datasets.config.HF_HUB_OFFLINE
    datasets.config.HF_HUB_OFFLINE = offline
    try:
        with hub_mode(offline):
            yield
    finally:
        datasets.config.HF_HUB_OFFLINE = saved
