"""Numpy views of collected statistics, as the later stages (cluster, select) read them."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch


def to_numpy(values: Any, dtype: Any = np.float32) -> np.ndarray:
    """A numpy array from a torch tensor (dense or sparse), a scipy sparse matrix or array-like."""
    if hasattr(values, "detach"):
        values = values.detach().cpu()
        values = values if values.layout == torch.strided else values.to_dense()
        values = values.float() if values.dtype in (torch.float16, torch.bfloat16) else values
        values = values.numpy()
    if hasattr(values, "toarray"):
        values = values.toarray()
    return np.asarray(values, dtype=dtype)


def d_sae_of(stats: Any) -> int:
    """The number of SAE features the statistics cover."""
    return int(getattr(stats, "d_sae", len(stats.max_activation)))


def prompt_max_columns(stats: Any, feature_ids: Any) -> np.ndarray:
    """The per-prompt max activations of ``feature_ids``: [n_prompts, len(feature_ids)] float64."""
    ids = np.asarray(feature_ids, dtype=np.int64).reshape(-1)
    return to_numpy(stats.prompt_feature_dense(ids.tolist()), np.float64)
