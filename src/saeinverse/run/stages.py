"""The pipeline's stages, in order: each reads earlier results, writes its folder, and loads back.

``STAGES`` pairs each row of ``saeinverse.artifacts.STAGES`` (name, toggle, inputs, artifact
file names) with what it reads of the config and how it computes; a finished stage is loaded
back by ``saeinverse.loaders``. A stage's hash covers the config values it reads (``reads``:
dotted paths, a longer path overriding a shorter one, ``-path`` for a value it does not read),
the models' identity and the outputs of the stages it reads; ``NOT_RESULTS`` lists what a stage
may read that changes where or how fast it runs, never its result.

The long stages (collect, invert, explain) run on the run's pool (``Context.pool``), checkpointed
per unit under their folder; the reference step measures what inversion is judged by.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from saeinverse import artifacts
from saeinverse.collect.prompts import COLLECTION_READS
from saeinverse.io import save_json
from saeinverse.loaders import LOADERS
from saeinverse.run.context import Context, Stage, StageSkipped
from saeinverse.units import Checkpoints

logger = logging.getLogger(__name__)

NOT_RESULTS = (
    "scale",  # where units run and how they are cut: results equal whatever the engine
    "model",  # the models' identity (their weights, dtype and device type) covers these
    "sae",
    "hardware.device",
    "hardware.dtype",
    "hardware.threads",  # torch threads
    "data.batch_size",  # prompts per forward (padding changes float32 rounding only)
    "data.use_cached_data",  # whether collection may be reused at all
)
"""Config values a stage may read outside its hash: they change where or how fast it runs, not
its result, or the models' identity (in every hash) covers them."""


# ----------------------------------------------------------------------------- models


def _compute_models(ctx: Context, folder: Path) -> dict[str, Any]:
    model, sae = ctx.model, ctx.sae
    sae_cfg = sae.cfg
    summary = {
        "model": ctx.config.model.name,
        "n_layers": model.cfg.n_layers,
        "d_model": model.cfg.d_model,
        "d_vocab": model.cfg.d_vocab,
        "sae_class": type(sae).__name__,
        "hook_name": sae_cfg.metadata.hook_name,
        "d_in": sae_cfg.d_in,
        "d_sae": sae_cfg.d_sae,
        "identity": ctx.identity,
    }
    save_json(folder / artifacts.MODELS_FILE, summary)
    return summary


# ----------------------------------------------------------------------------- collect


def _collect(ctx: Context, folder: Path):
    from saeinverse.collect.prompts import draw_prompts, token_counter
    from saeinverse.collect.sharded import collect_prompts

    config = ctx.config
    count = token_counter(ctx.model, config) if config.data.n_tokens is not None else None
    prompts = draw_prompts(config, count)
    stats = collect_prompts(
        ctx.pool(), prompts, config.data, seed=config.seed,
        shard_prompts=config.scale.shard_prompts, checkpoints=_checkpoints(ctx, folder),
    )  # fmt: skip
    stats.save(folder)
    return stats


def _checkpoints(ctx: Context, folder: Path) -> Checkpoints:
    return Checkpoints(folder, ctx.computing)


# ----------------------------------------------------------------------------- filter .. select


def _filter(ctx: Context, folder: Path):
    from saeinverse.filter import filter_features

    feature_set = filter_features(ctx.results["collect"], ctx.config.data.filtering)
    feature_set.save(folder)
    return feature_set


def _cluster(ctx: Context, folder: Path) -> dict[str, Any]:
    from saeinverse.cluster.analysis import analyze_clusters
    from saeinverse.cluster.clustering import run_clustering

    stats, kept = ctx.results["collect"], candidate_features(ctx)
    result = run_clustering(
        stats.prompt_feature_dense(kept), kept, ctx.config.clustering, sae=ctx.sae,
        seed=ctx.config.seed,
    )  # fmt: skip
    result.save(folder)
    analysis = analyze_clusters(result, stats)
    analysis.save(folder)
    return {"clusters": result, "analysis": analysis}


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


# ----------------------------------------------------------------------------- cards


def _cards(ctx: Context, folder: Path):
    from saeinverse.cards import compute_cards

    ids = target_features(ctx)
    cards = compute_cards(ctx.model, ctx.sae, ctx.results["collect"], ids, seed=ctx.config.seed)
    cards.save(folder)
    return cards


def _cards_reads(ctx: Context) -> tuple[str, ...]:
    return ("seed", *_targets_read(ctx))


# ----------------------------------------------------------------------------- reference


def _reference_reads(ctx: Context) -> tuple[str, ...]:
    return REFERENCE_READS + _targets_read(ctx)


REFERENCE_READS = (
    "optimization.reference_tokens", "optimization.length", "optimization.position",
    "optimization.fluency_quantile", "optimization.fluency_windows",
    "data.max_length", "data.exclude_bos", "seed",
)  # fmt: skip
"""What the reference maximum and the fluency bound depend on (besides the collection)."""


def _reference(ctx: Context, folder: Path):
    from saeinverse.collect.reference import reference_folder
    from saeinverse.invert.reference import measure_reference

    config = ctx.config
    reference = measure_reference(
        ctx.model, ctx.sae, config.optimization, config.data, seed=config.seed,
        cache=reference_folder(config), stats=ctx.results.get("collect"),
        feature_ids=target_features(ctx),
    )  # fmt: skip
    reference.save(folder)
    return reference


# ----------------------------------------------------------------------------- invert


def target_features(ctx: Context) -> list[int]:
    """The features to invert and explain: the selection's, else the config's explicit ids."""
    if "select" in ctx.results:
        return list(ctx.results["select"].feature_ids)
    explicit = ctx.config.clustering.selection.feature_ids
    if explicit:
        return list(explicit)
    raise StageSkipped(
        "no target features: turn on pipeline.run_feature_selection (with collection) "
        "or give clustering.selection.feature_ids"
    )


def _targets_read(ctx: Context) -> tuple[str, ...]:
    """The explicit ids, when there is no selection to read them from."""
    return () if "select" in ctx.results else ("clustering.selection.feature_ids",)


def invert_inputs(ctx: Context):
    """``InvertInputs`` from the run: targets, their collection and reference maxima, their
    exemplar windows and then their reference windows (neither from a prompt explanations hold
    out), the reference and the bound."""
    from saeinverse.data.corpus import text_hash
    from saeinverse.invert import dataset_maxima
    from saeinverse.invert.inputs import exemplar_windows, merge_windows, reference_windows
    from saeinverse.invert.stage import InvertInputs, InvertTarget

    ids = target_features(ctx)
    stats, reference, opt = (
        ctx.results.get("collect"),
        ctx.results["reference"],
        ctx.config.optimization,
    )
    maxima = dataset_maxima(stats, ids) if stats is not None else {}
    windows: dict[int, list[list[int]]] = {}
    contexts: dict[int, list[list[int]]] = {}
    real = {f: list(reference.windows.get(f, ())) for f in ids}
    if stats is not None:
        heldout = _heldout(ctx, stats, ids)
        windows = exemplar_windows(stats, ids, opt.length, exclude_prompts=heldout)
        if opt.max_length > opt.length:
            contexts = exemplar_windows(
                stats, ids, opt.max_length, exclude_prompts=heldout, whole=False
            )
        for f in ids:
            held = {text_hash(stats.prompts[p]) for p in heldout[f]}
            real[f] = [w for w in real[f] if w.text not in held]
    windows = merge_windows(windows, reference_windows(real, ids, opt.length))
    if opt.max_length > opt.length:
        longer = reference_windows(real, ids, opt.max_length, whole=False)
        contexts = merge_windows(contexts, longer)
    targets = tuple(
        InvertTarget(
            f,
            maxima.get(f),
            float(reference.maximum.max_activation[f]),
            tuple(tuple(w) for w in windows.get(f, ())),
            tuple(tuple(c) for c in contexts.get(f, ())),
            tuple(sorted({w.text for w in real[f]})),
        )  # fmt: skip
        for f in ids
    )
    return InvertInputs(
        targets, reference.bound, reference.maximum.n_tokens, ctx.config.data.exclude_bos
    )


def _heldout(ctx: Context, stats, ids: Sequence[int]) -> dict[int, set[int]]:
    """The prompts the explain stage holds out per feature (``explain.sampling.plan_feature``)."""
    from saeinverse.explain.sampling import plan_feature

    dense = stats.prompt_feature_dense(ids).numpy()
    plans = [
        plan_feature(stats, f, dense[:, j], ctx.config.explanation, ctx.config.seed)
        for j, f in enumerate(ids)
    ]
    return {f: set(p.heldout) | set(p.negative_candidates) for f, p in zip(ids, plans, strict=True)}


HELDOUT_READS = ("explanation.n_heldout", "explanation.n_exemplars", "explanation.n_decile_samples")
"""What ``plan_feature`` reads: which exemplar windows inversion may start from depends on it."""


def _invert_reads(ctx: Context) -> tuple[str, ...]:
    # every optimization key: a feature searched at a longer length measures its own bound
    # (fluency_windows), and the reference stage's keys only add what its result already says
    reads = ("optimization", "seed", "data.exclude_bos", *_targets_read(ctx))
    return reads + HELDOUT_READS if "collect" in ctx.results else reads


def _invert(ctx: Context, folder: Path):
    from saeinverse.invert import save_inversions
    from saeinverse.invert.stage import invert_features

    config = ctx.config
    inversions = invert_features(
        ctx.pool(), invert_inputs(ctx), config.optimization, seed=config.seed,
        batch_size=config.scale.feature_batch, checkpoints=_checkpoints(ctx, folder),
    )  # fmt: skip
    save_inversions(folder, inversions)
    return inversions


# ----------------------------------------------------------------------------- explain


def _explain(ctx: Context, folder: Path):
    from saeinverse.explain import save_explanations
    from saeinverse.explain.batches import explain_features

    config = ctx.config
    inversions = ctx.results.get("invert") or []
    ids = [int(i.feature_id) for i in inversions] if inversions else target_features(ctx)
    results = explain_features(
        ctx.pool(), ids, config.explanation, stats=ctx.results.get("collect"),
        inversions=inversions, seed=config.seed, batch_size=config.scale.feature_batch,
        checkpoints=_checkpoints(ctx, folder),
    )  # fmt: skip
    save_explanations(folder, results)
    return results


def _explain_reads(ctx: Context) -> tuple[str, ...]:
    reads = ("explanation", "seed")
    return reads if "invert" in ctx.results else reads + _targets_read(ctx)


# ----------------------------------------------------------------------------- report


def _report(ctx: Context, folder: Path) -> Path:
    from saeinverse.report import build_report

    return build_report(ctx.run.root, folder / artifacts.REPORT_FILE)


def _static(*paths: str) -> Callable[[Context], tuple[str, ...]]:
    return lambda ctx: paths


_FUNCTIONS: dict[str, tuple[Callable[[Context], tuple[str, ...]], Callable[..., Any]]] = {
    "models": (_static("model.name"), _compute_models),
    "collect": (
        _static(*COLLECTION_READS),
        _collect,
    ),
    "filter": (_static("data.filtering"), _filter),
    "cluster": (
        _static("clustering", "-clustering.selection", "-clustering.visualize_clusters", "seed"),
        _cluster,
    ),
    "select": (_static("clustering.selection"), _select),
    "cards": (_cards_reads, _cards),
    "reference": (_reference_reads, _reference),
    "invert": (_invert_reads, _invert),
    "explain": (_explain_reads, _explain),
    "report": (_static("clustering.visualize_clusters"), _report),
}
"""Stage name -> (the config paths it reads, compute); the names and order are ``artifacts.STAGES``."""

if list(_FUNCTIONS) != list(artifacts.STAGE_NAMES):
    raise RuntimeError(f"stage functions {list(_FUNCTIONS)} != stages {artifacts.STAGE_NAMES}")

STAGES: tuple[Stage, ...] = tuple(
    Stage(spec, *_FUNCTIONS[spec.name], LOADERS[spec.name]) for spec in artifacts.STAGES
)
"""The pipeline, in order."""
