"""Stage 3: cluster the surviving features (DESIGN §5).

Reads top-down as the stage runs:

1. ``feature_vectors`` (``saeinverse.cluster.vectors``): one vector per kept feature, in cosine geometry (every kind is
   L2-normalised, so cosine distance = squared euclidean distance / 2 and lies in [0, 2]).

   ============== =========================== ================================================
   kind           shape                       what a row is
   ============== =========================== ================================================
   activation     [n_features, n_prompts]     the feature's per-prompt max activation profile
                                              (a column of the prompts × features matrix)
   decoder        [n_features, d_model]       the feature's SAE decoder direction (W_dec row)
   cooccurrence   [n_features, n_features]    the feature's row of the Jaccard similarity
                                              matrix over firing prompts (J[i, j] = prompts
                                              where both fire / prompts where either fires)
   ============== =========================== ================================================

   A feature that fires on no prompt has an all-zero activation / co-occurrence row (left at
   zero; it usually ends up as noise). Co-occurrence holds n_features² floats (3000 features:
   36 MB).
2. ``reduce`` (``saeinverse.cluster.reduce``): UMAP (``clustering.umap``, ``random_state=seed``) to ``n_components`` dims for
   clustering, plus a separate 2-D embedding that is always kept for the map. With
   ``umap.n_components: 0`` no reduction happens and the clusterer works on the cosine vectors.
3. ``CLUSTERERS`` (``saeinverse.cluster.clusterers``): a registry name → function (HDBSCAN, DBSCAN,
   KMeans). Clustering happens in the UMAP space with the euclidean metric, or directly on the
   vectors with ``umap.metric`` when ``umap.n_components`` is 0.
4. ``run_clustering``: all of the above, plus the number of clusters, the noise fraction, the
   silhouette and timings, in a saveable ``ClusterResult``. Degenerate input never crashes.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from saeinverse import artifacts
from saeinverse.cluster.clusterers import CLUSTERERS, MIN_GROUP, NOISE, nearest_neighbors
from saeinverse.cluster.reduce import EXACT_KNN_MAX, n_neighbors_for, reduce
from saeinverse.cluster.vectors import feature_vectors
from saeinverse.config import ClusteringConfig, UMAPConfig
from saeinverse.errors import ConfigError
from saeinverse.io import load_json, load_tensors, save_json, save_tensors

logger = logging.getLogger(__name__)

CLUSTERS_FILE = artifacts.CLUSTERS_FILE
"""Labels, feature ids, metrics and timings of a ClusterResult."""
CLUSTER_ARRAYS_FILE = artifacts.CLUSTERS_TENSORS_FILE
"""Vectors, clustering-space embedding and 2-D map of a ClusterResult."""

_SCALAR_FIELDS = (
    "n_clusters", "noise_fraction", "silhouette", "silhouette_cosine", "method", "vectors_kind",
    "metric", "params", "timings", "messages",
)  # fmt: skip

# ----------------------------------------------------------------------------- result


@dataclass
class ClusterResult:
    """Clusters of the kept features: one label per feature (-1 = noise), the map and metrics."""

    feature_ids: np.ndarray
    """SAE ids of the clustered features [n_features]."""
    labels: np.ndarray
    """Cluster per feature [n_features]; 0 is the largest cluster, -1 noise."""
    embedding_2d: np.ndarray
    """The 2-D UMAP map [n_features, 2]."""
    embedding: np.ndarray
    """Where clustering happened: UMAP [n_features, n_components], or the vectors themselves."""
    vectors: np.ndarray
    """The feature vectors [n_features, dim] (L2-normalised)."""
    vectors_kind: str
    method: str
    metric: str
    """Metric the clusterer used in ``embedding`` ('euclidean' in UMAP space)."""
    n_clusters: int = 0
    noise_fraction: float = 0.0
    silhouette: float | None = None
    """Silhouette of the non-noise features in the clustering space (None when undefined)."""
    silhouette_cosine: float | None = None
    """Silhouette of the non-noise features on the vectors, cosine (None when undefined)."""
    params: dict[str, Any] = field(default_factory=dict)
    """The clusterer's resolved settings (e.g. the eps DBSCAN's search chose)."""
    timings: dict[str, float] = field(default_factory=dict)
    """Seconds: 'vectors', 'umap' (both embeddings), 'cluster'."""
    messages: list[str] = field(default_factory=list)
    """What was degenerate about this clustering, in words."""

    def cluster_ids(self) -> list[int]:
        """The cluster labels present, noise excluded, in order."""
        return sorted(int(c) for c in set(self.labels.tolist()) if c != NOISE)

    def members(self, cluster: int) -> np.ndarray:
        """SAE ids of the features in ``cluster`` (-1: the noise)."""
        return self.feature_ids[self.labels == cluster]

    def to_frame(self):
        """One row per feature: feature_id, cluster, x, y (the 2-D map), as a pandas DataFrame."""
        import pandas as pd

        return pd.DataFrame(
            {
                "feature_id": self.feature_ids,
                "cluster": self.labels,
                "x": self.embedding_2d[:, 0],
                "y": self.embedding_2d[:, 1],
            }
        )

    def summary(self) -> dict[str, Any]:
        """The metrics, as a plain dict (what the CLI and report print)."""
        return {
            "n_features": int(len(self.feature_ids)),
            **{name: getattr(self, name) for name in _SCALAR_FIELDS},
        }

    def save(self, folder: str | Path) -> None:
        """Write ``clusters.json`` and ``clusters.safetensors`` into ``folder``."""
        import torch

        folder = Path(folder)
        meta = {
            **self.summary(),
            "feature_ids": self.feature_ids.tolist(),
            "labels": self.labels.tolist(),
        }
        arrays = {
            "embedding_2d": self.embedding_2d,
            "embedding": self.embedding,
            "vectors": self.vectors,
        }
        save_tensors(
            folder / CLUSTER_ARRAYS_FILE,
            {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in arrays.items()},
        )
        save_json(folder / CLUSTERS_FILE, meta)

    @classmethod
    def load(cls, folder: str | Path) -> ClusterResult:
        """Read a ClusterResult written by ``save``."""
        folder = Path(folder)
        meta = load_json(folder / CLUSTERS_FILE)
        arrays = {k: v.numpy() for k, v in load_tensors(folder / CLUSTER_ARRAYS_FILE).items()}
        return cls(
            feature_ids=np.asarray(meta["feature_ids"], dtype=np.int64),
            labels=np.asarray(meta["labels"], dtype=np.int64),
            **arrays,
            **{name: meta[name] for name in _SCALAR_FIELDS},
        )


# ----------------------------------------------------------------------------- the stage


def run_clustering(
    filtered_acts: Any,
    original_indices: Any,
    clustering_cfg: ClusteringConfig,
    *,
    sae: Any = None,
    seed: int = 0,
) -> ClusterResult:
    """Cluster the kept features.

    ``filtered_acts`` is the prompts × kept-features per-prompt max matrix [n_prompts,
    n_features] (torch dense/sparse, scipy sparse or numpy; may be None for 'decoder' vectors),
    ``original_indices`` the SAE ids of its columns; ``sae`` is needed for 'decoder' vectors.
    """
    cfg = clustering_cfg
    if cfg.method not in CLUSTERERS:
        raise ConfigError(f"clustering.method={cfg.method!r} is unknown; valid: {list(CLUSTERERS)}")
    ids = np.asarray(
        original_indices.cpu() if hasattr(original_indices, "cpu") else original_indices,
        dtype=np.int64,
    ).reshape(-1)
    start = time.perf_counter()
    vectors, vector_metric = feature_vectors(cfg.vectors, filtered_acts, ids, sae)
    timings = {"vectors": time.perf_counter() - start}

    start = time.perf_counter()
    embedding_2d, space, metric = _embed(vectors, cfg.umap, seed)
    timings["umap"] = time.perf_counter() - start

    start = time.perf_counter()
    labels, params, messages = _cluster(space, metric, cfg, seed)
    timings["cluster"] = time.perf_counter() - start
    labels = _relabel_by_size(labels)
    result = ClusterResult(
        feature_ids=ids,
        labels=labels,
        embedding_2d=embedding_2d,
        embedding=np.asarray(space, np.float32),
        vectors=vectors,
        vectors_kind=cfg.vectors,
        method=cfg.method,
        metric=metric,
        params=params,
        timings={k: round(v, 4) for k, v in timings.items()},
        messages=messages,
    )
    _score(result, vector_metric)
    for message in result.messages:
        logger.warning("clustering: %s", message)
    logger.info(
        "clustering: %d features → %d clusters, noise %.1f%%, silhouette %s (umap %.1fs, %s %.1fs)",
        len(ids),
        result.n_clusters,
        100 * result.noise_fraction,
        _fmt(result.silhouette),
        timings["umap"],
        cfg.method,
        timings["cluster"],
    )
    return result


def _embed(vectors: np.ndarray, umap_cfg: UMAPConfig, seed: int):
    """(2-D map, clustering space, its metric): UMAP space with euclidean, or the vectors."""
    n, n_components = len(vectors), umap_cfg.n_components
    knn = None
    if 4 <= n <= EXACT_KNN_MAX:  # one neighbour graph for both embeddings
        knn = nearest_neighbors(vectors, n_neighbors_for(umap_cfg, n), umap_cfg.metric)
    embedding_2d = reduce(vectors, umap_cfg, 2, seed, knn) if n else np.zeros((0, 2), np.float32)
    if n_components <= 0:
        return embedding_2d, vectors, umap_cfg.metric
    if n_components == 2:
        return embedding_2d, embedding_2d, "euclidean"
    if not n:
        return embedding_2d, np.zeros((0, n_components), np.float32), "euclidean"
    return embedding_2d, reduce(vectors, umap_cfg, n_components, seed, knn), "euclidean"


def _cluster(space: np.ndarray, metric: str, cfg: ClusteringConfig, seed: int):
    n, messages = len(space), []
    min_group = MIN_GROUP[cfg.method](cfg)
    if n == 0:
        messages.append("no features to cluster (did filtering drop every feature?)")
        return np.zeros(0, np.int64), {}, messages
    if n < max(min_group, 2):
        messages.append(
            f"{n} feature(s) are fewer than {cfg.method}'s minimum group of {max(min_group, 2)}: "
            "they form a single cluster"
        )
        return np.zeros(n, np.int64), {}, messages
    labels, params = CLUSTERERS[cfg.method](space, metric, cfg, seed)
    labels = np.asarray(labels, dtype=np.int64)
    if "message" in params:
        messages.append(params.pop("message"))
    if (labels == NOISE).all():
        messages.append(
            f"{cfg.method} put every feature in noise: lower its minimum cluster size, or set "
            "clustering.selection.include_noise (selection falls back to the noise group)"
        )
    elif len(set(labels[labels != NOISE].tolist())) == 1:
        messages.append("a single cluster was found: the silhouette is undefined")
    return labels, params, messages


def _relabel_by_size(labels: np.ndarray) -> np.ndarray:
    """Renumber clusters 0..k-1 by size (largest first; ties by first member); noise stays -1."""
    clusters = [c for c in dict.fromkeys(labels.tolist()) if c != NOISE]
    order = sorted(clusters, key=lambda c: -int((labels == c).sum()))
    mapping = {old: new for new, old in enumerate(order)}
    return np.asarray([mapping.get(c, NOISE) for c in labels.tolist()], dtype=np.int64)


def _score(result: ClusterResult, vector_metric: str) -> None:
    from sklearn.metrics import silhouette_score

    labels = result.labels
    kept = labels != NOISE
    result.n_clusters = len(result.cluster_ids())
    result.noise_fraction = float(1 - kept.mean()) if len(labels) else 0.0
    if 2 <= result.n_clusters < kept.sum():
        result.silhouette = float(
            silhouette_score(result.embedding[kept], labels[kept], metric=result.metric)
        )
        result.silhouette_cosine = float(
            silhouette_score(result.vectors[kept], labels[kept], metric=vector_metric)
        )


def _fmt(value: float | None) -> str:
    return "undefined" if value is None else f"{value:.3f}"
