"""The prompts behind the evidence: their tokens, genres and per-token activations.

A ``PromptSet`` is a list of token rows with the selected features' activation on every token
(``Float[Tensor, "pos n_features"]`` per prompt). Two kinds exist:

- **the run's prompts** (``run_prompts``): the collection's own. Only the prompts a feature's
  plan needs are forwarded again (``forward_features``); a prompt where collection saw the
  feature never fire reads as silent without a forward (its activations are zero);
- **extra prompts** (``draw_extra_prompts``): texts of the bundled corpus that the run never
  collected, drawn with the seed and forwarded in chunks until every feature fires in enough of
  them (or ``limit`` prompts are spent). For each feature, the held-out side takes its first
  firing ones, the explaining side the next (``sampling.build_evidence``).

Genres come from the bundled corpus (``corpus_genres``): a prompt that is not a bundled text has
none.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor
from tqdm.auto import tqdm

logger = logging.getLogger(__name__)

FORWARD_BATCH = 16
"""Prompts per forward when recomputing per-token activations."""
EXTRA_CHUNK = 128
"""Extra prompts forwarded per round while topping up the held-out positives."""


@dataclass
class PromptSet:
    """Token rows with per-token activations of the selected features (columns in their order)."""

    tokens: np.ndarray
    """Int[ndarray, "n_prompts pos"]: token ids, start token included, right-padded."""
    lengths: np.ndarray
    """Int[ndarray, "n_prompts"]: tokens per prompt."""
    strings: Callable[[int], str]
    """Token id -> its string."""
    origin: str
    """'run' or 'extra'."""
    acts: dict[int, Tensor] = field(default_factory=dict)
    """Forwarded prompts' activations; any other prompt reads as silent."""
    genres: dict[int, str] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.lengths)

    def row(self, prompt: int) -> list[int]:
        return self.tokens[prompt, : int(self.lengths[prompt])].tolist()

    def activations(self, prompt: int, column: int) -> Tensor:
        """Float[Tensor, "pos"]: one feature's activation on every token of the prompt."""
        found = self.acts.get(prompt)
        if found is None:
            return torch.zeros(int(self.lengths[prompt]))
        return found[:, column]

    def holding(self, token_ids: set[int], first: int) -> np.ndarray:
        """Indices of the prompts holding one of ``token_ids`` at or after ``first``."""
        if not token_ids or not len(self):
            return np.zeros(0, dtype=np.int64)
        inside = np.arange(self.tokens.shape[1])[None, :] < self.lengths[:, None]
        inside[:, :first] = False
        hits = np.isin(self.tokens, np.fromiter(token_ids, dtype=np.int64)) & inside
        return np.flatnonzero(hits.any(1))


def forward_features(
    model, sae, rows: Sequence[Sequence[int]], feature_ids: Sequence[int]
) -> list[Tensor]:
    """Per-token activations of ``feature_ids`` on each token row: Float[Tensor, "pos n_features"].

    Rows are right-padded in batches of similar length; the model runs only up to the SAE's hook.
    """
    from saeinverse.models.hooks import encode, hook_activations, sae_hook_name

    hook = sae_hook_name(sae)
    param = next(sae.parameters())
    columns = torch.tensor(list(feature_ids), dtype=torch.long, device=param.device)
    lengths = [len(r) for r in rows]
    order = sorted(range(len(rows)), key=lambda i: -lengths[i])
    out: list[Tensor | None] = [None] * len(rows)
    with torch.inference_mode():
        for lo in range(0, len(order), FORWARD_BATCH):
            chunk = order[lo : lo + FORWARD_BATCH]
            width = max(lengths[i] for i in chunk)
            tokens = torch.zeros((len(chunk), width), dtype=torch.long)
            for j, i in enumerate(chunk):
                tokens[j, : lengths[i]] = torch.as_tensor(list(rows[i]), dtype=torch.long)
            acts = hook_activations(model, tokens.to(model.cfg.device), hook)
            feats = encode(sae, acts)[..., columns]
            for j, i in enumerate(chunk):
                out[i] = feats[j, : lengths[i]].float().cpu()
    return out  # type: ignore[return-value]


@functools.lru_cache(maxsize=1)
def corpus_genres() -> dict[str, str]:
    """Every bundled-corpus text -> its genre (the split does not change a text's genre)."""
    from saeinverse.data.corpus import default_corpus

    corpus = default_corpus(0)
    texts, genres = corpus.train + corpus.heldout, corpus.train_genres + corpus.heldout_genres
    pairs = zip(texts, genres, strict=True)
    return dict(pairs)


def token_strings(model, stats, ids: Sequence[int]) -> list[str]:
    """Each id's string: from the collection's table, else decoded by the model's tokenizer."""
    table = getattr(stats, "token_strings", None) or {}
    tokenizer = getattr(model, "tokenizer", None)
    out = []
    for i in ids:
        if i in table:
            out.append(table[i])
        elif tokenizer is not None:
            out.append(tokenizer.decode([i], clean_up_tokenization_spaces=False))
        else:
            out.append(f"<{i}>")
    return out


def run_prompts(model, sae, stats, feature_ids: Sequence[int], forward: set[int]) -> PromptSet:
    """The collection's prompts; those in ``forward`` get their activations recomputed."""
    genres = corpus_genres()
    tokens, lengths = stats.tokens.numpy(), stats.lengths.numpy()
    prompts = sorted(forward)
    rows = [tokens[p, : int(lengths[p])].tolist() for p in prompts]
    acts = forward_features(model, sae, rows, feature_ids) if rows else []
    found = {p: genres[t] for p, t in enumerate(stats.prompts) if t in genres}
    strings = _strings(model, stats)
    return PromptSet(tokens, lengths, strings, "run", dict(zip(prompts, acts, strict=True)), found)


def _strings(model, stats) -> Callable[[int], str]:
    @functools.cache
    def one(token: int) -> str:
        return token_strings(model, stats, [token])[0]

    return one


def draw_extra_prompts(
    model,
    sae,
    stats,
    feature_ids: Sequence[int],
    needed: np.ndarray,
    *,
    limit: int,
    first: int,
    seed: int,
    progress: bool = False,
    avoid_texts: Collection[str] = (),
) -> PromptSet:
    """Bundled-corpus texts the run never collected, forwarded until feature ``j`` fires in at
    least ``needed[j]`` of them for every ``j`` (or ``limit`` texts are spent).

    The texts are drawn in a seeded order; each round forwards ``EXTRA_CHUNK`` of them. A text
    in ``avoid_texts`` (``data.corpus.text_hash``: one an inversion could start from) is never
    drawn.
    """
    from saeinverse.collect.activations import tokenize_prompts
    from saeinverse.errors import DataError

    genres = corpus_genres()
    seen = set(stats.prompts)
    texts = sorted(t for t in genres if t not in seen)
    if avoid_texts:
        from saeinverse.data.corpus import text_hash

        avoid = set(avoid_texts)
        texts = [t for t in texts if text_hash(t) not in avoid]
    order = np.random.default_rng([int(seed), 7]).permutation(len(texts))[: max(int(limit), 0)]
    max_length = int(stats.tokens.shape[1])
    all_rows: list[list[int]] = []
    acts: dict[int, Tensor] = {}
    found: dict[int, str] = {}
    firing = np.zeros(len(feature_ids), dtype=np.int64)
    bar = tqdm(total=len(order), desc="extra prompts", unit="prompt", disable=not progress)
    for lo in range(0, len(order), EXTRA_CHUNK):
        if np.all(firing >= needed):
            break
        bar.update(min(EXTRA_CHUNK, len(order) - lo))
        chunk = [texts[i] for i in order[lo : lo + EXTRA_CHUNK]]
        try:
            batch = tokenize_prompts(model, chunk, max_length, first)
        except DataError:  # every text of the chunk too short for this tokenizer
            continue
        rows = [batch.tokens[i, : int(n)].tolist() for i, n in enumerate(batch.lengths)]
        forwarded = forward_features(model, sae, rows, feature_ids)
        for row, text, act in zip(rows, batch.prompts, forwarded, strict=True):
            acts[len(all_rows)] = act
            found[len(all_rows)] = genres[text]
            all_rows.append(row)
            firing += (act[first:] > 0).any(0).numpy()
    bar.close()
    logger.info("drew %d extra prompts from the bundled corpus", len(all_rows))
    lengths = np.array([len(r) for r in all_rows], dtype=np.int64)
    tokens = np.zeros((len(all_rows), int(lengths.max(initial=1))), dtype=np.int64)
    for i, row in enumerate(all_rows):
        tokens[i, : len(row)] = row
    return PromptSet(tokens, lengths, _strings(model, stats), "extra", acts, found)
