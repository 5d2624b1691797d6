"""Stage 4: choose the target features from the clusters by a named rule and score, or ids the user names.

Rules (``clustering.selection.rule``):

- ``spread``: at most one feature per cluster. Clusters are ordered over the 2-D map: the largest
  first, then repeatedly the one whose centre (the mean of its features' map points) is farthest
  from the nearest centre already taken. Walking that order, each cluster gives the best-scoring
  of its top ``GENRE_CANDIDATES`` features whose *genre* no earlier pick has; a cluster with none
  waits, and fills what is left of ``max_features`` afterwards (in the same order) with its best
  feature. A feature's genre is the most common bundled-corpus genre of its top exemplars'
  prompts (None for prompts outside the bundled corpus: such a feature never counts as new).
- ``per_cluster``: the top ``features_per_cluster`` of every cluster by the score, rank-0 picks
  of every group first (best score first), then rank-1, and so on, up to ``max_features``.

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

import functools
import logging
import math
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from saeinverse import artifacts
from saeinverse.cluster.clustering import NOISE, ClusterResult
from saeinverse.collect.arrays import d_sae_of, prompt_max_columns, to_numpy
from saeinverse.config import SelectionConfig
from saeinverse.config.tree import mark_paths
from saeinverse.errors import ConfigError
from saeinverse.io import load_json, save_json

logger = logging.getLogger(__name__)

SELECTION_FILE = artifacts.SELECTION_FILE
"""The selected features, their groups and scores."""

SELECTIVITY_TOP_FRACTION = 0.05
"""Share of prompts that count as a feature's 'top prompts' for selectivity."""
SELECTIVITY_EPS = 1e-3
"""Relative epsilon of selectivity: caps it at 1 / SELECTIVITY_EPS = 1000."""
GENRE_CANDIDATES = 5
"""Rule 'spread': a cluster's best features (by the score) that may be taken for a new genre."""


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
    genre: str | None = None
    """The most common corpus genre of its top exemplars' prompts (None: unknown)."""


@dataclass
class Selection:
    """The chosen target features, in order (cluster by cluster, best first)."""

    features: list[SelectedFeature]
    score_name: str
    source: str
    """'clusters' (chosen per cluster), 'explicit' (clustering.selection.feature_ids) or
    'ranked' (no clustering: the best features overall)."""
    messages: list[str] = field(default_factory=list)
    rule: str = "per_cluster"
    """``clustering.selection.rule`` for source 'clusters' (module docstring)."""
    description: str = ""
    """How the features were chosen, in words (the report shows it)."""

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
                "rule": self.rule,
                "description": self.description,
                "features": [asdict(f) for f in self.features],
            },
        )

    @classmethod
    def load(cls, folder: str | Path) -> Selection:
        """Read a Selection written by ``save``."""
        data = load_json(Path(folder) / SELECTION_FILE)
        features = [SelectedFeature(**f) for f in data["features"]]
        return cls(features, data["score_name"], data["source"], data.get("messages", []),
                   data.get("rule", "per_cluster"), data.get("description", ""))  # fmt: skip


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
    [0, d_sae); never capped). Otherwise the clusters of ``cluster_result`` give at most
    ``max_features`` by ``selection_cfg.rule`` (module docstring) and ``selection_cfg.score``,
    the noise as one extra group when ``include_noise``; with no cluster at all, the noise
    features by rule 'per_cluster'.
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
    if cfg.rule == "spread" and groups not in ([], [NOISE]):
        chosen, description = _spread(cluster_result, groups, stats, cfg)
    else:
        chosen, description = _per_cluster(cluster_result, groups, stats, cfg, messages)
    for message in messages:
        logger.warning("selection: %s", message)
    logger.info("selection: %s", description)
    return Selection(chosen, cfg.score, "clusters", messages, cfg.rule, description)


def _per_cluster(
    cluster_result: ClusterResult, groups: list[int], stats: Any, cfg: SelectionConfig,
    messages: list[str],
) -> tuple[list[SelectedFeature], str]:  # fmt: skip
    """Rule 'per_cluster' (module docstring)."""
    candidates = []
    for group in groups:
        candidates += _best_of_group(cluster_result.members(group), group, stats, cfg)
    candidates.sort(key=lambda f: (f.rank, -f.score, -f.max_activation, f.feature_id))
    if len(candidates) > cfg.max_features:
        messages.append(f"{len(candidates)} candidates capped at max_features={cfg.max_features}")
    chosen = candidates[: cfg.max_features]
    chosen.sort(key=lambda f: (f.cluster == NOISE, f.cluster, f.rank))
    _set_genres(chosen, stats)
    return chosen, (
        f"{len(chosen)} features: the top {cfg.features_per_cluster} of each of {len(groups)} "
        f"groups by {cfg.score} (rule per_cluster), best first, capped at {cfg.max_features}"
    )


def _spread(
    cluster_result: ClusterResult, groups: list[int], stats: Any, cfg: SelectionConfig
) -> tuple[list[SelectedFeature], str]:
    """Rule 'spread' (module docstring)."""
    clusters = [g for g in groups if g != NOISE]
    order = spread_order(cluster_result, clusters) + ([NOISE] if NOISE in groups else [])
    wider = mark_paths(replace(cfg, features_per_cluster=GENRE_CANDIDATES), cfg._path())
    ranked = {g: _best_of_group(cluster_result.members(g), g, stats, wider)
              for g in order}  # fmt: skip
    for picks in ranked.values():
        _set_genres(picks, stats)
    chosen: list[SelectedFeature] = []
    covered: set[str] = set()
    waiting = []
    for group in order:
        if len(chosen) == cfg.max_features:
            break
        new = [f for f in ranked[group] if f.genre is not None and f.genre not in covered]
        if new:
            chosen.append(new[0])
            covered.add(new[0].genre)
        else:
            waiting.append(group)
    for group in waiting[: cfg.max_features - len(chosen)]:
        chosen.append(ranked[group][0])
    genres = sorted({f.genre for f in chosen if f.genre is not None})
    return chosen, (
        f"{len(chosen)} features, at most one per cluster, from {len(clusters)} clusters spread "
        f"over the map (the largest first, then each farthest from those taken; rule spread), "
        f"each the best by {cfg.score} among its cluster's top {GENRE_CANDIDATES} whose exemplars' "
        f"genre is new where one is; {len(genres)} genres: {', '.join(genres) or 'none known'}"
    )


def spread_order(cluster_result: ClusterResult, clusters: list[int]) -> list[int]:
    """The clusters in farthest-point order over their centres in the 2-D map, largest first."""
    if not clusters:
        return []
    points = np.asarray(cluster_result.embedding_2d, dtype=np.float64)
    if points.ndim != 2 or len(points) != len(cluster_result.labels):
        points = np.asarray(cluster_result.vectors, dtype=np.float64)
    labels = np.asarray(cluster_result.labels)
    centres = np.stack([points[labels == c].mean(axis=0) for c in clusters])
    sizes = np.array([int((labels == c).sum()) for c in clusters])
    first = min(range(len(clusters)), key=lambda i: (-sizes[i], clusters[i]))
    order = [first]
    nearest = np.linalg.norm(centres - centres[first], axis=1)
    while len(order) < len(clusters):
        nearest[order] = -np.inf
        pick = int(np.argmax(nearest))  # ties: the lower index (larger cluster)
        order.append(pick)
        nearest = np.minimum(nearest, np.linalg.norm(centres - centres[pick], axis=1))
    return [clusters[i] for i in order]


def _set_genres(features: list[SelectedFeature], stats: Any) -> None:
    """Fill each feature's ``genre``: the most common genre of its top exemplars' prompts."""
    if not features or not hasattr(stats, "exemplar_prompt"):
        return
    genres = corpus_genres()
    for f in features:
        prompts = [int(p) for p in stats.exemplar_prompt[f.feature_id].tolist() if p >= 0]
        found = Counter(genres[stats.prompts[p]] for p in prompts if stats.prompts[p] in genres)
        f.genre = min(found, key=lambda g: (-found[g], g)) if found else None


@functools.lru_cache(maxsize=1)
def corpus_genres() -> dict[str, str]:
    """Every bundled-corpus text -> its genre."""
    from saeinverse.data.corpus import default_corpus

    corpus = default_corpus(0)
    texts, genres = corpus.train + corpus.heldout, corpus.train_genres + corpus.heldout_genres
    return dict(zip(texts, genres, strict=True))


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
