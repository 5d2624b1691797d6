"""The pipeline's stages, in order: each reads earlier results, writes its folder, and loads back.

``STAGES`` pairs each row of ``saeinverse.artifacts.STAGES`` (name, toggle, inputs, artifact
file names) with its functions here: the config slice its hash covers, how it computes and how a
finished one is loaded back. A stage's hash covers that config slice, the models' identity and
the outputs of the stages it reads.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from saeinverse import artifacts
from saeinverse.config import Config
from saeinverse.io import load_json, save_json
from saeinverse.run.context import Context, Stage, StageSkipped

logger = logging.getLogger(__name__)

_COLLECTION_KEYS_IGNORED = ("filtering", "use_cached_data", "batch_size")


# ----------------------------------------------------------------------------- models


def _compute_models(ctx: Context, folder: Path) -> dict[str, Any]:
    ctx.models()
    sae_cfg = ctx.sae.cfg
    summary = {
        "model": ctx.config.model.name,
        "n_layers": ctx.model.cfg.n_layers,
        "d_model": ctx.model.cfg.d_model,
        "d_vocab": ctx.model.cfg.d_vocab,
        "sae_class": type(ctx.sae).__name__,
        "hook_name": sae_cfg.metadata.hook_name,
        "d_in": sae_cfg.d_in,
        "d_sae": sae_cfg.d_sae,
        "identity": ctx.identity,
    }
    save_json(folder / artifacts.MODELS_FILE, summary)
    return summary


def _load_models(ctx: Context, folder: Path) -> dict[str, Any]:
    return load_json(folder / artifacts.MODELS_FILE)


# ----------------------------------------------------------------------------- collect


def _collect_part(config: Config) -> Any:
    data = {k: v for k, v in config.data.to_dict().items() if k not in _COLLECTION_KEYS_IGNORED}
    return {
        "data": data,
        "positional_window": config.data.filtering.positional_window,
        "seed": config.seed,
    }


def _local_pool(ctx: Context):
    """The local engine's in-process pool over the loaded models (``saeinverse.scale.local``)."""
    from saeinverse.scale import LocalPool

    return LocalPool(ctx.config, *ctx.models(), identity=ctx.identity)


def _collect(ctx: Context, folder: Path):
    from saeinverse.scale import collect_local, collect_sharded

    if ctx.config.scale.engine == "ray":
        stats = collect_sharded(ctx.config, folder)  # the same shards, on workers
    else:
        stats = collect_local(ctx.config, folder, _local_pool(ctx))  # shard by shard, saved
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
    from saeinverse.collect.reference import cached_reference_max, larger_of, reference_folder
    from saeinverse.invert import (
        FeatureTarget,
        dataset_maxima,
        exemplar_tails,
        measure_bound,
        save_inversions,
    )
    from saeinverse.invert.fluency import default_bound, stats_token_rows
    from saeinverse.scale import inverter, local_inverter

    ids = target_features(ctx)
    stats = ctx.results.get("collect")
    opt, data, seed = ctx.config.optimization, ctx.config.data, ctx.config.seed
    maxima = dataset_maxima(stats, ids) if stats is not None else None
    exemplars = None
    if stats is not None and opt.init == "exemplar":
        held_out = _explain_heldout(ctx, stats, ids)  # never start from a prompt explain scores on
        exemplars = exemplar_tails(stats, ids, opt.length, exclude_prompts=held_out)
    reference = cached_reference_max(
        ctx.model, ctx.sae, reference_folder(ctx.config), seed=seed,
        max_tokens=opt.reference_tokens, window=data.max_length, exclude_bos=data.exclude_bos,
    )  # fmt: skip
    reference = larger_of(reference, stats)
    target = FeatureTarget(ctx.model, ctx.sae, opt.position, data.exclude_bos)
    if stats is not None:  # the bound from the run's own text, stored in every record
        rows = stats_token_rows(stats, ctx.model)
        bound = measure_bound(
            target, rows, opt.length, opt.fluency_quantile, opt.fluency_windows, seed,
            cache=reference_folder(ctx.config),
        )  # fmt: skip
    else:
        bound = default_bound(target, opt, seed)
    if ctx.config.scale.engine == "ray":  # optimize_features by feature batch, saved as done
        optimize_features = inverter(ctx.config, folder)  # on Ray workers
    else:
        optimize_features = local_inverter(ctx.config, folder, _local_pool(ctx))
    inversions = optimize_features(
        ctx.model, ctx.sae, ids, opt, seed=seed, dataset_max=maxima,
        reference_max=reference.for_features(ids), reference_tokens=reference.n_tokens,
        exemplar_tokens=exemplars, fluency_bound=bound, exclude_bos=data.exclude_bos,
    )  # fmt: skip
    save_inversions(folder, inversions)
    return inversions


def _explain_heldout(ctx: Context, stats, ids) -> dict[int, set[int]]:
    """The prompts the explain stage holds out per feature (``explain.sampling.plan_feature``)."""
    from saeinverse.explain.sampling import plan_feature

    dense = stats.prompt_feature_dense(ids).numpy()
    plans = [
        plan_feature(stats, f, dense[:, j], ctx.config.explanation, ctx.config.seed)
        for j, f in enumerate(ids)
    ]
    return {f: set(p.heldout) | set(p.negative_candidates) for f, p in zip(ids, plans, strict=True)}


def _load_invert(ctx: Context, folder: Path):
    from saeinverse.invert import load_inversions

    return load_inversions(folder)


# ----------------------------------------------------------------------------- explain


def _explain(ctx: Context, folder: Path):
    from saeinverse.explain import save_explanations
    from saeinverse.scale import explainer, local_explainer

    inversions = ctx.results.get("invert")
    targets = inversions if inversions is not None else target_features(ctx)
    _, _, lm, tokenizer = ctx.models()
    if ctx.config.scale.engine == "ray":  # generate_explanations by feature batch, saved
        generate_explanations = explainer(ctx.config, folder)  # on Ray workers
    else:  # one unit when scored: the shuffled baseline spans all features
        generate_explanations = local_explainer(ctx.config, folder, _local_pool(ctx))
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
    from saeinverse.report import build_report

    return build_report(ctx.run.root, folder / artifacts.REPORT_FILE)


def _load_report(ctx: Context, folder: Path) -> Path:
    return folder / artifacts.REPORT_FILE


_FUNCTIONS = {
    "models": (lambda c: None, _compute_models, _load_models),
    "collect": (_collect_part, _collect, _load_collect),
    "filter": (lambda c: c.data.filtering.to_dict(), _filter, _load_filter),
    "cluster": (_cluster_part, _cluster, _load_cluster),
    "select": (lambda c: c.clustering.selection.to_dict(), _select, _load_select),
    "invert": (_targeted_part("optimization"), _invert, _load_invert),
    "explain": (_targeted_part("explanation"), _explain, _load_explain),
    "report": (lambda c: c.clustering.visualize_clusters, _report, _load_report),
}
"""Stage name -> (config slice, compute, load); the names and order are ``artifacts.STAGES``."""

if list(_FUNCTIONS) != list(artifacts.STAGE_NAMES):
    raise RuntimeError(f"stage functions {list(_FUNCTIONS)} != stages {artifacts.STAGE_NAMES}")

STAGES: tuple[Stage, ...] = tuple(Stage(spec, *_FUNCTIONS[spec.name]) for spec in artifacts.STAGES)
"""The pipeline, in order."""
