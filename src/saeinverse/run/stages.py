"""The pipeline's stages, in order: each reads earlier results, writes its folder, and loads back.

Importing this module registers them with ``saeinverse.run.pipeline``. Each stage's hash covers the
config slice named here plus the hashes of the stages it reads.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from saeinverse.config import Config
from saeinverse.run.pipeline import Context, Stage, StageSkipped, register_stage

logger = logging.getLogger(__name__)

_COLLECTION_KEYS_IGNORED = ("filtering", "use_cached_data", "batch_size")


# ----------------------------------------------------------------------------- collect


def _collect_part(config: Config) -> Any:
    data = {k: v for k, v in config.data.to_dict().items() if k not in _COLLECTION_KEYS_IGNORED}
    return {
        "data": data,
        "positional_window": config.data.filtering.positional_window,
        "seed": config.seed,
    }


def _collect(ctx: Context, folder: Path):
    from saeinverse.collect.activations import collect_activations
    from saeinverse.data.sources import load_prompts

    prompts = load_prompts(ctx.config.data, seed=ctx.config.seed)
    stats = collect_activations(ctx.model, ctx.sae, prompts, ctx.config.data, seed=ctx.config.seed)
    stats.save(folder)
    return stats


def _load_collect(ctx: Context, folder: Path):
    from saeinverse.collect.stats import FeatureStats

    return FeatureStats.load(folder)


# ----------------------------------------------------------------------------- filter


def _filter(ctx: Context, folder: Path):
    from saeinverse.filter import filter_features

    feature_set = filter_features(ctx.results["collect"], ctx.config.data.filtering)
    feature_set.save(folder)
    return feature_set


def _load_filter(ctx: Context, folder: Path):
    from saeinverse.filter import FeatureSet

    return FeatureSet.load(folder)


# ----------------------------------------------------------------------------- cluster


def _cluster_part(config: Config) -> Any:
    clustering = config.clustering.to_dict()
    clustering.pop("selection")
    clustering.pop("visualize_clusters")
    return {"clustering": clustering, "seed": config.seed}


def _cluster(ctx: Context, folder: Path) -> dict[str, Any]:
    from saeinverse.cluster.analysis import analyze_clusters
    from saeinverse.cluster.clustering import run_clustering

    stats, kept = ctx.results["collect"], candidate_features(ctx)
    result = run_clustering(
        stats.prompt_feature_dense(kept),
        kept,
        ctx.config.clustering,
        sae=ctx.sae,
        seed=ctx.config.seed,
    )
    result.save(folder)
    analysis = analyze_clusters(result, stats)
    analysis.save(folder)
    return {"clusters": result, "analysis": analysis}


def _load_cluster(ctx: Context, folder: Path) -> dict[str, Any]:
    from saeinverse.cluster.analysis import ClusterAnalysis
    from saeinverse.cluster.clustering import ClusterResult

    return {"clusters": ClusterResult.load(folder), "analysis": ClusterAnalysis.load(folder)}


# ----------------------------------------------------------------------------- select


def candidate_features(ctx: Context):
    """Features that survived filtering, or every feature that fires when filtering is off."""
    if "filter" in ctx.results:
        return ctx.results["filter"].kept
    return (ctx.results["collect"].firing_count > 0).nonzero().squeeze(1)


def _select(ctx: Context, folder: Path):
    from saeinverse.select import select_features, select_unclustered

    stats, cfg = ctx.results["collect"], ctx.config.clustering.selection
    if "cluster" in ctx.results:
        selection = select_features(ctx.results["cluster"]["clusters"], stats, cfg)
    else:
        selection = select_unclustered(candidate_features(ctx), stats, cfg)
    selection.save(folder)
    return selection


def _load_select(ctx: Context, folder: Path):
    from saeinverse.select import Selection

    return Selection.load(folder)


# ----------------------------------------------------------------------------- invert


def target_features(ctx: Context) -> list[int]:
    """The features to invert: the selection's, else the config's explicit ids."""
    if "select" in ctx.results:
        return list(ctx.results["select"].feature_ids)
    explicit = ctx.config.clustering.selection.feature_ids
    if explicit:
        return list(explicit)
    raise StageSkipped(
        "no target features: turn on pipeline.run_feature_selection (with collection) "
        "or give clustering.selection.feature_ids"
    )


def _targeted_part(section: str) -> Any:
    """A stage's hash slice: its own section, the seed and the explicit target ids."""

    def part(config: Config) -> Any:
        return {
            section: config[section].to_dict(),
            "seed": config.seed,
            "explicit": config.clustering.selection.feature_ids,
        }

    return part


def _invert(ctx: Context, folder: Path):
    from saeinverse.invert import dataset_maxima, exemplar_tails, optimize_features, save_inversions

    ids = target_features(ctx)
    stats = ctx.results.get("collect")
    opt = ctx.config.optimization
    maxima = dataset_maxima(stats, ids) if stats is not None else None
    exemplars = exemplar_tails(stats, ids, opt.length) if stats is not None else None
    inversions = optimize_features(
        ctx.model,
        ctx.sae,
        ids,
        opt,
        seed=ctx.config.seed,
        dataset_max=maxima,
        exemplar_tokens=exemplars,
    )
    save_inversions(folder, inversions)
    return inversions


def _load_invert(ctx: Context, folder: Path):
    from saeinverse.invert import load_inversions

    return load_inversions(folder)


# ----------------------------------------------------------------------------- explain


def _explain(ctx: Context, folder: Path):
    from saeinverse.explain import generate_explanations, save_explanations

    inversions = ctx.results.get("invert")
    targets = inversions if inversions is not None else target_features(ctx)
    _, _, lm, tokenizer = ctx.models()
    results = generate_explanations(
        ctx.model,
        ctx.sae,
        targets,
        lm,
        tokenizer,
        ctx.config.explanation,
        stats=ctx.results.get("collect"),
        inversions=inversions,
        seed=ctx.config.seed,
        progress=True,
    )
    save_explanations(folder, results)
    return results


def _load_explain(ctx: Context, folder: Path):
    from saeinverse.explain import load_explanations

    return load_explanations(folder)


# ----------------------------------------------------------------------------- report


def _report(ctx: Context, folder: Path) -> Path:
    from saeinverse.report import REPORT_FILE, build_report

    return build_report(ctx.run.root, folder / REPORT_FILE)


def _load_report(ctx: Context, folder: Path) -> Path:
    from saeinverse.report import REPORT_FILE

    return folder / REPORT_FILE


for _stage in (
    Stage("collect", "run_data_collection", ("models",), _collect_part, _collect, _load_collect),
    Stage(
        "filter",
        "run_filtering",
        ("collect",),
        lambda c: c.data.filtering.to_dict(),
        _filter,
        _load_filter,
    ),
    Stage(
        "cluster",
        "run_clustering",
        ("collect",),
        _cluster_part,
        _cluster,
        _load_cluster,
        optional=("filter",),
    ),
    Stage(
        "select",
        "run_feature_selection",
        ("collect",),
        lambda c: c.clustering.selection.to_dict(),
        _select,
        _load_select,
        optional=("filter", "cluster"),
    ),
    Stage(
        "invert",
        "run_prompt_optimization",
        ("models",),
        _targeted_part("optimization"),
        _invert,
        _load_invert,
        optional=("collect", "select"),
    ),
    Stage(
        "explain",
        "run_explanations",
        ("models",),
        _targeted_part("explanation"),
        _explain,
        _load_explain,
        optional=("collect", "select", "invert"),
    ),
):
    register_stage(_stage)

register_stage(
    Stage(
        "report",
        "run_visualization",
        (),
        lambda c: c.clustering.visualize_clusters,
        _report,
        _load_report,
        optional=("collect", "filter", "cluster", "select", "invert", "explain"),
    )
)
