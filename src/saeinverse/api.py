"""The seed's notebook calls, as thin wrappers over the stages (its positional forms, kept).

The seed's README runs, cell by cell::

    model, sae, lm, tokenizer = load_experiment_models(config['hardware'])
    filtered_acts, original_indices, prompts = collect_and_filter_data(model, sae, config['data'])
    labels, reduced_acts = run_clustering(filtered_acts, config['clustering'])
    analyze_clusters(filtered_acts, labels, original_indices, prompts, config['clustering'])
    selected_features = select_features(filtered_acts, labels, original_indices,
                                        config['clustering']['selection'])
    result = optimize_feature(model, sae, feature_id, config['optimization'])
    visualize_results(feature_results)

Each name here accepts that form and the richer one of its stage (dispatch on the argument
types): ``run_clustering(filtered_acts, original_indices, cfg, sae=...)`` returns the full
``ClusterResult``, ``analyze_clusters(cluster_result, stats)`` and
``select_features(cluster_result, stats, cfg)`` take collection's ``FeatureStats``, and
``visualize_results(run_dir_or_context)`` builds a run's report.

``collect_and_filter_data(model, sae, config["data"])`` returns the prompts × kept-features
matrix of per-prompt maximum activations, the kept SAE feature ids, and the prompts (its rows).
With ``cache_dir``, the ``FeatureStats`` and ``FeatureSet`` are saved there, and with
``data.use_cached_data`` a saved ``FeatureStats`` is reused when its cache key matches: a digest
of the collection settings, the prompts, and the models' identity (``models.identity``).
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from torch import Tensor

from saeinverse.cluster import analysis as cluster_analysis
from saeinverse.cluster import clustering as cluster_stage
from saeinverse.cluster.vectors import feature_vectors
from saeinverse.collect.activations import collect_activations
from saeinverse.collect.prompts import COLLECTION_READS
from saeinverse.collect.stats import FeatureStats, read_stats_meta
from saeinverse.config import (
    ClusteringConfig,
    DataConfig,
    SelectionConfig,
    as_section,
    get_default_config,
    read_values,
    update_config,
)
from saeinverse.data.sources import load_prompts
from saeinverse.errors import ArtifactError
from saeinverse.filter import filter_features
from saeinverse.invert import optimize_feature
from saeinverse.io import digest
from saeinverse.models.from_config import load_experiment_models
from saeinverse.models.identity import models_identity

if TYPE_CHECKING:
    from sae_lens import SAE
    from transformer_lens import HookedTransformer

logger = logging.getLogger(__name__)

__all__ = [
    "ClusterLabels",
    "SelectedIds",
    "analyze_clusters",
    "collect_and_filter_data",
    "collect_or_load",
    "collection_key",
    "load_experiment_models",
    "optimize_feature",
    "run_clustering",
    "select_features",
    "visualize_results",
]

# ----------------------------------------------------------------------------- collect + filter


def collect_and_filter_data(
    model: HookedTransformer,
    sae: SAE,
    data_cfg: Mapping[str, Any],
    *,
    seed: int = 0,
    prompts: Sequence[str] | None = None,
    cache_dir: str | Path | None = None,
    progress: bool = True,
) -> tuple[Tensor, Tensor, list[str]]:
    """`(filtered_acts, original_indices, prompts)` as the seed's notebook returns them.

    - filtered_acts: Float[Tensor, "n_prompts n_features"], each prompt's max activation of each
      kept feature (dense).
    - original_indices: Int64[Tensor, "n_features"], the kept features' SAE ids.
    - prompts: the prompts, one per row (prompts too short to use are dropped).

    `prompts` defaults to `load_prompts(data_cfg, seed)`.
    """
    prompts = list(prompts) if prompts is not None else load_prompts(data_cfg, seed)
    stats = collect_or_load(
        model, sae, prompts, data_cfg, seed=seed, cache_dir=cache_dir, progress=progress
    )
    feature_set = filter_features(stats, data_cfg["filtering"])
    if cache_dir is not None:
        feature_set.save(cache_dir)
    return stats.prompt_feature_dense(feature_set.kept), feature_set.kept, list(stats.prompts)


def collect_or_load(
    model: HookedTransformer,
    sae: SAE,
    prompts: Sequence[str],
    data_cfg: Mapping[str, Any],
    *,
    seed: int = 0,
    cache_dir: str | Path | None = None,
    progress: bool = True,
) -> FeatureStats:
    """`collect_activations`, reusing / saving the result in `cache_dir` (see module docstring)."""
    key = collection_key(model, sae, prompts, data_cfg, seed)
    if cache_dir is not None and data_cfg["use_cached_data"]:
        meta = read_stats_meta(cache_dir) or {}
        if meta.get("cache_key") == key:
            try:
                stats = FeatureStats.load(cache_dir)
                logger.info("reusing the feature statistics in %s", cache_dir)
                return stats
            except ArtifactError as err:
                logger.warning("cached statistics unusable (%s): collecting again", err)
    stats = collect_activations(model, sae, prompts, data_cfg, seed=seed, progress=progress)
    stats.meta["cache_key"] = key
    if cache_dir is not None:
        stats.save(cache_dir)
    return stats


def collection_key(
    model: HookedTransformer,
    sae: SAE,
    prompts: Sequence[str],
    data_cfg: Mapping[str, Any],
    seed: int = 0,
) -> str:
    """The digest (``saeinverse.io.digest``) of what the collected statistics depend on: the
    values ``collect.prompts.COLLECTION_READS`` names, the prompts and the models' identity."""
    data = as_section(data_cfg, DataConfig).to_dict()
    config = update_config(get_default_config(), {"data": data, "seed": int(seed)})
    settings = read_values(config, COLLECTION_READS)
    return digest(settings, list(prompts), models_identity(model, sae))


# ----------------------------------------------------------------------------- cluster


class ClusterLabels(np.ndarray):
    """The cluster label of each column of ``filtered_acts`` (-1: noise), as the seed unpacks
    them; ``.result`` is the full ``ClusterResult`` they came from."""

    result: cluster_stage.ClusterResult | None = None

    def __array_finalize__(self, obj: Any) -> None:
        self.result = getattr(obj, "result", None)


def run_clustering(filtered_acts: Any, *args: Any, **kwargs: Any) -> Any:
    """Cluster the kept features.

    - Seed form ``run_clustering(filtered_acts, config['clustering'])`` returns
      ``(labels, reduced_acts)``: a label per column of ``filtered_acts`` and the 2-D map
      [n_features, 2].
    - Rich form ``run_clustering(filtered_acts, original_indices, clustering_cfg, sae=...,
      seed=...)`` returns the ``ClusterResult`` (``saeinverse.cluster.clustering``).
    """
    if args and _is_config(args[0], ClusteringConfig):
        cfg = as_section(args[0], ClusteringConfig)
        columns = np.arange(_n_columns(filtered_acts))
        result = cluster_stage.run_clustering(filtered_acts, columns, cfg, *args[1:], **kwargs)
        labels = result.labels.view(ClusterLabels)
        labels.result = result
        return labels, result.embedding_2d
    return cluster_stage.run_clustering(filtered_acts, *args, **kwargs)


def analyze_clusters(first: Any, *args: Any, **kwargs: Any) -> Any:
    """Describe every cluster: its features, their top prompts and (with stats) top tokens.

    - Seed form ``analyze_clusters(filtered_acts, labels, original_indices, prompts,
      config['clustering'])``.
    - Rich form ``analyze_clusters(cluster_result, stats_or_acts, prompts=None, ...)``.

    Both return a ``ClusterAnalysis`` (``saeinverse.cluster.analysis``).
    """
    if isinstance(first, cluster_stage.ClusterResult):
        return cluster_analysis.analyze_clusters(first, *args, **kwargs)
    labels, original_indices, prompts = (list(args) + [None, None, None])[:3]
    result = _seed_cluster_result(first, labels, original_indices)
    return cluster_analysis.analyze_clusters(result, first, list(prompts) if prompts else None)


class SelectedIds(list):
    """Selected SAE feature ids (slice and iterate them); ``.selection`` is the full
    ``Selection`` with each feature's cluster and scores."""

    selection: Any = None


def select_features(first: Any, *args: Any, **kwargs: Any) -> Any:
    """Choose target features: per cluster the best by ``selection.score``, or explicit ids.

    - Seed form ``select_features(filtered_acts, labels, original_indices,
      config['clustering']['selection'])`` returns ``SelectedIds``; its scores come from
      ``filtered_acts`` (per-prompt maxima; ``density`` is the share of prompts where the
      feature fires, as no token counts are at hand).
    - Rich form ``select_features(cluster_result, stats, selection_cfg)`` returns the
      ``Selection`` (``saeinverse.select``).
    """
    from saeinverse import select as select_stage

    if first is None or isinstance(first, cluster_stage.ClusterResult):
        return select_stage.select_features(first, *args, **kwargs)
    labels, original_indices, selection_cfg = args[:3]
    result = _seed_cluster_result(first, labels, original_indices)
    stats = PromptMaxStats(first, original_indices)
    cfg = as_section(selection_cfg, SelectionConfig)
    selection = select_stage.select_features(result, stats, cfg, d_sae=stats.d_sae, **kwargs)
    ids = SelectedIds(selection.feature_ids)
    ids.selection = selection
    return ids


class PromptMaxStats:
    """What selection scores read, from a prompts × features per-prompt max matrix alone."""

    def __init__(self, filtered_acts: Any, original_indices: Any) -> None:
        from saeinverse.collect.arrays import to_numpy

        self.matrix = to_numpy(filtered_acts, np.float64)
        self.ids = to_numpy(original_indices, np.int64).reshape(-1)
        self.d_sae = int(self.ids.max()) + 1 if len(self.ids) else 0
        self.max_activation = np.zeros(self.d_sae)
        self.density = np.zeros(self.d_sae)
        self.max_activation[self.ids] = self.matrix.max(axis=0, initial=0.0)
        rows = max(1, self.matrix.shape[0])
        self.density[self.ids] = (self.matrix > 0).sum(axis=0) / rows
        self.column = {int(f): i for i, f in enumerate(self.ids)}

    def prompt_feature_dense(self, feature_ids: Sequence[int]) -> np.ndarray:
        return self.matrix[:, [self.column[int(f)] for f in feature_ids]]


def _seed_cluster_result(filtered_acts: Any, labels: Any, original_indices: Any):
    """The ``ClusterResult`` behind the seed's ``labels``, keyed by the SAE ids."""
    ids = np.asarray(
        original_indices.cpu() if hasattr(original_indices, "cpu") else original_indices,
        dtype=np.int64,
    ).reshape(-1)
    result = getattr(labels, "result", None)
    if result is not None and len(result.feature_ids) == len(ids):
        return dataclasses.replace(result, feature_ids=ids)
    labels = np.asarray(labels, dtype=np.int64).reshape(-1)
    vectors, metric = feature_vectors("activation", filtered_acts, ids, None)
    return cluster_stage.ClusterResult(
        feature_ids=ids,
        labels=labels,
        embedding_2d=np.zeros((len(ids), 2), np.float32),
        embedding=vectors,
        vectors=vectors,
        vectors_kind="activation",
        method="given",
        metric=metric,
        n_clusters=len(set(labels.tolist()) - {-1}),
    )


def _is_config(value: Any, section_type: type) -> bool:
    return isinstance(value, section_type | Mapping)


def _n_columns(matrix: Any) -> int:
    return int(matrix.shape[1])


# ----------------------------------------------------------------------------- results


def visualize_results(results: Any, output: str | Path | None = None, **kwargs: Any) -> Any:
    """Show results.

    - Seed form ``visualize_results(feature_results)`` with a list of ``Inversion`` returns
      Plotly figures: the activation each feature's prompts reach (÷ its dataset maximum when
      known), then one optimisation curve per feature. With ``output`` they are also written
      as one self-contained HTML page.
    - Rich form ``visualize_results(run_dir_or_context)`` builds that run's ``report.html``.
    """
    from saeinverse.report import visualize_results as report_run

    if isinstance(results, Sequence) and not isinstance(results, str | bytes):
        return _inversion_figures(list(results), output)
    return report_run(results, output, **kwargs)


def _inversion_figures(inversions: list[Any], output: str | Path | None) -> list[Any]:
    from saeinverse.io import write_text
    from saeinverse.report import html as report_html
    from saeinverse.report import result_figures

    by_id = {int(r.feature_id): r for r in inversions}
    figures = [result_figures.activation_ratios(by_id, [int(r.feature_id) for r in inversions])]
    figures += [result_figures.optimisation_curve(r) for r in inversions]
    figures = [f for f in figures if f is not None]
    if output is not None:
        sink = report_html.FigureSink()
        body = "".join(sink(fig, f"result-{i}") for i, fig in enumerate(figures))
        ids = ", ".join(str(f) for f in by_id)
        write_text(output, report_html.page("saeinverse results", f"features {ids}", [], body))
        logger.info("results: %d figures → %s", len(figures), output)
    return figures
