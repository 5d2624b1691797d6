"""What each cluster is: its features, size, cohesion, and the prompts and tokens that drive it.

Definitions (per cluster, noise reported as cluster -1):

- ``cohesion``: mean pairwise cosine similarity of the members' feature vectors (the vectors the
  clustering used), over distinct pairs; None for a single feature.
- prompt score: for each prompt, the mean over members of the feature's per-prompt max
  activation divided by that feature's max over prompts (so every member weighs the same,
  whatever its scale); in [0, 1]. ``top_prompts`` are the prompts with the highest score.
- token share: a member's share of its activation mass on a token id (``FeatureStats.top_tokens``,
  its ``n_tokens`` best), averaged over the members (a member lacking the token counts 0);
  ``top_tokens`` are the token strings with the highest mean share.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from saeinverse import artifacts
from saeinverse.cluster.clustering import NOISE, ClusterResult
from saeinverse.collect.arrays import prompt_max_columns, to_numpy
from saeinverse.errors import DataError
from saeinverse.io import load_json, save_json

logger = logging.getLogger(__name__)

ANALYSIS_FILE = artifacts.CLUSTER_ANALYSIS_FILE
"""One record per cluster (the table ``ClusterAnalysis.to_frame`` returns)."""


@dataclass
class ClusterAnalysis:
    """One record per cluster: cluster, size, feature_ids, cohesion, centroid_2d, top prompts
    (ids, texts, scores) and top tokens (tokens, shares). Noise, when present, comes last."""

    records: list[dict[str, Any]] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.records)

    def cluster(self, label: int) -> dict[str, Any]:
        """The record of cluster ``label``."""
        for record in self.records:
            if record["cluster"] == label:
                return record
        raise KeyError(f"no cluster {label}; clusters: {[r['cluster'] for r in self.records]}")

    def to_frame(self):
        """The table, one row per cluster (pandas DataFrame)."""
        import pandas as pd

        return pd.DataFrame(self.records)

    def save(self, folder: str | Path) -> None:
        """Write ``cluster_analysis.json`` into ``folder``."""
        save_json(Path(folder) / ANALYSIS_FILE, self.records)

    @classmethod
    def load(cls, folder: str | Path) -> ClusterAnalysis:
        """Read a ClusterAnalysis written by ``save``."""
        return cls(load_json(Path(folder) / ANALYSIS_FILE))


def analyze_clusters(
    cluster_result: ClusterResult,
    stats_or_acts: Any,
    prompts: list[str] | None = None,
    *,
    n_prompts: int = 5,
    n_tokens: int = 10,
    include_noise: bool = True,
) -> ClusterAnalysis:
    """Describe every cluster of ``cluster_result``.

    ``stats_or_acts`` is collection's FeatureStats (gives prompts and tokens) or a plain
    per-prompt max matrix [n_prompts, n_features] whose columns follow
    ``cluster_result.feature_ids`` (then no tokens). ``prompts`` gives the prompt texts
    (default: ``stats_or_acts.prompts`` when present).
    """
    is_stats = hasattr(stats_or_acts, "max_activation")
    if is_stats:
        matrix = prompt_max_columns(stats_or_acts, cluster_result.feature_ids)
        prompts = prompts if prompts is not None else getattr(stats_or_acts, "prompts", None)
    else:
        matrix = to_numpy(stats_or_acts, np.float64)
        if matrix.ndim != 2 or matrix.shape[1] != len(cluster_result.feature_ids):
            raise DataError(
                f"activation matrix of shape {matrix.shape} does not match the "
                f"{len(cluster_result.feature_ids)} clustered features"
            )
    if prompts is not None and len(prompts) != matrix.shape[0]:
        raise DataError(f"{len(prompts)} prompt texts for {matrix.shape[0]} matrix rows")
    groups = cluster_result.cluster_ids()
    if include_noise and (cluster_result.labels == NOISE).any():
        groups.append(NOISE)
    records = []
    for group in groups:
        mask = cluster_result.labels == group
        record = {
            "cluster": int(group),
            "size": int(mask.sum()),
            "feature_ids": cluster_result.feature_ids[mask].tolist(),
            "cohesion": cohesion(cluster_result.vectors[mask]),
            "centroid_2d": cluster_result.embedding_2d[mask].mean(axis=0).tolist(),
        }
        record.update(_top_prompts(matrix[:, mask], prompts, n_prompts))
        if is_stats:
            record.update(_top_tokens(stats_or_acts, record["feature_ids"], n_tokens))
        records.append(record)
    logger.info("cluster analysis: %d groups described", len(records))
    return ClusterAnalysis(records)


def cohesion(vectors: np.ndarray) -> float | None:
    """Mean cosine similarity over distinct pairs of rows of ``vectors`` [m, dim]; None if m < 2."""
    m = len(vectors)
    if m < 2:
        return None
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    unit = np.asarray(vectors, np.float64) / np.where(norms > 0, norms, 1.0)
    total = unit.sum(axis=0)
    pair_sum = float(total @ total - (unit * unit).sum())
    return pair_sum / (m * (m - 1))


def _top_prompts(columns: np.ndarray, prompts: list[str] | None, n: int) -> dict[str, Any]:
    peaks = columns.max(axis=0, initial=0.0)
    scaled = np.divide(columns, peaks, out=np.zeros_like(columns), where=peaks > 0)
    score = scaled.mean(axis=1) if columns.shape[1] else np.zeros(columns.shape[0])
    order = [int(i) for i in np.argsort(-score, kind="stable")[:n] if score[i] > 0]
    return {
        "top_prompt_ids": order,
        "top_prompt_scores": [round(float(score[i]), 4) for i in order],
        "top_prompts": [prompts[i] for i in order] if prompts is not None else None,
    }


def _top_tokens(stats: Any, feature_ids: list[int], n: int) -> dict[str, Any]:
    shares: dict[int, float] = defaultdict(float)
    strings: dict[int, str] = {}
    for fid in feature_ids:
        for token_id, text, share in stats.top_tokens(fid, n):
            shares[int(token_id)] += float(share) / len(feature_ids)
            strings[int(token_id)] = text
    best = sorted(shares.items(), key=lambda item: (-item[1], item[0]))[:n]
    return {
        "top_token_ids": [t for t, _ in best],
        "top_tokens": [strings[t] for t, _ in best],
        "top_token_shares": [round(s, 4) for _, s in best],
    }
