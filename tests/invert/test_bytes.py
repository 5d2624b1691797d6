"""Fluency in nats per byte: neither route through the tokenizer makes a prompt look fluent.

- Pieces of characters (UTF-8 bytes as tokens) add predictable tokens, not bytes.
- Long predictable tokens (runs of spaces, newlines, one repeated character or word) add bytes,
  not text: three or more repeats in a row of one piece of text count as the piece once.
"""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from saeinverse.invert import FeatureTarget
from saeinverse.invert.fluency import Fluency, text_bytes


class PieceTokenizer:
    """Decodes ids through a table (what a byte-level BPE decode does for whole characters)."""

    def __init__(self, table: dict[int, bytes]):
        self.table = table

    def decode(self, ids):
        return b"".join(self.table[i] for i in ids).decode("utf-8", errors="replace")


def _fluency(table: dict[int, bytes]) -> Fluency:
    model = SimpleNamespace(tokenizer=PieceTokenizer(table))
    target = SimpleNamespace(model=model, start_id=0, hook_name="blocks.0.hook_resid_post")
    return Fluency(target)


def test_text_bytes_counts_utf8_bytes_and_a_run_as_one_character():
    assert text_bytes("hello") == 5
    assert text_bytes("héllo") == 6  # é is two bytes
    assert text_bytes("سلام") == 8
    assert text_bytes("a" + " " * 40 + "b") == 3
    assert text_bytes("\n\n\n\n") == 1
    assert text_bytes("book keeper") == 11  # doubled letters are ordinary text


def test_a_repeated_word_or_line_counts_once():
    assert text_bytes(" probability hash" + "Hash" * 5) == len(" probability hashHash")
    assert text_bytes("x" + "-\n" * 4 + "y") == 4
    assert text_bytes(" hash hash hash") == len(" hash")
    assert text_bytes("a hash, a hash") == 14  # twice is ordinary text


def test_character_pieces_cannot_pass_as_fluent_text():
    """The same information as 4 English tokens, cut into 16 one-byte tokens: per token it
    looks four times as fluent; per byte it is the same text."""
    words = {i: w.encode() for i, w in enumerate([" the", " cat", " sat", " mat"], start=1)}
    english = torch.tensor([[1, 2, 3, 4]])
    english_nll = torch.full((1, 4), 4.0)
    arabic = "سلامعليكمسلامعل".encode()[:16]
    pieces = {100 + i: bytes([b]) for i, b in enumerate(arabic)}
    split = torch.tensor([list(pieces)])
    split_nll = torch.full((1, 16), 1.0)  # the same 16 nats over 16 tokens
    per_token = (english_nll.mean(), split_nll.mean())
    assert per_token[1] < per_token[0] / 3, "per token, the pieces look far more fluent"
    fluency = _fluency({**words, **pieces})
    per_byte = (fluency._per_byte(english_nll, english), fluency._per_byte(split_nll, split))
    assert per_byte[0].item() == pytest.approx(per_byte[1].item())


def test_long_predictable_tokens_cannot_pass_as_fluent_text():
    table = {1: b" " * 16, 2: b"=" * 16, 3: b" the", 4: b" end"}
    runs = torch.tensor([[1, 2, 1, 2]])
    runs_nll = torch.full((1, 4), 0.2)  # very predictable, 64 raw bytes
    prose = torch.tensor([[3, 4, 3, 4]])
    prose_nll = torch.full((1, 4), 4.0)
    fluency = _fluency(table)
    raw = runs_nll.sum() / 64
    counted = fluency._per_byte(runs_nll, runs).item()
    prose_rate = fluency._per_byte(prose_nll, prose).item()
    assert raw < prose_rate / 20, "by raw bytes the runs would look twenty times as fluent"
    assert counted == pytest.approx(0.8 / 4)  # four runs: four characters
    assert counted > raw * 10


def test_cross_entropy_is_the_summed_log_loss_over_the_decoded_bytes(tiny_model, tiny_sae):
    target = FeatureTarget(tiny_model, tiny_sae)
    fluency = Fluency(target)
    ids = tiny_model.to_tokens("the cat!", move_to_device=False)[:, 1:]
    tokens = target.with_start(ids)
    with torch.no_grad():
        logprobs = tiny_model(tokens, return_type="logits")[:, :-1].log_softmax(-1)
    nll = -logprobs.gather(-1, tokens[:, 1:, None]).squeeze(-1)
    expected = nll.sum() / len(b"the cat!")
    assert fluency.cross_entropy(ids).item() == pytest.approx(expected.item(), rel=1e-4)
