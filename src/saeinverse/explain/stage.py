"""Stage 6: explain each selected feature in words, score the explanations, save ``explanations.jsonl``.

``generate_explanations`` builds each feature's evidence (``sampling.build_evidence``), asks the
configured explainer for an explanation per feature (a plain sentence, then a rule when the
explainer writes one), scores every explanation on the feature's held-out evidence (detection
against random and hard negatives, fuzzing) and again with the explanations deranged across
features (the baseline), each score with a bootstrap interval and a verdict; the embedding judge
scores the same windows. The scorer reads the rule or the sentence (its ``reads``), the judge
the sentence; each result's ``scored`` says which. Each refined prompt is re-checked with a
fresh forward. It is a pure function of its inputs and the seed, so batches of features can be
explained apart and concatenated."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
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
from saeinverse.explain.sentence import Explanation, as_explanation

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
    drafts = draft_explanations(backend, evidence)
    results = score_explanations(
        model, sae, backend, drafts, Baselines.of(drafts, seed), cfg,
        inversions=by_id, seed=seed, judge=judge, progress=progress,
    )  # fmt: skip
    seconds = (time.perf_counter() - start) / len(results)
    for result in results:
        result.seconds = seconds
    return results


@dataclass
class Draft:
    """One feature's evidence and its explanation, not scored yet."""

    evidence: FeatureEvidence
    result: ExplanationResult


def draft_explanations(backend: Backend, evidence: list[FeatureEvidence]) -> list[Draft]:
    """Each feature's explanation from its evidence (one ``explain_many`` call)."""
    written = backend.explainer.explain_many([e.explain for e in evidence])
    drafts = []
    for ev, explanation in zip(evidence, map(as_explanation, written), strict=True):
        logger.info("feature %d (%s): %s", ev.feature_id, backend.name, explanation.text())
        result = ExplanationResult(
            feature_id=ev.feature_id,
            explainer=backend.name,
            explanation=explanation.text(),
            sentence=explanation.sentence,
            rule=explanation.rule,
            scorer=backend.scorer_name,
            evidence=evidence_summary(ev),
            dataset_max=ev.dataset_max,
        )
        drafts.append(Draft(ev, result))
    return drafts


@dataclass(frozen=True)
class Baselines:
    """What scoring needs from every feature of the stage: whose explanation each feature's
    shuffled baseline reads (a derangement of all the features, drawn with the seed, so the
    pairing never depends on how the features are batched), those explanations, and whether
    any feature has held-out positives to score on."""

    partners: dict[int, int]
    texts: dict[int, Explanation]
    scorable: bool

    @classmethod
    def of(cls, drafts: Sequence[Draft], seed: int) -> Baselines:
        ids = [d.result.feature_id for d in drafts]
        shuffle = derangement(len(ids), seed)
        partners = {} if shuffle is None else {f: ids[j] for f, j in zip(ids, shuffle, strict=True)}
        texts = {d.result.feature_id: _written(d.result) for d in drafts}
        return cls(partners, texts, any(d.evidence.heldout.positives for d in drafts))


def score_explanations(
    model,
    sae,
    backend: Backend,
    drafts: list[Draft],
    baselines: Baselines,
    cfg: ExplanationConfig,
    *,
    inversions: Mapping[int, Inversion],
    seed: int,
    judge: EmbeddingJudge | None = None,
    progress: bool = False,
) -> list[ExplanationResult]:
    """The drafts' results, scored on their held-out evidence against their shuffled baselines,
    judged, and each refined prompt re-checked."""
    evidence = [d.evidence for d in drafts]
    results = [d.result for d in drafts]
    own = [_written(r) for r in results]
    others = [baselines.partners.get(r.feature_id) for r in results]
    partners = [None if f is None else baselines.texts[f] for f in others]
    reads = getattr(backend.scorer, "reads", "sentence")
    if cfg.score and baselines.scorable:
        scored = [_part(e, reads) for e in own]
        shuffled = [None if e is None else _part(e, reads) for e in partners]
        _score(backend, evidence, scored, shuffled, results, seed, cfg.n_bootstrap, progress)
        for result, other, explanation in zip(results, others, own, strict=True):
            result.baseline_feature = other
            part = "rule" if reads == "rule" and explanation.rule else "sentence"
            result.scored.update(dict.fromkeys(("detection", "detection_hard", "fuzzing"), part))
        if cfg.judge:
            sentences = [e.sentence for e in own]
            shuffled = [None if e is None else e.sentence for e in partners]
            _judge(judge, evidence, sentences, shuffled, results, seed, cfg.n_bootstrap)
            for result in results:
                result.scored.update(dict.fromkeys(("embedding", "embedding_hard"), "sentence"))
    for result in results:
        if result.feature_id in inversions:
            result.inversion = inversion_check(
                model, sae, inversions[result.feature_id], result.dataset_max
            )
    return results


def _written(result: ExplanationResult) -> Explanation:
    return Explanation(result.sentence or result.explanation, result.rule)


def _part(explanation: Explanation, reads: str) -> str:
    """What a scorer that ``reads`` 'rule' or 'sentence' is given (the sentence when no rule)."""
    return explanation.rule if reads == "rule" and explanation.rule else explanation.sentence


def _score(
    backend: Backend,
    evidence: list[FeatureEvidence],
    explanations: list[str],
    baselines: list[str | None],
    results: list[ExplanationResult],
    seed: int,
    n_boot: int,
    progress: bool,
) -> None:
    """Fill each result's scores, intervals, baselines and verdicts (in place)."""
    from tqdm.auto import tqdm

    bar = tqdm(total=len(evidence), desc="score explanations", disable=not progress, leave=False)
    with bar:
        for i, (ev, result) in enumerate(zip(evidence, results, strict=True)):
            item_seed = seed * 1_000_003 + ev.feature_id
            scores = score_explanation(
                backend.scorer, explanations[i], ev.heldout, item_seed, baselines[i], n_boot=n_boot
            )
            for name, record in scores.items():
                result.set_score(name, record)
            bar.update(1)


def _judge(
    judge: EmbeddingJudge | None,
    evidence: list[FeatureEvidence],
    explanations: list[str],
    baselines: list[str | None],
    results: list[ExplanationResult],
    seed: int,
    n_boot: int,
) -> None:
    """Fill each result's embedding-judge scores (in place)."""
    from saeinverse.explain.judge import EmbeddingJudge

    judge = judge or EmbeddingJudge()
    texts = list(explanations)  # each baseline text embedded once, beside the own ones
    row = {text: i for i, text in reversed(list(enumerate(texts)))}
    shuffle: list[int | None] = []
    for baseline in baselines:
        if baseline is not None and baseline not in row:
            row[baseline] = len(texts)
            texts.append(baseline)
        shuffle.append(None if baseline is None else row[baseline])
    scored = judge.score_all(texts, evidence, shuffle, n_boot=n_boot, seed=seed)
    for result, scores in zip(results, scored, strict=True):
        for name, record in scores.items():
            result.set_score(name, record)
