"""Logit effects and nearest features: what a feature's decoder direction does downstream.

Logit effects, as SAE dashboards (sae_vis, Neuronpedia) define them: the feature's decoder row
carried to the residual stream, then through the unembedding, with no layer norm and no bias:

- a residual-stream hook (``hook_resid_pre / mid / post``) or a block output (``hook_mlp_out``,
  ``hook_attn_out``): ``W_dec[f] @ W_U``;
- the MLP's hidden layer (``blocks.L.mlp.hook_post``, ``d_mlp`` wide): ``W_dec[f] @ W_out[L] @ W_U``;
- the attention heads' outputs (``blocks.L.attn.hook_z``, heads × d_head flattened):
  ``sum_h W_dec[f, h] @ W_O[L, h] @ W_U``.

The top ``k`` tokens are the ones the direction promotes most, the bottom ``k`` the ones it
suppresses most. Any other hook (an MLP's pre-activation, queries, keys) has no direct path to
the logits: ``LogitPathError``.

Nearest features: the ``k`` other features whose decoder rows have the largest cosine with the
feature's own.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor

from saeinverse.errors import SaeInverseError


class LogitPathError(SaeInverseError, ValueError):
    """The SAE's hook has no direct path to the logits (logit effects are undefined)."""


def _residual(model: Any, layer: int, rows: Tensor) -> Tensor:
    return rows


def _mlp_hidden(model: Any, layer: int, rows: Tensor) -> Tensor:
    return rows @ model.blocks[layer].mlp.W_out.detach().float()


def _heads(model: Any, layer: int, rows: Tensor) -> Tensor:
    w_o = model.blocks[layer].attn.W_O.detach().float()  # [heads d_head d_model]
    return rows.reshape(rows.shape[0], *w_o.shape[:2]).flatten(1) @ w_o.flatten(0, 1)


PATHS: dict[str, tuple[str, Callable[[Any, int, Tensor], Tensor]]] = {
    r"hook_resid_(pre|mid|post)": ("W_dec @ W_U", _residual),
    r"hook_(mlp|attn)_out": ("W_dec @ W_U", _residual),
    r"mlp\.hook_post": ("W_dec @ W_out @ W_U", _mlp_hidden),
    r"attn\.hook_z": ("W_dec @ W_O @ W_U", _heads),
}
"""Hook name suffix (a regular expression after ``blocks.L.``) -> (the path in words, the map of
decoder rows into the residual stream)."""


def logit_path(hook_name: str) -> tuple[str, int, Callable[[Any, int, Tensor], Tensor]]:
    """(the path in words, the block, the map into the residual stream) of ``hook_name``."""
    match = re.fullmatch(r"blocks\.(\d+)\.(.+)", hook_name)
    if match:
        for pattern, (words, to_residual) in PATHS.items():
            if re.fullmatch(pattern, match.group(2)):
                return words, int(match.group(1)), to_residual
    raise LogitPathError(
        f"hook {hook_name!r} has no direct path to the logits; logit effects need a residual "
        "stream, block output, mlp.hook_post or attn.hook_z hook"
    )


def decoder_logits(model: Any, w_dec: Tensor, hook_name: str, feature_ids: Sequence[int]) -> Tensor:
    """Float[Tensor, "n_features vocab"]: each feature's direct effect on the logits."""
    _, layer, to_residual = logit_path(hook_name)
    rows = w_dec.detach().float().cpu()[list(feature_ids)]
    residual = to_residual(model, layer, rows.to(model.W_U.device))
    return (residual @ model.W_U.detach().float()).cpu()


def top_and_bottom(
    logits: Tensor, k: int
) -> tuple[list[tuple[int, float]], list[tuple[int, float]]]:
    """The ``k`` largest (descending) and ``k`` smallest (ascending) entries of a 1-D tensor."""
    k = min(k, logits.numel())
    top = logits.topk(k)
    bottom = (-logits).topk(k)
    up = [(int(i), float(v)) for v, i in zip(top.values, top.indices, strict=True)]
    down = [(int(i), -float(v)) for v, i in zip(bottom.values, bottom.indices, strict=True)]
    return up, down


def nearest_features(
    w_dec: Tensor, feature_ids: Sequence[int], k: int
) -> list[list[tuple[int, float]]]:
    """Per feature, the ``k`` other features with the highest decoder cosine, highest first."""
    rows = torch.nn.functional.normalize(w_dec.detach().float().cpu(), dim=1)
    ids = torch.as_tensor(list(feature_ids), dtype=torch.long)
    cosine = rows[ids] @ rows.T  # [n_features d_sae]
    cosine[torch.arange(len(ids)), ids] = -torch.inf
    top = cosine.topk(min(k, rows.shape[0] - 1), dim=1)
    return [
        [(int(i), float(v)) for v, i in zip(values, indices, strict=True)]
        for values, indices in zip(top.values, top.indices, strict=True)
    ]
