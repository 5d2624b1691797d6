"""Stage 1: stream prompts through the model (stopped at the SAE's layer) and the SAE encoder.

`collect_activations` tokenizes the prompts with the model (its start token included), runs
batches of similar length under `torch.inference_mode()`, captures only the SAE's hook, encodes
with the SAE and folds each batch into a `StatsAccumulator`. Padding is always masked, position 0
too when `data.exclude_bos`. Statistics and their definitions: `saeinverse.collect.stats`.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from saeinverse.collect.accumulator import StatsAccumulator
from saeinverse.collect.stats import FeatureStats
from saeinverse.errors import DataError
from saeinverse.models.hooks import (
    encode,
    first_readable_position,
    hook_activations,
    sae_hook_name,
)

if TYPE_CHECKING:
    from sae_lens import SAE
    from transformer_lens import HookedTransformer

logger = logging.getLogger(__name__)


@dataclass
class TokenizedPrompts:
    """Prompts tokenized one by one (so each length is exact), right-padded with 0."""

    prompts: list[str]
    tokens: Tensor  # Int[Tensor, "n_prompts pos"]
    lengths: Tensor  # Int[Tensor, "n_prompts"]

    def batches(self, batch_size: int) -> Iterator[Tensor]:
        """Prompt indices in batches of similar length (longest first), to waste little padding."""
        order = self.lengths.argsort(descending=True, stable=True)
        for start in range(0, len(order), batch_size):
            yield order[start : start + batch_size].sort().values

    def batch_tokens(self, index: Tensor) -> Tensor:
        """Int[Tensor, "batch pos"]: the batch's tokens cut to its longest prompt."""
        return self.tokens[index, : int(self.lengths[index].max())]


def tokenize_prompts(
    model: HookedTransformer, prompts: Sequence[str], max_length: int, first_position: int = 1
) -> TokenizedPrompts:
    """Tokenize with `model.to_tokens` (its start-token handling), cut to `max_length` tokens.

    Prompts with no token at or after `first_position` are dropped with a warning; DataError if
    none remain.
    """
    if max_length < 1 + first_position:
        raise DataError(f"data.max_length must be at least {1 + first_position}, got {max_length}")
    kept, rows = [], []
    too_short = 0
    for prompt in prompts:
        ids = model.to_tokens(prompt, truncate=True, move_to_device=False)[0, :max_length]
        if len(ids) <= first_position:
            too_short += 1
            continue
        kept.append(prompt)
        rows.append(ids)
    if not rows:
        raise DataError(
            f"none of the {len(prompts)} prompts holds a token after the start token "
            f"(they tokenize to {first_position} token(s) or fewer)"
        )
    if too_short:
        logger.warning(
            "dropped %d of %d prompts too short to hold one token after the start token",
            too_short,
            len(prompts),
        )
    lengths = torch.tensor([len(r) for r in rows])
    # Right padding with id 0: under causal attention no real token sees a later position, and
    # the mask comes from `lengths`, so the pad id is never read (SmolLM2's pad id is its BOS).
    tokens = torch.zeros((len(rows), int(lengths.max())), dtype=torch.long)
    for i, row in enumerate(rows):
        tokens[i, : len(row)] = row
    return TokenizedPrompts(kept, tokens, lengths)


def collect_activations(
    model: HookedTransformer,
    sae: SAE,
    prompts: Sequence[str],
    data_cfg: Mapping[str, Any],
    *,
    seed: int = 0,
    progress: bool = True,
) -> FeatureStats:
    """Per-feature statistics of `sae` over `prompts` (see `saeinverse.collect.stats` for definitions).

    Reads `max_length`, `batch_size`, `exclude_bos`, `top_k_exemplars`, `context_window`,
    `histogram_bins` and `filtering.positional_window` from `data_cfg`. Collection is
    deterministic; `seed` is accepted so every stage has the same signature.
    """
    from tqdm.auto import tqdm

    del seed
    hook_name = sae_hook_name(sae)
    first = first_readable_position(bool(data_cfg["exclude_bos"]))
    if first and not model.cfg.default_prepend_bos:
        logger.warning("the model prepends no start token: exclude_bos masks each first word")
    batch = tokenize_prompts(model, list(prompts), int(data_cfg["max_length"]), first)
    acc = StatsAccumulator(
        d_sae=int(sae.cfg.d_sae),
        d_vocab=int(model.cfg.d_vocab),
        max_length=int(batch.tokens.shape[1]),
        first_position=first,
        top_k=int(data_cfg["top_k_exemplars"]),
        histogram_bins=int(data_cfg["histogram_bins"]),
    )
    bar = tqdm(total=len(batch.prompts), unit="prompt", desc="collect", disable=not progress)
    with torch.inference_mode(), bar:
        for index in batch.batches(int(data_cfg["batch_size"])):
            tokens = batch.batch_tokens(index)
            acts = hook_activations(model, tokens.to(model.cfg.device), hook_name)
            with _sparse_topk(sae):
                feature_acts = encode(sae, acts)
            acc.add(feature_acts, tokens, batch.lengths[index], index)
            bar.update(len(index))
    stats = acc.finish(
        batch.prompts,
        batch.tokens,
        batch.lengths,
        token_strings=decode_tokens(model, batch.tokens.unique()),
        positional_window=int(data_cfg["filtering"]["positional_window"]),
        context_window=int(data_cfg["context_window"]),
    )
    stats.meta.update(hook_name=hook_name, model_name=model.cfg.model_name)
    logger.info(
        "collected %d tokens over %d prompts: %d of %d features fire",
        stats.n_tokens,
        stats.n_prompts,
        int((stats.firing_count > 0).sum()),
        stats.d_sae,
    )
    return stats


def decode_tokens(model: HookedTransformer, token_ids: Tensor) -> dict[int, str]:
    """Each token id's decoded string (one token at a time)."""
    ids = [int(i) for i in token_ids.tolist()]
    strings = model.tokenizer.batch_decode([[i] for i in ids], clean_up_tokenization_spaces=False)
    return dict(zip(ids, strings, strict=True))


@contextlib.contextmanager
def _sparse_topk(sae: SAE) -> Iterator[None]:
    """For a SAELens TopK activation, have `encode` return its sparse COO output.

    Saves filling and re-scanning a dense [tokens × d_sae] tensor (a few % of collection time);
    other SAEs encode as usual. The SAE's own flag is restored afterwards.
    """
    activation = getattr(sae, "activation_fn", None)
    if not isinstance(getattr(activation, "use_sparse_activations", None), bool):
        yield
        return
    saved = activation.use_sparse_activations
    activation.use_sparse_activations = True
    try:
        with torch.sparse.check_sparse_tensor_invariants(enable=False):
            yield
    finally:
        activation.use_sparse_activations = saved
