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

from saeinverse.collect.stats import (
    _TOKEN_MASS_FLUSH,
    FeatureStats,
    coalesce,
    log_histogram_edges,
    merge_topk,
    topk_table,
)
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


class StatsAccumulator:
    """Folds batches of feature activations into per-feature statistics; `finish` -> FeatureStats.

    State is fixed-size per feature, plus the sparse (feature, token) mass table and the sparse
    per-prompt maxima; a batch's dense activations are dropped after `add`.
    """

    def __init__(
        self,
        d_sae: int,
        d_vocab: int,
        max_length: int,
        first_position: int,
        top_k: int,
        histogram_bins: int,
    ) -> None:
        self.d_sae, self.d_vocab, self.first_position = d_sae, d_vocab, first_position
        self.max_length = max_length
        self.edges = log_histogram_edges(histogram_bins)
        self.n_tokens = 0
        self.firing_count = torch.zeros(d_sae, dtype=torch.long)
        self.activation_sum = torch.zeros(d_sae, dtype=torch.float64)
        self.max_activation = torch.zeros(d_sae)
        self.histogram = torch.zeros(d_sae, histogram_bins + 2, dtype=torch.long)
        self.position_mass = torch.zeros(d_sae, max_length, dtype=torch.float64)
        self.prompt_mass_xlogx = torch.zeros(d_sae, dtype=torch.float64)
        self.token_keys = torch.zeros(0, dtype=torch.long)
        self.token_mass = torch.zeros(0, dtype=torch.float64)
        self._pending: list[tuple[Tensor, Tensor]] = []
        self._n_pending = 0
        self.exemplars = (
            torch.full((d_sae, top_k), -torch.inf),
            torch.full((d_sae, top_k), -1, dtype=torch.long),
            torch.zeros((d_sae, top_k), dtype=torch.long),
        )
        self._prompt_chunks: list[tuple[Tensor, Tensor]] = []

    def add(
        self,
        feature_acts: Tensor,  # Float[Tensor, "batch pos d_sae"]
        tokens: Tensor,  # Int[Tensor, "batch pos"]
        lengths: Tensor,  # Int[Tensor, "batch"]
        prompt_ids: Tensor,  # Int[Tensor, "batch"], global prompt indices
    ) -> None:
        """Fold one batch in. Positions >= length (padding) and < first_position are masked."""
        n_batch, n_pos, _ = feature_acts.shape
        positions = torch.arange(n_pos)
        valid = (positions[None, :] < lengths[:, None]) & (
            positions[None, :] >= self.first_position
        )
        self.n_tokens += int(valid.sum())
        b, p, f, v = _firing_entries(feature_acts, valid.to(feature_acts.device))
        v = v.float()
        v64 = v.double()
        # Every update below is O(firing entries): scatters into the flat state, no dense pass.
        self.firing_count += torch.bincount(f, minlength=self.d_sae)
        self.activation_sum += torch.bincount(f, weights=v64, minlength=self.d_sae)
        self.max_activation.scatter_reduce_(0, f, v, "amax")
        n_cols = self.histogram.shape[1]
        bins = torch.bucketize(v64, self.edges, right=True)
        self.histogram.view(-1).index_add_(0, f * n_cols + bins, torch.ones_like(bins))
        rank = p - self.first_position
        self.position_mass.view(-1).index_add_(0, f * self.max_length + rank, v64)
        self._add_prompt_entries(b, f, v, v64, prompt_ids, n_batch)
        self._pending.append((f * self.d_vocab + tokens[b, p], v64))
        self._n_pending += len(f)
        if self._n_pending > max(_TOKEN_MASS_FLUSH, len(self.token_keys)):
            self._flush_token_mass()
        self._add_exemplars(f, v, prompt_ids[b], p)

    def _add_exemplars(self, f: Tensor, v: Tensor, prompts: Tensor, positions: Tensor) -> None:
        """Merge the entries that can enter a feature's top-k (>= its current k-th) into it."""
        kth = self.exemplars[0][:, -1]
        candidate = v >= kth[f]
        if not bool(candidate.any()):
            return
        rows, row_of = torch.unique(f[candidate], return_inverse=True)
        k = self.exemplars[0].shape[1]
        batch_top = topk_table(
            row_of, v[candidate], prompts[candidate], positions[candidate], len(rows), k
        )
        merged = merge_topk(tuple(t[rows] for t in self.exemplars), batch_top)
        for table, update in zip(self.exemplars, merged, strict=True):
            table[rows] = update

    def _add_prompt_entries(
        self, b: Tensor, f: Tensor, v: Tensor, v64: Tensor, prompt_ids: Tensor, n_batch: int
    ) -> None:
        """Per (prompt, feature): the max (kept, sparse) and the mass (for prompt entropy)."""
        key = b * self.d_sae + f
        mass = torch.bincount(key, weights=v64, minlength=n_batch * self.d_sae)
        peak = torch.zeros(n_batch * self.d_sae).scatter_reduce_(0, key, v.float(), "amax")
        fired = mass.nonzero().squeeze(1)
        m = mass[fired]
        features = fired % self.d_sae
        self.prompt_mass_xlogx.index_add_(0, features, m * m.log())
        index = torch.stack([prompt_ids[fired // self.d_sae], features])
        self._prompt_chunks.append((index, peak[fired]))

    def _flush_token_mass(self) -> None:
        if not self._pending:
            return
        keys = torch.cat([self.token_keys, *(k for k, _ in self._pending)])
        values = torch.cat([self.token_mass, *(v for _, v in self._pending)])
        self.token_keys, self.token_mass = coalesce(keys, values)
        self._pending, self._n_pending = [], 0

    def finish(
        self,
        prompts: list[str],
        tokens: Tensor,
        lengths: Tensor,
        *,
        token_strings: dict[int, str],
        positional_window: int,
        context_window: int,
    ) -> FeatureStats:
        """The accumulated statistics, with the prompts and tokens they were collected over."""
        self._flush_token_mass()
        index = [i for i, _ in self._prompt_chunks] or [torch.zeros(2, 0, dtype=torch.long)]
        values = [v for _, v in self._prompt_chunks] or [torch.zeros(0)]
        return FeatureStats(
            d_sae=self.d_sae,
            d_vocab=self.d_vocab,
            n_tokens=self.n_tokens,
            first_position=self.first_position,
            positional_window=positional_window,
            context_window=context_window,
            prompts=list(prompts),
            tokens=tokens,
            lengths=lengths,
            token_strings=token_strings,
            histogram_edges=self.edges,
            firing_count=self.firing_count,
            activation_sum=self.activation_sum,
            max_activation=self.max_activation,
            histogram=self.histogram,
            position_mass=self.position_mass,
            prompt_mass_xlogx=self.prompt_mass_xlogx,
            token_mass_keys=self.token_keys,
            token_mass_values=self.token_mass,
            exemplar_activation=self.exemplars[0],
            exemplar_prompt=self.exemplars[1],
            exemplar_position=self.exemplars[2],
            prompt_feature_index=torch.cat(index, dim=1),
            prompt_feature_values=torch.cat(values),
        )


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


def _firing_entries(feature_acts: Tensor, valid: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """(batch, position, feature, activation) of every activation > 0 at a valid position (CPU).

    Filters the sparse entries rather than masking the dense tensor: at most one dense pass.
    """
    if feature_acts.is_sparse:
        feature_acts = feature_acts.coalesce()
        b, p, f = feature_acts.indices()
        v = feature_acts.values()
    else:
        b, p, f = feature_acts.nonzero(as_tuple=True)
        v = feature_acts[b, p, f]
    keep = valid[b, p] & (v > 0)
    return tuple(t[keep].cpu() for t in (b, p, f, v))  # type: ignore[return-value]
