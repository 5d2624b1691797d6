"""`StatsAccumulator`: folds batches of SAE feature activations into per-feature statistics.

Every update is O(firing entries): the batch's (prompt, position, feature, activation) entries
with activation > 0 at non-masked positions are scattered into fixed-size per-feature state (plus
the sparse (feature, token) mass table and the sparse per-prompt maxima). A batch in which no
feature fires (a dead SAE, a silent stretch of text) changes only the token count. Activations
that are NaN or infinite raise `NonFiniteActivationError` naming the features and prompts: they
come from broken weights (or an overflowing dtype) and would silently poison every statistic.
Definitions of the statistics: `saeinverse.collect.stats`.
"""

from __future__ import annotations

import torch
from torch import Tensor

from saeinverse.collect.stats import FeatureStats, log_histogram_edges
from saeinverse.collect.tables import coalesce, merge_topk, topk_table
from saeinverse.errors import SaeInverseError

TOKEN_MASS_FLUSH = 1 << 20
"""Pending (feature, token) entries buffered before they are coalesced."""


class NonFiniteActivationError(SaeInverseError, ValueError):
    """The SAE (or the model feeding it) produced NaN or infinite feature activations."""


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
        b, p, f, v = firing_entries(feature_acts, valid.to(feature_acts.device), prompt_ids)
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
        if self._n_pending > max(TOKEN_MASS_FLUSH, len(self.token_keys)):
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
        mass = mass.to(torch.float64)  # bincount of no entries is int64 even with weights
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


def firing_entries(
    feature_acts: Tensor, valid: Tensor, prompt_ids: Tensor | None = None
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """(batch, position, feature, activation) of every activation > 0 at a valid position (CPU).

    Filters the sparse entries rather than masking the dense tensor: at most one dense pass.
    `NonFiniteActivationError` if a valid entry is NaN or infinite (`prompt_ids`: the batch's
    global prompt indices, for the message).
    """
    if feature_acts.is_sparse:
        feature_acts = feature_acts.coalesce()
        b, p, f = feature_acts.indices()
        v = feature_acts.values()
    else:
        b, p, f = feature_acts.nonzero(as_tuple=True)
        v = feature_acts[b, p, f]
    at_valid = valid[b, p]
    broken = at_valid & ~torch.isfinite(v)
    if bool(broken.any()):
        raise _non_finite(b[broken].cpu(), f[broken].cpu(), prompt_ids)
    keep = at_valid & (v > 0)
    return tuple(t[keep].cpu() for t in (b, p, f, v))  # type: ignore[return-value]


def _non_finite(
    rows: Tensor, features: Tensor, prompt_ids: Tensor | None
) -> NonFiniteActivationError:
    ids = sorted(set(features.tolist()))
    prompts = sorted(set((prompt_ids[rows] if prompt_ids is not None else rows).tolist()))
    return NonFiniteActivationError(
        f"the SAE gave NaN or infinite activations for {len(ids)} feature(s) "
        f"(ids {_few(ids)}) on prompt(s) {_few(prompts)}: check the SAE's weights for NaN / inf, "
        "or use hardware.dtype=float32 if a half-precision dtype overflowed"
    )


def _few(values: list[int], n: int = 5) -> str:
    shown = ", ".join(map(str, values[:n]))
    return shown + (f", … ({len(values)} in all)" if len(values) > n else "")
