"""Dimensionality reduction of feature vectors: UMAP (seeded), with PCA for too few points."""

from __future__ import annotations

import logging
import warnings

import numpy as np

from saeinverse.config import UMAPConfig

logger = logging.getLogger(__name__)


EXACT_KNN_MAX = 20_000
"""Up to this many features the UMAP neighbour graph is computed exactly here (vectorised);
above it UMAP's own approximate search (NN-descent) runs."""


def reduce(
    vectors: np.ndarray,
    umap_cfg: UMAPConfig,
    n_components: int,
    seed: int = 0,
    knn: tuple[np.ndarray, np.ndarray] | None = None,
) -> np.ndarray:
    """UMAP of ``vectors`` [n, dim] to [n, n_components] with ``random_state=seed``.

    ``knn`` (from ``nearest_neighbors``) skips UMAP's own neighbour search, which for fewer than
    4096 points loops over every pair in Python (30 s of 37 s for 3000 features). Too few points
    for UMAP's spectral layout (n < n_components + 2, or n < 4) fall back to PCA (zero-padded to
    ``n_components``), with a logged message.
    """
    n = len(vectors)
    if n < max(n_components + 2, 4):
        logger.info("%d features are too few for UMAP to %d dims: using PCA", n, n_components)
        return _pca(vectors, n_components)
    import umap

    n_neighbors = n_neighbors_for(umap_cfg, n)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*(n_jobs value|knn_search_index).*")
        warnings.filterwarnings("ignore", message=".*(disconnected|Graph is not fully).*")
        reducer = umap.UMAP(
            n_components=n_components,
            n_neighbors=n_neighbors,
            min_dist=umap_cfg.min_dist,
            metric=umap_cfg.metric,
            random_state=seed,
            precomputed_knn=(*knn, None) if knn is not None else (None, None, None),
        )
        return reducer.fit_transform(vectors).astype(np.float32)


def n_neighbors_for(umap_cfg: UMAPConfig, n: int) -> int:
    return max(2, min(umap_cfg.n_neighbors, n - 1))


def _pca(vectors: np.ndarray, n_components: int) -> np.ndarray:
    out = np.zeros((len(vectors), n_components), dtype=np.float32)
    if len(vectors) < 2:
        return out
    centred = vectors - vectors.mean(axis=0)
    u, s, _ = np.linalg.svd(centred, full_matrices=False)
    k = min(n_components, len(s))
    out[:, :k] = u[:, :k] * s[:k]
    return out
