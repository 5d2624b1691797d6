"""Stage 4: choose the target features: per cluster the best by a named score, or ids the user names.

Scores (per feature; the per-prompt max matrix comes from collection's FeatureStats):

- ``max_activation``: the feature's largest activation over the collected tokens.
- ``density``: the fraction of (non-masked) tokens on which the feature is > 0.
- ``selectivity``: how much more the feature fires on its top prompts than elsewhere. With ``x``
  the feature's per-prompt max activations sorted in decreasing order over the ``n_prompts``
  prompts and ``k = max(1, ceil(top_fraction * n_prompts))`` (``top_fraction`` 0.05):
  ``top = mean(x[:k])``, ``rest = mean(x[k:])`` (0 when no prompt is left), and
  ``selectivity = top / (rest + 1e-3 * top)``, and 0 for a feature that never fires.
  It lies in [1, 1000]: about 1 for a feature that fires alike on every prompt, 1000 for one
  that fires only on its top prompts (the relative epsilon bounds it instead of dividing by 0).

Ties are broken by max activation (higher first), then by feature id.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from saeinverse import artifacts
from saeinverse.cluster.clustering import NOISE, ClusterResult
from saeinverse.collect.arrays import d_sae_of, prompt_max_columns, to_numpy
from saeinverse.config import SelectionConfig
from saeinverse.errors import ConfigError
from saeinverse.io import load_json, save_json

logger = logging.getLogger(__name__)

SELECTION_FILE = artifacts.SELECTION_FILE
"""The selected features, their groups and scores."""

SELECTIVITY_TOP_FRACTION = 0.05
"""Share of prompts that count as a feature's 'top prompts' for selectivity."""
SELECTIVITY_EPS = 1e-3
"""Relative epsilon of selectivity: caps it at 1 / SELECTIVITY_EPS = 1000."""


# ----------------------------------------------------------------------------- scores


def selectivity(prompt_max: np.ndarray, top_fraction: float = SELECTIVITY_TOP_FRACTION):
    """Selectivity of each column of ``prompt_max`` [n_prompts, n_features] (module docstring)."""
    n_prompts = prompt_max.shape[0]
    if n_prompts == 0:
        return np.zeros(prompt_max.shape[1])
    k = max(1, math.ceil(top_fraction * n_prompts))
    ordered = -np.sort(-prompt_max, axis=0)
    top = ordered[:k].mean(axis=0)
    rest = ordered[k:].mean(axis=0) if n_prompts > k else np.zeros_like(top)
    denominator = rest + SELECTIVITY_EPS * top
    return np.divide(top, denominator, out=np.zeros_like(top), where=top > 0)


SCORES: dict[str, Callable[[Any, np.ndarray], np.ndarray]] = {
    "max_activation": lambda stats, ids: to_numpy(stats.max_activation, np.float64)[ids],
    "density": lambda stats, ids: to_numpy(stats.density, np.float64)[ids],
    "selectivity": lambda stats, ids: selectivity(prompt_max_columns(stats, ids)),
}
"""Score name → function(stats, feature ids) → one value per feature (higher is better)."""


def feature_scores(stats: Any, feature_ids: Any) -> dict[str, np.ndarray]:
    """Every score in ``SCORES`` for ``feature_ids``, as {name: array aligned with the ids}."""
    ids = np.asarray(feature_ids, dtype=np.int64).reshape(-1)
    if len(ids) == 0:
        return {name: np.zeros(0) for name in SCORES}
    return {name: score(stats, ids) for name, score in SCORES.items()}


# ----------------------------------------------------------------------------- result


@dataclass
class SelectedFeature:
    """One target feature with the score that chose it and its other scores."""

    feature_id: int
    cluster: int | None
    """Its cluster (-1: noise group; None: named explicitly and not clustered)."""
    rank: int
    """Its rank inside its cluster by the score (0 = best); for explicit ids, the list order."""
    score_name: str
    score: float
    max_activation: float
    density: float
    selectivity: float


@dataclass
class Selection:
    """The chosen target features, in order (cluster by cluster, best first)."""

    features: list[SelectedFeature]
    score_name: str
    source: str
    """'clusters' (chosen per cluster), 'explicit' (clustering.selection.feature_ids) or
    'ranked' (no clustering: the best features overall)."""
    messages: list[str] = field(default_factory=list)

    @property
    def feature_ids(self) -> list[int]:
        """The selected SAE feature ids, in order."""
        return [f.feature_id for f in self.features]

    def __len__(self) -> int:
        return len(self.features)

    def to_frame(self):
        """One row per selected feature (pandas DataFrame)."""
        import pandas as pd

        columns = [f.name for f in SelectedFeature.__dataclass_fields__.values()]
        return pd.DataFrame([asdict(f) for f in self.features], columns=columns)

    def save(self, folder: str | Path) -> None:
        """Write ``selection.json`` into ``folder``."""
        save_json(
            Path(folder) / SELECTION_FILE,
            {
                "score_name": self.score_name,
                "source": self.source,
                "messages": self.messages,
                "features": [asdict(f) for f in self.features],
            },
        )

    @classmethod
    def load(cls, folder: str | Path) -> Selection:
        """Read a Selection written by ``save``."""
        data = load_json(Path(folder) / SELECTION_FILE)
        features = [SelectedFeature(**f) for f in data["features"]]
        return cls(features, data["score_name"], data["source"], data.get("messages", []))


# ----------------------------------------------------------------------------- the stage


def select_features(
    cluster_result: ClusterResult | None,
    stats: Any,
    selection_cfg: SelectionConfig,
    *,
    d_sae: int | None = None,
) -> Selection:
    """Choose target features.

    With ``selection_cfg.feature_ids`` those ids are taken as given (checked against
    [0, d_sae); never capped). Otherwise, per cluster of ``cluster_result`` the top
    ``features_per_cluster`` by ``selection_cfg.score``, the noise as one extra group when
    ``include_noise`` (or when there is no cluster at all), at most ``max_features`` in all:
    rank-0 picks of every group first (best score first), then rank-1 picks, and so on.
    ``stats`` is collection's FeatureStats (max_activation, density, per-prompt max).
    """
    cfg = selection_cfg
    if cfg.score not in SCORES:
        raise ConfigError(f"clustering.selection.score={cfg.score!r}; valid: {list(SCORES)}")
    d_sae = d_sae if d_sae is not None else d_sae_of(stats)
    if cfg.feature_ids is not None:
        return _explicit(cluster_result, stats, cfg, d_sae)
    if cluster_result is None:
        raise ConfigError(
            "selection needs a clustering result, or explicit clustering.selection.feature_ids"
        )
    messages: list[str] = []
    groups = cluster_result.cluster_ids()
    has_noise = bool((cluster_result.labels == NOISE).any())
    if cfg.include_noise and has_noise:
        groups.append(NOISE)
    elif not groups and has_noise:
        messages.append("no cluster was found: choosing from the noise features instead")
        groups = [NOISE]
    elif not groups:
        messages.append("no features to choose from: the selection is empty")
    candidates = []
    for group in groups:
        candidates += _best_of_group(cluster_result.members(group), group, stats, cfg)
    candidates.sort(key=lambda f: (f.rank, -f.score, -f.max_activation, f.feature_id))
    if len(candidates) > cfg.max_features:
        messages.append(f"{len(candidates)} candidates capped at max_features={cfg.max_features}")
    chosen = candidates[: cfg.max_features]
    chosen.sort(key=lambda f: (f.cluster == NOISE, f.cluster, f.rank))
    for message in messages:
        logger.warning("selection: %s", message)
    logger.info("selection: %d features by %s from %d groups", len(chosen), cfg.score, len(groups))
    return Selection(chosen, cfg.score, "clusters", messages)


def select_unclustered(candidates: Any, stats: Any, selection_cfg: SelectionConfig) -> Selection:
    """Without clustering: the top ``max_features`` of ``candidates`` (SAE ids) by the score.

    Explicit ``feature_ids`` still win. Used when the pipeline's clustering is switched off.
    """
    cfg = selection_cfg
    if cfg.feature_ids is not None:
        return select_features(None, stats, cfg)
    if cfg.score not in SCORES:
        raise ConfigError(f"clustering.selection.score={cfg.score!r}; valid: {list(SCORES)}")
    members = np.asarray(to_numpy(candidates, np.int64)).reshape(-1)
    ranked = replace(cfg, features_per_cluster=cfg.max_features)
    chosen = [replace(f, cluster=None) for f in _best_of_group(members, NOISE, stats, ranked)]
    message = f"no clustering: the top {len(chosen)} of {len(members)} features by {cfg.score}"
    logger.info("selection: %s", message)
    return Selection(chosen, cfg.score, "ranked", [message])


def _best_of_group(
    members: np.ndarray, group: int, stats: Any, cfg: SelectionConfig
) -> list[SelectedFeature]:
    scores = feature_scores(stats, members)
    order = sorted(
        range(len(members)),
        key=lambda i: (-scores[cfg.score][i], -scores["max_activation"][i], members[i]),
    )
    return [
        _selected(int(members[i]), group, rank, cfg.score, scores, i)
        for rank, i in enumerate(order[: cfg.features_per_cluster])
    ]


def _explicit(
    cluster_result: ClusterResult | None, stats: Any, cfg: SelectionConfig, d_sae: int
) -> Selection:
    ids = [int(i) for i in cfg.feature_ids]
    if not ids:
        raise ConfigError(
            "clustering.selection.feature_ids is an empty list: give at least one SAE feature id, "
            "or null to let clustering choose"
        )
    bad = sorted({i for i in ids if not 0 <= i < d_sae})
    if bad:
        raise ConfigError(
            f"clustering.selection.feature_ids {bad} are outside the SAE's range [0, {d_sae})"
        )
    messages = []
    unique = list(dict.fromkeys(ids))
    if len(unique) < len(ids):
        messages.append(f"duplicate feature ids dropped: {len(ids) - len(unique)}")
    clusters: dict[int, int] = {}
    if cluster_result is not None:
        clusters = dict(
            zip(cluster_result.feature_ids.tolist(), cluster_result.labels.tolist(), strict=True)
        )
    scores = feature_scores(stats, unique)
    features = [
        _selected(fid, clusters.get(fid), rank, cfg.score, scores, rank)
        for rank, fid in enumerate(unique)
    ]
    for message in messages:
        logger.warning("selection: %s", message)
    logger.info("selection: %d explicit feature ids", len(features))
    return Selection(features, cfg.score, "explicit", messages)


def _selected(
    feature_id: int,
    cluster: int | None,
    rank: int,
    score_name: str,
    scores: dict[str, np.ndarray],
    i: int,
) -> SelectedFeature:
    return SelectedFeature(
        feature_id=feature_id,
        cluster=None if cluster is None else int(cluster),
        rank=rank,
        score_name=score_name,
        score=float(scores[score_name][i]),
        max_activation=float(scores["max_activation"][i]),
        density=float(scores["density"][i]),
        selectivity=float(scores["selectivity"][i]),
    )
