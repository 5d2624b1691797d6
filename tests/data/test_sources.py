"""Prompt sources: local files, random draws with the seed, clear errors, offline hub names."""

from __future__ import annotations

import json
import time

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from saeinverse.config import get_default_config, update_config
from saeinverse.data.sources import load_prompts, reservoir_sample
from saeinverse.errors import ConfigError, DataError

TEXTS = [f"prompt number {i}" for i in range(40)]


def data_cfg(**overrides):
    return update_config(get_default_config(), {"data": overrides}).data


@pytest.fixture
def files(tmp_path):
    txt = tmp_path / "prompts.txt"
    txt.write_text("\n".join(TEXTS[:20]) + "\n\n   \n" + "\n".join(TEXTS[20:]) + "\n")
    jsonl = tmp_path / "prompts.jsonl"
    jsonl.write_text("\n".join(json.dumps({"body": t, "id": i}) for i, t in enumerate(TEXTS)))
    parquet = tmp_path / "prompts.parquet"
    pq.write_table(pa.table({"body": TEXTS, "id": list(range(40))}), parquet)
    return {"txt": txt, "jsonl": jsonl, "parquet": parquet}


@pytest.mark.parametrize("kind", ["txt", "jsonl", "parquet"])
def test_local_files_read_every_prompt(files, kind):
    prompts = load_prompts(data_cfg(source=str(files[kind]), text_column="body", n_prompts=100))
    assert sorted(prompts) == sorted(
        TEXTS
    )  # fewer than n_prompts: all of them, blank lines skipped


@pytest.mark.parametrize("kind", ["txt", "jsonl", "parquet"])
def test_random_draw_is_seeded_and_not_the_first_n(files, kind):
    cfg = data_cfg(source=str(files[kind]), text_column="body", n_prompts=10)
    first = load_prompts(cfg, seed=0)
    assert load_prompts(cfg, seed=0) == first
    assert len(first) == 10 and len(set(first)) == 10 and set(first) <= set(TEXTS)
    assert set(first) != set(TEXTS[:10])
    assert load_prompts(cfg, seed=1) != first


def test_reservoir_sample_is_uniform_enough():
    counts = dict.fromkeys(range(20), 0)
    for seed in range(400):
        for item in reservoir_sample([str(i) for i in range(20)], 5, seed):
            counts[int(item)] += 1
    assert min(counts.values()) > 60 and max(counts.values()) < 140  # expectation 100


def test_default_corpus_splits(monkeypatch):
    real = load_prompts(data_cfg(n_prompts=5), seed=0)
    assert len(real) == 5 and all(isinstance(p, str) and p.strip() for p in real)

    from saeinverse.data import corpus

    fake = corpus.Corpus(TEXTS[:30], TEXTS[30:], ["x"] * 30, ["x"] * 10)
    monkeypatch.setattr(corpus, "default_corpus", lambda seed=0: fake)
    assert set(load_prompts(data_cfg(n_prompts=5))) <= set(TEXTS[:30])
    assert sorted(load_prompts(data_cfg(n_prompts=50, split="heldout"))) == sorted(TEXTS[30:])
    with pytest.raises(DataError, match="'heldout'"):
        load_prompts(data_cfg(split="validation"))


@pytest.mark.parametrize("kind", ["jsonl", "parquet"])
def test_missing_text_column_names_it_and_the_available_ones(files, kind):
    with pytest.raises(DataError, match=r"'text'.*available columns: body, id"):
        load_prompts(data_cfg(source=str(files[kind]), text_column="text"))


def test_empty_sources_are_errors(tmp_path):
    (tmp_path / "empty.txt").write_text("\n  \n")
    (tmp_path / "empty.jsonl").write_text(json.dumps({"text": ""}) + "\n")
    for name in ("empty.txt", "empty.jsonl"):
        with pytest.raises(DataError, match="holds no non-empty text"):
            load_prompts(data_cfg(source=str(tmp_path / name)))
    with pytest.raises(DataError, match="does not exist"):
        load_prompts(data_cfg(source=str(tmp_path / "missing.jsonl")))
    with pytest.raises(ConfigError, match="data.n_prompts must be ≥ 1, got 0"):
        load_prompts(data_cfg(source=str(tmp_path / "empty.txt"), n_prompts=0))


@pytest.mark.parametrize("env", [None, "1"])
def test_offline_hub_name_fails_fast(monkeypatch, env):
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    if env is None:
        monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    else:
        monkeypatch.setenv("HF_HUB_OFFLINE", env)
    start = time.perf_counter()
    with pytest.raises(DataError, match="network|could not open") as err:
        load_prompts(data_cfg(source="saeinverse-tests/no-such-dataset", n_prompts=3))
    assert time.perf_counter() - start < 10
    assert "local .txt / .jsonl / .parquet" in str(err.value) or "could not open" in str(err.value)


def test_local_dataset_folder_streams_through_datasets(tmp_path):
    folder = tmp_path / "ds"
    folder.mkdir()
    (folder / "train.jsonl").write_text("\n".join(json.dumps({"text": t}) for t in TEXTS))
    prompts = load_prompts(data_cfg(source=str(folder), n_prompts=7), seed=3)
    assert len(prompts) == 7 and set(prompts) <= set(TEXTS)
    assert prompts == load_prompts(data_cfg(source=str(folder), n_prompts=7), seed=3)
    with pytest.raises(DataError, match=r"'body'.*available columns: text"):
        load_prompts(data_cfg(source=str(folder), text_column="body"))


def _one_line_data_error(source: str, **overrides) -> str:
    with pytest.raises(DataError) as err:
        load_prompts(data_cfg(source=source, n_prompts=3, **overrides))
    message = str(err.value)
    assert "\n" not in message
    return message


def test_a_directory_of_binary_files_is_a_clear_error(tmp_path):
    """A directory as data.source is a clear DataError, not a UnicodeDecodeError."""
    (tmp_path / "weights.bin").write_bytes(bytes(range(256)) * 8)
    message = _one_line_data_error(str(tmp_path))
    assert str(tmp_path) in message and "directory without data files" in message
    assert "UnicodeDecodeError" not in message
    named_like_a_file = tmp_path / "prompts.txt"
    named_like_a_file.mkdir()
    assert "directory without data files" in _one_line_data_error(str(named_like_a_file))


def test_a_non_utf8_file_is_named(tmp_path):
    folder = tmp_path / "ds"
    folder.mkdir()
    (folder / "train.txt").write_bytes(b"\xc0\xff binary" * 100)
    message = _one_line_data_error(str(folder))
    assert "train.txt" in message and "not UTF-8" in message and "0xc0" in message
    for name in ("bad.txt", "bad.jsonl"):
        (tmp_path / name).write_bytes(b"ok line\n\xc0\xff\n")
        assert "not UTF-8" in _one_line_data_error(str(tmp_path / name), text_column="text")


def test_an_existing_file_of_unknown_kind_is_not_sent_to_the_hub(tmp_path):
    (tmp_path / "config.yaml").write_text("seed: 1\n")
    start = time.perf_counter()
    message = _one_line_data_error(str(tmp_path / "config.yaml"))
    assert "unknown kind" in message and time.perf_counter() - start < 5
