"""Fluency: the model's own cross-entropy of a prompt, and the real-text bound it is judged by.

- ``Fluency.cross_entropy``: each prompt's next-token cross-entropy under the subject model in
  **nats per UTF-8 byte** of its decoded text (``text_bytes``), the start token in front as in
  collection: the summed negative log-likelihood of the predicted tokens divided by their bytes.
  With a start token every prompt token is predicted (the first from the start token alone);
  without one the first token is neither scored nor counted. Per byte, not per token, because a
  per-token mean is gamed by tokenisation: pieces of one character (UTF-8 bytes of Arabic or CJK
  text) are many predictable tokens of one byte each, which lower a per-token mean but not a
  per-byte one. The opposite route, long predictable tokens (a run of spaces, of newlines, of one
  repeated character or word), is closed by counting three or more repeats in a row of one piece
  of text as the piece once. It needs the whole model and the unembedding, so the search spends it on a
  shortlist only (resuming from the SAE's hook activations where the hook is on the residual
  stream).
- ``measure_bound``: the real-text bound. ``n_windows`` windows of the prompt's length drawn at
  random (with the seed) from real token rows, each scored by ``cross_entropy``; the bound is the
  ``quantile`` of those scores, linearly interpolated (``torch.quantile``). The headline prompt of
  an inversion is the most active one at or below it.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path

import torch
from jaxtyping import Float, Int
from torch import Tensor

from saeinverse.errors import DataError
from saeinverse.invert.objective import FeatureTarget
from saeinverse.models.hooks import resume_layer_for, start_token_id

logger = logging.getLogger(__name__)

CE_BATCH = 32
"""Prompts per full forward when scoring cross-entropy."""
REPEATS = re.compile(r"(.+?)\1{2,}", re.DOTALL)
"""Three or more repeats in a row of one piece of text (a character, a word, a line): counted once
by ``text_bytes``."""


def text_bytes(text: str) -> int:
    """The UTF-8 bytes of ``text`` with each run of 3+ repeats of one piece (``"    "``,
    ``"HashHashHash"``, ``"-\n-\n-\n"``) counted as the piece once (at least 1): the
    denominator of nats per byte."""
    return max(1, len(REPEATS.sub(r"\1", text).encode("utf-8")))


class Fluency:
    """The model's own cross-entropy of prompts, and its next-token expectations per position."""

    def __init__(self, target: FeatureTarget, allowed: Tensor | None = None, top_k: int = 1):
        self.target = target
        self.allowed = allowed
        self.top_k = top_k
        self.resume_layer = resume_layer_for(target.hook_name)
        self.first_scored = 0 if target.start_id is not None else 1
        """The first prompt position whose token is predicted (and counted in bytes)."""

    def bytes(self, ids: Int[Tensor, "batch pos"]) -> Float[Tensor, " batch"]:
        """``text_bytes`` of each prompt's predicted tokens, decoded together."""
        tokenizer = getattr(self.target.model, "tokenizer", None)
        rows = ids[:, self.first_scored :].tolist()
        if tokenizer is None:  # no text: one byte per token
            return torch.tensor([max(1, len(r)) for r in rows], dtype=torch.float32)
        return torch.tensor([text_bytes(tokenizer.decode(r)) for r in rows], dtype=torch.float32)

    def _per_byte(self, nll: Float[Tensor, "batch pos"], ids: Tensor) -> Float[Tensor, " batch"]:
        return nll.sum(-1) / self.bytes(ids).to(nll.device)

    def _logits(self, ids: Tensor, resid: Tensor | None, size: int = CE_BATCH):
        """(tokens, logits of each next token) per chunk of prompts."""
        tokens = self.target.with_start(ids.to(self.target.device))
        with torch.no_grad():
            for lo in range(0, ids.shape[0], size):
                chunk = tokens[lo : lo + size]
                if resid is not None and self.resume_layer is not None:
                    logits = self.target.model(
                        resid[lo : lo + size], start_at_layer=self.resume_layer
                    )
                else:
                    logits = self.target.model(chunk, return_type="logits")
                yield chunk, logits[:, :-1].float()

    def _chunks(self, ids: Tensor, resid: Tensor | None, size: int = CE_BATCH):
        """(tokens, log-probabilities of each next token) per chunk of prompts."""
        for chunk, logits in self._logits(ids, resid, size):
            yield chunk, logits.log_softmax(-1)

    def cross_entropy(
        self, ids: Int[Tensor, "batch pos"], resid: Float[Tensor, "batch pos1 d"] | None = None
    ) -> Float[Tensor, " batch"]:
        """Each prompt's cross-entropy in nats per byte (resumed from ``resid`` when possible)."""
        if ids.shape[0] == 0:
            return torch.zeros(0, device=self.target.device)
        out, lo = [], 0
        for chunk, logits in self._logits(ids, resid):
            # logsumexp minus the token's logit: the log-loss without a vocabulary-wide tensor
            picked = logits.gather(-1, chunk[:, 1:, None]).squeeze(-1)
            nll = logits.logsumexp(-1) - picked
            out.append(self._per_byte(nll, ids[lo : lo + len(chunk)]))
            lo += len(chunk)
        return torch.cat(out)

    def expectations(
        self, ids: Int[Tensor, "batch pos"]
    ) -> tuple[Float[Tensor, " batch"], Float[Tensor, "batch pos vocab"]]:
        """(cross-entropy per byte, log-probability of every token at every prompt position).

        Without a start token the first position has no prediction; it gets zeros (no opinion).
        """
        ces, expected, lo = [], [], 0
        for chunk, logprobs in self._chunks(ids, None, size=16):
            nll = -logprobs.gather(-1, chunk[:, 1:, None]).squeeze(-1)
            ces.append(self._per_byte(nll, ids[lo : lo + len(chunk)]))
            lo += len(chunk)
            if self.target.start_id is None:
                logprobs = torch.cat([torch.zeros_like(logprobs[:, :1]), logprobs], dim=1)
            expected.append(logprobs)
        return torch.cat(ces), torch.cat(expected)

    def top_tokens(self, logprobs: Float[Tensor, "batch pos vocab"]) -> Int[Tensor, "batch pos k"]:
        """The ``top_k`` allowed tokens the model expects at each position."""
        if self.allowed is not None:
            logprobs = logprobs.masked_fill(~self.allowed, float("-inf"))
        return logprobs.topk(self.top_k, dim=-1).indices


# ----------------------------------------------------------------------------- the bound


@dataclass
class FluencyBound:
    """The real-text cross-entropy bound, with what it was measured on."""

    cross_entropy: float
    """The bound (nats per byte): the ``quantile`` of the windows' cross-entropies, interpolated."""
    quantile: float
    """Which quantile of real text the bound is (0.5: the median)."""
    n_windows: int
    """Real windows scored."""
    length: int
    """Tokens per window (the prompt length; the start token is put in front, as for prompts)."""
    p10: float
    p50: float
    p90: float
    """The windows' 10th / 50th / 90th percentiles (interpolated), for the reader."""
    windows: Tensor | None = field(default=None, repr=False, compare=False)
    """The measured windows (Int[Tensor, "n pos"]); fluent rows start from them. Not saved."""
    window_ce: Tensor | None = field(default=None, repr=False, compare=False)
    """Each window's cross-entropy. Not saved."""

    def to_dict(self) -> dict:
        return {f.name: getattr(self, f.name) for f in fields(self) if f.repr}

    @classmethod
    def from_dict(cls, data: dict | None) -> FluencyBound | None:
        return None if data is None else cls(**data)

    def fluent_windows(self, hinge: float) -> Tensor | None:
        """The measured windows whose cross-entropy is at or below ``hinge`` (None if unknown)."""
        if self.windows is None or self.window_ce is None:
            return None
        kept = self.windows[self.window_ce <= hinge]
        return kept if len(kept) else None


def real_windows(
    token_rows: Sequence[Tensor | Sequence[int]], length: int, n_windows: int, seed: int
) -> Int[Tensor, "n pos"]:
    """``n_windows`` windows of ``length`` tokens drawn uniformly among every window of the rows.

    Windows are drawn without replacement; when the rows hold fewer, all of them are returned
    (with a warning). ``DataError`` when no row is long enough.
    """
    rows = [torch.as_tensor(r, dtype=torch.long).reshape(-1) for r in token_rows]
    counts = torch.tensor([max(0, len(r) - length + 1) for r in rows], dtype=torch.long)
    total = int(counts.sum())
    if total == 0:
        raise DataError(f"no real text row holds {length} tokens to measure the fluency bound")
    if total < n_windows:
        logger.warning("only %d real %d-token windows for the fluency bound", total, length)
    gen = torch.Generator().manual_seed(int(seed))
    picks = torch.randperm(total, generator=gen)[: min(n_windows, total)].sort().values
    ends = counts.cumsum(0)
    row_of = torch.searchsorted(ends, picks, right=True)
    starts = picks - (ends[row_of] - counts[row_of])
    return torch.stack(
        [rows[r][s : s + length] for r, s in zip(row_of.tolist(), starts.tolist(), strict=True)]
    )


def measure_bound(
    target: FeatureTarget,
    token_rows: Sequence[Tensor | Sequence[int]],
    length: int,
    quantile: float = 0.5,
    n_windows: int = 300,
    seed: int = 0,
    cache: str | Path | None = None,
) -> FluencyBound:
    """The real-text bound (see the module docstring) from rows of real token ids (no start token).

    ``cache``: a folder where the windows' cross-entropies are kept, keyed by the model's weights
    and the windows themselves (so a rerun, or another run on the same text, reads them back)."""
    windows = real_windows(token_rows, length, n_windows, seed)
    ce = window_cross_entropy(target, windows, cache)
    q = torch.quantile(ce, torch.tensor([quantile, 0.1, 0.5, 0.9])).tolist()
    bound = FluencyBound(
        q[0], float(quantile), int(len(ce)), int(length), q[1], q[2], q[3], windows, ce
    )
    logger.info(
        "real %d-token text over %d windows: cross-entropy p10/p50/p90 = %.2f / %.2f / %.2f; "
        "fluency bound (q%.2f) %.2f nats/byte",
        length, len(ce), bound.p10, bound.p50, bound.p90, quantile, bound.cross_entropy,
    )  # fmt: skip
    return bound


BOUND_CACHE_VERSION = 3


def window_cross_entropy(
    target: FeatureTarget, windows: Int[Tensor, "n pos"], cache: str | Path | None = None
) -> Float[Tensor, " n"]:
    """``Fluency.cross_entropy`` of the windows, read from / written to ``cache`` when given."""
    path = None
    if cache is not None:
        from saeinverse.models.identity import models_identity

        identity = {
            "version": BOUND_CACHE_VERSION,
            "models": models_identity(target.model, target.sae),
            "start": target.start_id,
            "windows": hashlib.sha256(windows.cpu().numpy().astype("int64").tobytes()).hexdigest(),
            "shape": list(windows.shape),
        }
        key = hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:16]
        path = Path(cache) / f"window-ce-{key}.json"
        if path.is_file():
            try:
                values = json.loads(path.read_text())
                if len(values) == len(windows):
                    logger.info("real-text cross-entropies read from %s", path)
                    return torch.tensor(values, dtype=torch.float32)
            except (OSError, ValueError):
                logger.warning("unreadable cache %s: measuring again", path)
    ce = Fluency(target).cross_entropy(windows).float().cpu()
    if path is not None:
        from saeinverse.io import atomic_open

        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_open(path) as handle:
            json.dump(ce.tolist(), handle)
    return ce


def text_token_rows(model, texts: Sequence[str], max_length: int = 64) -> list[Tensor]:
    """Each text's token ids (the start token dropped), cut to ``max_length`` tokens."""
    start = 0 if start_token_id(model) is None else 1
    rows = []
    for text in texts:
        ids = model.to_tokens(text, truncate=True, move_to_device=False)[0]
        rows.append(ids[start : start + max_length])
    return rows


def stats_token_rows(stats, model) -> list[Tensor]:
    """The collection's prompts as token rows (the start token dropped, padding cut)."""
    offset = 0 if start_token_id(model) is None else 1
    return [stats.tokens[p, offset : int(stats.lengths[p])] for p in range(stats.n_prompts)]


DEFAULT_TEXTS = 400
"""Texts of the default corpus's train split the bound is measured on when no run gives one."""


@functools.lru_cache(maxsize=2)
def _default_texts(seed: int) -> tuple[str, ...]:
    from saeinverse.data.corpus import default_corpus

    return tuple(default_corpus(seed=seed).train[:DEFAULT_TEXTS])


def default_bound(
    target: FeatureTarget, s, seed: int = 0, cache: str | Path | None = None
) -> FluencyBound:
    """The bound measured on the default corpus (for a call that brings no run's collection).

    ``s`` is the ``OptimizationConfig``: its ``length``, ``fluency_quantile`` and
    ``fluency_windows`` say what is measured; ``cache``: as ``measure_bound``'s.
    """
    rows = text_token_rows(target.model, _default_texts(int(seed)))
    return measure_bound(
        target, rows, s.length, s.fluency_quantile, s.fluency_windows, seed, cache=cache
    )
