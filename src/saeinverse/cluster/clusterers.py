"""Clusterers (a registry name → function) and the exact neighbour search they and UMAP share.

A clusterer gets ``space`` [n, dim] (the UMAP embedding, compared with the euclidean metric, or
the L2-normalised feature vectors themselves, compared with ``umap.metric``), the metric, the
clustering config and the seed, and returns one label per point (-1 = noise) and the settings it
resolved. ``run_clustering`` handles inputs too small for the method before calling it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import numpy as np

from saeinverse.config import ClusteringConfig

logger = logging.getLogger(__name__)

NOISE = -1
"""Label of points no cluster claims."""


def nearest_neighbors(
    vectors: np.ndarray, n_neighbors: int, metric: str, block: int = 2048
) -> tuple[np.ndarray, np.ndarray] | None:
    """Exact k nearest neighbours (each point first, as UMAP expects): (indices, distances),
    both [n, n_neighbors]; None for metrics other than cosine and euclidean."""
    if metric not in ("cosine", "euclidean"):
        return None
    x = np.asarray(vectors, np.float64)  # float64: small distances survive the expansion
    if metric == "cosine":
        x = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    else:
        x = x - x.mean(axis=0)
    sq = (x * x).sum(axis=1)
    indices = np.empty((len(x), n_neighbors), np.int64)
    distances = np.empty((len(x), n_neighbors), np.float32)
    for start in range(0, len(x), block):
        rows = np.arange(start, min(start + block, len(x)))
        dots = x[rows] @ x.T
        if metric == "cosine":
            dist = 1.0 - dots
        else:
            dist = np.sqrt(np.maximum(sq[rows, None] + sq[None, :] - 2 * dots, 0.0))
        dist[np.arange(len(rows)), rows] = -1.0  # the point itself comes first
        part = np.argpartition(dist, n_neighbors - 1, axis=1)[:, :n_neighbors]
        part_dist = np.take_along_axis(dist, part, axis=1)
        order = np.argsort(part_dist, axis=1, kind="stable")
        indices[rows] = np.take_along_axis(part, order, axis=1)
        distances[rows] = np.maximum(np.take_along_axis(part_dist, order, axis=1), 0.0)
    return indices, distances


def _hdbscan(space: np.ndarray, metric: str, cfg: ClusteringConfig, seed: int):
    from sklearn.cluster import HDBSCAN

    min_samples = min(cfg.hdbscan.min_samples or cfg.hdbscan.min_cluster_size, len(space))
    labels = HDBSCAN(
        min_cluster_size=cfg.hdbscan.min_cluster_size,
        min_samples=min_samples,
        metric=metric,
        copy=True,
    ).fit_predict(space)
    return labels, {"min_cluster_size": cfg.hdbscan.min_cluster_size, "min_samples": min_samples}


def _dbscan(space: np.ndarray, metric: str, cfg: ClusteringConfig, seed: int):
    from sklearn.cluster import DBSCAN

    min_samples = cfg.dbscan.min_samples
    eps, searched = cfg.dbscan.eps, None
    if eps is None:
        eps, searched = search_eps(space, metric, min_samples)
    labels = DBSCAN(eps=eps, min_samples=min_samples, metric=metric).fit_predict(space)
    return labels, {"eps": float(eps), "min_samples": min_samples, "eps_search": searched}


def _kmeans(space: np.ndarray, metric: str, cfg: ClusteringConfig, seed: int):
    from sklearn.cluster import KMeans

    k = min(cfg.kmeans.n_clusters, len(space))
    params: dict = {"n_clusters": k, "n_init": 10}
    if k < cfg.kmeans.n_clusters:
        params["message"] = f"only {len(space)} features: kmeans.n_clusters lowered to {k}"
    if metric == "cosine":  # on unit vectors, euclidean k-means is spherical k-means
        space = space / np.maximum(np.linalg.norm(space, axis=1, keepdims=True), 1e-12)
    labels = KMeans(n_clusters=k, n_init=10, random_state=seed).fit_predict(space)
    return labels, params


Clusterer = Callable[[np.ndarray, str, ClusteringConfig, int], tuple[np.ndarray, dict]]
CLUSTERERS: dict[str, Clusterer] = {"hdbscan": _hdbscan, "dbscan": _dbscan, "kmeans": _kmeans}
"""Method name → clusterer(space [n, dim], metric, config, seed) → (labels, resolved params);
a 'message' in the params says what the clusterer had to change (it is moved to the result)."""

MIN_GROUP: dict[str, Callable[[ClusteringConfig], int]] = {
    "hdbscan": lambda cfg: cfg.hdbscan.min_cluster_size,
    "dbscan": lambda cfg: cfg.dbscan.min_samples,
    "kmeans": lambda cfg: 1,
}
"""Fewest features the method can group; below it every feature goes into one cluster."""

_METRIC_RANGE = {"cosine": 2.0, "correlation": 2.0}
"""Largest possible distance of bounded metrics (the eps grid never goes past it)."""


def search_eps(
    space: np.ndarray, metric: str, min_samples: int, n_grid: int = 24
) -> tuple[float, list[dict]]:
    """DBSCAN's eps chosen by silhouette over a grid within the data's real distance range.

    Grid: quantiles 5 %…100 % of the core distance (each point's distance to its
    ``min_samples - 1``-th nearest other point: the radius at which DBSCAN makes it a core
    point), plus 1.25×, 1.5× and 2× its maximum, clipped to the metric's range (cosine: [0, 2]).
    Score of an eps: silhouette of the non-noise points × (1 − noise fraction), so that dropping
    hard points to noise is not rewarded; eps values giving fewer than two clusters are skipped.
    When none gives two clusters, the median core distance is used. Returns (eps, the grid's scores).
    """
    from sklearn.cluster import DBSCAN
    from sklearn.metrics import silhouette_score
    from sklearn.neighbors import NearestNeighbors

    n_neighbors = max(2, min(min_samples, len(space)))  # the point itself comes first
    knn = nearest_neighbors(space, n_neighbors, metric)
    if knn is not None:
        distances = knn[1]
    else:
        nn = NearestNeighbors(n_neighbors=n_neighbors, metric=metric).fit(space)
        distances = nn.kneighbors(space)[0]
    kdist = distances[:, -1]
    grid = np.concatenate(
        [
            np.quantile(kdist, np.linspace(0.05, 1.0, n_grid - 3)),
            kdist.max() * np.array([1.25, 1.5, 2.0]),
        ]
    )
    grid = np.unique(np.clip(grid, 1e-6, _METRIC_RANGE.get(metric, np.inf)))
    scores, best = [], (-np.inf, float(np.median(kdist)) or 1e-3)
    for eps in grid:
        labels = DBSCAN(eps=float(eps), min_samples=min_samples, metric=metric).fit_predict(space)
        kept = labels != NOISE
        n_clusters = len(set(labels[kept]))
        if n_clusters < 2 or n_clusters >= kept.sum():
            continue
        sil = float(silhouette_score(space[kept], labels[kept], metric=metric))
        score = sil * kept.mean()
        scores.append(
            {
                "eps": float(eps),
                "n_clusters": n_clusters,
                "silhouette": sil,
                "noise_fraction": float(1 - kept.mean()),
                "score": float(score),
            }
        )
        if score > best[0]:
            best = (score, float(eps))
    if not scores:
        logger.warning(
            "dbscan eps search: no eps gave two clusters; using the median core distance"
        )
    return best[1], scores
