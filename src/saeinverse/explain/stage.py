"""Stage 6: explain each selected feature in words, score the explanations, save ``explanations.jsonl``.

``generate_explanations`` builds each feature's evidence (``sampling.build_evidence``), asks the
configured explainer for one sentence per feature, scores every explanation on the feature's
held-out evidence (detection against random and hard negatives, fuzzing) and again with the
explanations deranged across features (the baseline), each score with a bootstrap interval and a
verdict; the embedding judge scores the same windows; each refined prompt is re-checked with a
fresh forward. It is a pure function of its inputs and the seed, so batches of features can be
explained apart and concatenated."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

from saeinverse.config import ExplanationConfig, as_section
from saeinverse.explain.evidence import FeatureEvidence, evidence_summary
from saeinverse.explain.explainers import Backend, make_backend
from saeinverse.explain.results import (
    EXPLANATIONS_FILE,
    ExplanationResult,
    load_explanations,
    save_explanations,
)
from saeinverse.explain.sampling import build_evidence
from saeinverse.explain.scoring import derangement, inversion_check, score_explanation

if TYPE_CHECKING:
    from saeinverse.collect.stats import FeatureStats
    from saeinverse.explain.judge import EmbeddingJudge
    from saeinverse.invert import Inversion

logger = logging.getLogger(__name__)

__all__ = [  # the artifact's names are read from here too (run/, report/, scale/)
    "EXPLANATIONS_FILE",
    "ExplanationResult",
    "feature_ids_of",
    "generate_explanations",
    "load_explanations",
    "save_explanations",
]


# ----------------------------------------------------------------------------- inputs


def feature_ids_of(feature_results: Any) -> list[int]:
    """Feature ids from a list of ids, a Selection(-like) object, Inversions or dicts with 'feature_id'."""
    if feature_results is None:
        return []
    ids = getattr(feature_results, "feature_ids", None)
    if ids is not None:
        return [int(i) for i in (ids() if callable(ids) else ids)]
    if isinstance(feature_results, int):
        return [int(feature_results)]
    if hasattr(feature_results, "tolist"):
        return [int(i) for i in feature_results.tolist()]
    out = []
    for item in feature_results:
        if isinstance(item, dict):
            out.append(int(item["feature_id"]))
        elif hasattr(item, "feature_id"):
            out.append(int(item.feature_id))
        else:
            out.append(int(item))
    return out


def _inversions_by_id(
    feature_results: Any, inversions: Iterable[Any] | None
) -> dict[int, Inversion]:
    """Inversions from the explicit argument, else from ``feature_results`` when it holds them."""
    from saeinverse.invert import Inversion

    found: dict[int, Inversion] = {}
    candidates = list(inversions) if inversions is not None else []
    if not candidates and isinstance(feature_results, Sequence):
        candidates = [r for r in feature_results if isinstance(r, Inversion)]
    for record in candidates:
        if isinstance(record, dict):
            record = Inversion.from_dict(record)
        found[int(record.feature_id)] = record
    return found


# ----------------------------------------------------------------------------- the stage


def generate_explanations(
    model,
    sae,
    feature_results: Any,
    lm: Any = None,
    tokenizer: Any = None,
    explanation_cfg: Any = None,
    *,
    stats: FeatureStats | None = None,
    inversions: Iterable[Inversion] | None = None,
    seed: int = 0,
    backend: Backend | None = None,
    judge: EmbeddingJudge | None = None,
    evidence: list[FeatureEvidence] | None = None,
    progress: bool = False,
) -> list[ExplanationResult]:
    """Explain and score each feature of ``feature_results``; one result per feature, in order.

    ``feature_results``: feature ids, a ``Selection`` (or anything with ``feature_ids``), or a
    list of ``Inversion`` records. ``lm`` / ``tokenizer``: the explanation LM for the ``llm``
    explainer (loaded from ``llm_name`` when None; an object with ``complete_many`` is used as
    the chat model itself). ``explanation_cfg``: ``config.explanation`` or a dict of its keys.
    ``stats`` (collection) gives exemplars and held-out evidence: without it only refined
    prompts are evidence and nothing is scored. ``backend`` overrides the configured explainer;
    ``judge`` the embedding judge (loaded once per process when ``explanation.judge`` is on);
    ``evidence`` evidence already built for these features (``build_evidence`` with the same
    settings and seed), so several explainers can be compared on the very same windows.
    """
    start = time.perf_counter()
    cfg = as_section(explanation_cfg, ExplanationConfig)
    fids = feature_ids_of(feature_results)
    if not fids:
        return []
    by_id = _inversions_by_id(feature_results, inversions)
    backend = backend or make_backend(cfg, lm, tokenizer)
    if evidence is None:
        evidence = build_evidence(
            model, sae, fids, stats, cfg, inversions=by_id, seed=seed, progress=progress
        )
    elif [ev.feature_id for ev in evidence] != fids:
        raise ValueError("evidence must hold one entry per feature, in the features' order")
    explanations = backend.explainer.explain_many([e.explain for e in evidence])
    for fid, text in zip(fids, explanations, strict=True):
        logger.info("feature %d (%s): %s", fid, backend.name, text)
    results = [
        ExplanationResult(
            feature_id=ev.feature_id,
            explainer=backend.name,
            explanation=text,
            scorer=backend.scorer_name,
            evidence=evidence_summary(ev),
            dataset_max=ev.dataset_max,
        )
        for ev, text in zip(evidence, explanations, strict=True)
    ]
    scorable = any(ev.heldout.positives for ev in evidence)
    if cfg.score and scorable:
        _score(backend, evidence, explanations, results, seed, cfg.n_bootstrap, progress)
        if cfg.judge:
            _judge(judge, evidence, explanations, results, seed, cfg.n_bootstrap)
    for result in results:
        if result.feature_id in by_id:
            result.inversion = inversion_check(
                model, sae, by_id[result.feature_id], result.dataset_max
            )
    seconds = (time.perf_counter() - start) / len(results)
    for result in results:
        result.seconds = seconds
    return results


def _score(
    backend: Backend,
    evidence: list[FeatureEvidence],
    explanations: list[str],
    results: list[ExplanationResult],
    seed: int,
    n_boot: int,
    progress: bool,
) -> None:
    """Fill each result's scores, intervals, baselines and verdicts (in place)."""
    from tqdm.auto import tqdm

    shuffle = derangement(len(evidence), seed)
    bar = tqdm(total=len(evidence), desc="score explanations", disable=not progress, leave=False)
    with bar:
        for i, (ev, result) in enumerate(zip(evidence, results, strict=True)):
            item_seed = seed * 1_000_003 + ev.feature_id
            other = None if shuffle is None else shuffle[i]
            baseline = None if other is None else explanations[other]
            scores = score_explanation(
                backend.scorer, explanations[i], ev.heldout, item_seed, baseline, n_boot=n_boot
            )
            for name, record in scores.items():
                result.set_score(name, record)
            result.baseline_feature = None if other is None else evidence[other].feature_id
            bar.update(1)


def _judge(
    judge: EmbeddingJudge | None,
    evidence: list[FeatureEvidence],
    explanations: list[str],
    results: list[ExplanationResult],
    seed: int,
    n_boot: int,
) -> None:
    """Fill each result's embedding-judge scores (in place)."""
    from saeinverse.explain.judge import EmbeddingJudge

    judge = judge or EmbeddingJudge()
    shuffle = derangement(len(evidence), seed)
    scored = judge.score_all(explanations, evidence, shuffle, n_boot=n_boot, seed=seed)
    for result, scores in zip(results, scored, strict=True):
        for name, record in scores.items():
            result.set_score(name, record)
