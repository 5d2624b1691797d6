"""Feature vectors for clustering: one L2-normalised vector per kept feature (cosine geometry).

Cosine distance = squared euclidean distance / 2 and lies in [0, 2]. Kinds (``VECTOR_BUILDERS``)
and their shapes are listed in ``saeinverse.cluster.clustering``'s docstring.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from saeinverse.collect.arrays import to_numpy
from saeinverse.errors import ConfigError, DataError

VECTOR_METRIC = "cosine"
"""Every vector kind lives in cosine geometry."""


def _dense(matrix: Any) -> np.ndarray:
    """The prompts × features matrix as a float32 [n_prompts, n_features] numpy array."""
    array = to_numpy(matrix)
    if array.ndim != 2:
        raise DataError(f"expected a [n_prompts, n_features] matrix, got shape {array.shape}")
    return array


def _normalise_rows(vectors: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return (vectors / np.where(norms > 0, norms, 1.0)).astype(np.float32)


def _activation_vectors(matrix: np.ndarray, feature_ids: np.ndarray, sae: Any) -> np.ndarray:
    return _normalise_rows(matrix.T)


def _decoder_vectors(matrix: np.ndarray | None, feature_ids: np.ndarray, sae: Any) -> np.ndarray:
    if sae is None:
        raise ConfigError("clustering.vectors='decoder' needs the SAE: pass sae=... (or its W_dec)")
    w_dec = to_numpy(getattr(sae, "W_dec", sae))
    if len(feature_ids) and feature_ids.max() >= w_dec.shape[0]:
        raise DataError(f"feature id {feature_ids.max()} is outside W_dec's {w_dec.shape[0]} rows")
    return _normalise_rows(w_dec[feature_ids])


def _cooccurrence_vectors(matrix: np.ndarray, feature_ids: np.ndarray, sae: Any) -> np.ndarray:
    fires = (matrix > 0).astype(np.float32)
    both = fires.T @ fires  # [n_features, n_features] prompts where both fire
    counts = np.diag(both)
    either = counts[:, None] + counts[None, :] - both
    jaccard = np.divide(both, either, out=np.zeros_like(both), where=either > 0)
    return _normalise_rows(jaccard)


VECTOR_BUILDERS: dict[str, Callable[[np.ndarray | None, np.ndarray, Any], np.ndarray]] = {
    "activation": _activation_vectors,
    "decoder": _decoder_vectors,
    "cooccurrence": _cooccurrence_vectors,
}
"""Vector kind → builder(matrix [n_prompts, n_features], feature_ids, sae) → [n_features, dim]."""


def feature_vectors(
    kind: str, matrix: Any, feature_ids: Any, sae: Any = None
) -> tuple[np.ndarray, str]:
    """One L2-normalised vector per kept feature and the metric to compare them ('cosine').

    ``matrix`` is the prompts × features per-prompt max matrix [n_prompts, n_features] whose
    columns follow ``feature_ids`` (SAE ids of the kept features); ``sae`` (or its W_dec
    [d_sae, d_model]) is only needed for 'decoder'. Shapes are in the module docstring.
    """
    if kind not in VECTOR_BUILDERS:
        raise ConfigError(f"clustering.vectors={kind!r} is unknown; valid: {list(VECTOR_BUILDERS)}")
    ids = np.asarray(feature_ids, dtype=np.int64).reshape(-1)
    if kind != "decoder":
        if matrix is None:
            raise DataError(f"clustering.vectors={kind!r} needs the prompts × features matrix")
        matrix = _dense(matrix)
        if matrix.shape[1] != len(ids):
            raise DataError(
                f"the prompts × features matrix has {matrix.shape[1]} columns "
                f"but {len(ids)} feature ids were given"
            )
    return VECTOR_BUILDERS[kind](matrix, ids, sae), VECTOR_METRIC
