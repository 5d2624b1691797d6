"""Sparse per-feature tables shared by collection and `FeatureStats.merge`.

- `coalesce`: sum the values of equal keys (the (feature, token) activation mass table).
- `topk_table` / `merge_topk`: per-feature top-k (activation, prompt, position) tables, ordered by
  activation descending, then prompt, then position ascending; empty slots (prompt -1,
  activation -inf) last.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor


def coalesce(keys: Tensor, values: Tensor) -> tuple[Tensor, Tensor]:
    """Sum `values` of equal `keys`: (sorted unique keys, sums)."""
    unique, inverse = torch.unique(keys, sorted=True, return_inverse=True)
    sums = torch.zeros(len(unique), dtype=values.dtype).index_add_(0, inverse, values)
    return unique, sums


_NO_KEY = torch.iinfo(torch.int64).max


def merge_topk(
    a: tuple[Tensor, Tensor, Tensor], b: tuple[Tensor, Tensor, Tensor]
) -> tuple[Tensor, Tensor, Tensor]:
    """Row-wise top-k of two (activation, prompt, position) tables [d_sae, k] (width of `a`).

    Order: activation descending, then prompt, then position ascending; empty slots
    (prompt -1, activation -inf) last.
    """
    k = a[0].shape[1]
    values = torch.cat([a[0], b[0]], dim=1)
    prompts = torch.cat([a[1], b[1]], dim=1)
    positions = torch.cat([a[2], b[2]], dim=1)
    stride = int(positions.max()) + 1 if positions.numel() else 1
    keys = torch.where(prompts >= 0, prompts * stride + positions, _NO_KEY)
    order = keys.argsort(dim=1, stable=True)
    order = order.gather(1, values.gather(1, order).argsort(dim=1, descending=True, stable=True))
    order = order[:, :k]
    return values.gather(1, order), prompts.gather(1, order), positions.gather(1, order)


def topk_table(
    features: Tensor, values: Tensor, prompts: Tensor, positions: Tensor, d_sae: int, k: int
) -> tuple[Tensor, Tensor, Tensor]:
    """Per-feature top-k of sparse entries, as (activation, prompt, position) tables [d_sae, k]."""
    stride = int(positions.max()) + 1 if positions.numel() else 1
    order = (prompts * stride + positions).argsort(stable=True)
    order = order[values[order].argsort(descending=True, stable=True)]
    order = order[features[order].argsort(stable=True)]
    feats = features[order]
    counts = torch.bincount(feats, minlength=d_sae)
    starts = counts.cumsum(0) - counts
    rank = torch.arange(len(feats)) - starts[feats]
    keep = rank < k
    table_v = torch.full((d_sae, k), -math.inf, dtype=values.dtype)
    table_p = torch.full((d_sae, k), -1, dtype=torch.long)
    table_pos = torch.zeros((d_sae, k), dtype=torch.long)
    rows, cols, chosen = feats[keep], rank[keep], order[keep]
    table_v[rows, cols] = values[chosen]
    table_p[rows, cols] = prompts[chosen]
    table_pos[rows, cols] = positions[chosen]
    return table_v, table_p, table_pos
