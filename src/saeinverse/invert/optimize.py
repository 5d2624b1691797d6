"""The inversion stage: soft prompts → projection → a population of refinement rows → checked records.

``optimize_features`` inverts a batch of features together (each row its own feature), which is
what makes inversion affordable: one forward of 16 prompts costs far less than 16 forwards of
one. Per feature, the search is:

1. a soft prompt (``soft.optimize_soft``, PEZ-style; from the feature's top exemplar window with
   ``init='exemplar'``, the default, where one is given), whose best projected prompt starts
2. refinement rows run in the same batch (``refine.refine``): an **unconstrained** row
   (activation only), starting from the soft prompt, or from the feature's most active exemplar
   window where that is more active (its key is known from the fluent start's screening), and,
   with ``fluency_weight > 0``, a
   **fluent** row (activation with a cross-entropy hinge at ``fluency_target``, by default the
   real-text bound) that starts from what already fires (``starts.fluent_starts``): the most
   active of the feature's exemplar windows within the hinge, else the best prompt of a
   left-to-right beam over the model's own proposals (``beam.beam_prompts``) built from scratch,
   or the most active exemplar window when the fluent score ranks it above the beam's.
   ``fluent_start='soft'`` starts it from the soft prompt; ``'both'`` (the default) runs a second
   fluent row from the soft prompt, with a third of ``fluent_share`` (``budget.TEXT_SHARE``),
   its hinge at real text's p90 (at least the bound; ``fluency_target`` when set), the front's
   fluent point;
   ``population`` > 1 replaces the fluent row from text by that many rows from the same start,
   each weighing fluency differently (``starts.member_weight``), pooled and sharing its budget;
3. a check (``check.checked_records``): every prompt a row accepted or put on its front, the
   projected prompt, the beam's prompts and the exemplar windows are re-scored by fresh forwards
   (activation, and the model's own cross-entropy per byte); the **front** is their Pareto set,
   the **headline** the most active of them at or below the bound (so never under the best
   exemplar window within it), and the **unconstrained best** the most active of all.

**Budget.** ``max_sequences`` bounds the whole search of a feature in sequence-equivalents of
token-layers (``invert.cost``): the soft stage (3 × ``max_steps`` + 1: a step is a forward and a
backward), and every refinement row (the rest, split by ``fluent_share``), whose start (the
exemplar windows screened, or the beam) is paid from its share; what a soft stage that stopped
early left unspent goes to the fluent row from text (``budget.soft_leftover``). A config whose
soft stage and one start and refinement step per row do not fit is refused with a
``ConfigError`` (the check's re-scoring forwards are counted apart, as ``check``).

**Independence.** Every random draw comes from a generator seeded by (``seed``, feature id,
stream), every stopping rule is per row, and the prefix sharing does not depend on the batch: a
feature gets the same inversion whether it is inverted alone or with others (up to the last bits
of batched matrix products), so batches can be fanned out to workers and concatenated.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from saeinverse.config import OptimizationConfig, as_section
from saeinverse.errors import ConfigError
from saeinverse.invert.beam import beam_prompts
from saeinverse.invert.budget import from_text, plan_budget, soft_leftover
from saeinverse.invert.check import checked_records
from saeinverse.invert.cost import Cost
from saeinverse.invert.fluency import FluencyBound, default_bound
from saeinverse.invert.objective import FeatureTarget, allowed_token_mask
from saeinverse.invert.project import Vocabulary
from saeinverse.invert.refine import Population, refine
from saeinverse.invert.result import Inversion
from saeinverse.invert.soft import initial_ids, optimize_soft
from saeinverse.invert.starts import (
    BEAM,
    FLUENT,
    FLUENT_SOFT,
    FLUENT_STREAMS,
    SOFT,
    TRAJECTORY_NAMES,
    UNCONSTRAINED,
    fluent_starts,
    generator,
    member_weight,
)

logger = logging.getLogger(__name__)


def _check_feature_ids(feature_ids: Sequence[int], d_sae: int) -> list[int]:
    ids = [int(f) for f in feature_ids]
    bad = [f for f in ids if not 0 <= f < d_sae]
    if bad:
        raise ConfigError(
            f"feature id(s) {bad} out of range: this SAE has {d_sae} features, valid ids 0..{d_sae - 1}"
        )
    return ids


def _per_feature(values: Any, feature_ids: list[int], aligned: bool = False) -> list[Any]:
    """A per-feature list from a dict keyed by feature id, a tensor / list indexed by id, or None.

    ``aligned``: a list as long as ``feature_ids`` is taken as aligned with it.
    """
    if values is None:
        return [None] * len(feature_ids)
    if isinstance(values, Mapping):
        return [values.get(f) for f in feature_ids]
    if isinstance(values, torch.Tensor):
        values = values.tolist()
    if aligned and len(values) == len(feature_ids):
        return list(values)
    return [values[f] for f in feature_ids]


# ----------------------------------------------------------------------------- public API


def optimize_features(
    model,
    sae,
    feature_ids: Sequence[int],
    opt_cfg: Any = None,
    *,
    seed: int = 0,
    dataset_max: Mapping[int, float] | Sequence[float] | torch.Tensor | None = None,
    reference_max: Mapping[int, float] | Sequence[float] | torch.Tensor | None = None,
    reference_tokens: int | None = None,
    exemplar_tokens: Mapping[int, Sequence[int]] | Sequence[Sequence[int]] | None = None,
    exemplar_windows: Mapping[int, Sequence[Sequence[int]]] | None = None,
    fluency_bound: FluencyBound | None = None,
    bound_cache: str | Path | None = None,
    exclude_bos: bool = True,
    progress: bool = True,
) -> list[Inversion]:
    """Invert every feature in ``feature_ids`` in one batch; one ``Inversion`` per feature, in order.

    ``opt_cfg`` is ``config.optimization``, the whole config, a dict of its keys, or None.
    ``dataset_max`` (the run's collection maximum) and ``reference_max`` (the maximum over
    ``reference_tokens`` corpus tokens, what ratios divide by) are indexed by feature id (dict,
    or a tensor / list over all features); ``exemplar_tokens`` gives each feature's top exemplar
    tokens ending at its peak (dict by id, or a list aligned with ``feature_ids``), where the soft
    stage starts with ``init='exemplar'`` (the default; without them, from the first of
    ``exemplar_windows``, and a feature with neither starts at random). ``exemplar_windows`` gives each feature's top exemplar
    windows of ``length`` tokens (dict by id; ``inputs.exemplar_windows``): the fluent row starts
    from the best of them, and each is re-scored beside the search's prompts, so the headline is
    never below the best exemplar window within the bound. ``fluency_bound`` is the real-text
    bound (measured from the default corpus when not given, its windows' cross-entropies kept in
    ``bound_cache`` when given); ``exclude_bos`` must be collection's ``data.exclude_bos``.
    """
    s = as_section(opt_cfg, OptimizationConfig)
    ids = _check_feature_ids(feature_ids, int(sae.cfg.d_sae))
    if not ids:
        return []
    maxima = _per_feature(dataset_max, ids)
    references = _per_feature(reference_max, ids)
    windows = [
        [list(w) for w in ws or () if len(w) == s.length]
        for ws in _per_feature(exemplar_windows, ids)
    ]
    exemplars = None
    if s.init == "exemplar":
        exemplars = (
            [w[0] if w else None for w in windows]  # the top exemplar's window
            if exemplar_tokens is None
            else _per_feature(exemplar_tokens, ids, aligned=True)
        )
        missing = [f for f, e in zip(ids, exemplars, strict=True) if not e]
        if missing:
            logger.info("no exemplar for features %s: their soft prompts start at random", missing)

    start = time.perf_counter()
    target = FeatureTarget(model, sae, s.position, exclude_bos)
    vocab = Vocabulary(model, allowed_token_mask(model))
    bound = fluency_bound or default_bound(target, s, seed, cache=bound_cache)
    plan = plan_budget(s, cost=Cost.of(target, s.length))
    fids = torch.tensor(ids, device=target.device)
    bar = tqdm(
        total=plan.soft_steps + s.refine_steps,
        unit="step",
        desc=f"invert {len(ids)} features",
        disable=not progress,
        leave=False,
    )
    try:
        init = initial_ids(vocab, s.length, [generator(seed, f, SOFT) for f in ids], exemplars)
        soft = optimize_soft(target, vocab, fids, init, s, max_steps=plan.soft_steps, progress=bar)
        scale = [
            r if r else m if m else max(1.0, a)
            for r, m, a in zip(references, maxima, soft.soft_activation, strict=True)
        ]
        owners = [i for i in range(len(ids)) for _ in plan.rows]
        streams = [stream for _ in ids for stream, _ in plan.rows]
        members = [
            sum(st == stream for st, _ in plan.rows[:k])
            for _ in ids
            for k, (stream, _) in enumerate(plan.rows)
        ]
        hinge = s.fluency_target if s.fluency_target is not None else bound.cross_entropy
        soft_hinge = max(hinge, bound.p90) if s.fluency_target is None else hinge
        weight = float(s.fluency_weight)

        def rank(i: int, key: float, ce: float) -> float:
            return key / scale[i] - weight * max(ce - hinge, 0.0)

        def beam(need: list[int]):
            return beam_prompts(
                target, vocab.allowed, vocab.W_E, fids[need], [scale[i] for i in need], hinge,
                weight, s.length, s.beam_width, s.beam_proposals,
                [generator(seed, ids[i], BEAM) for i in need],
            )  # fmt: skip

        most_active: list = [None] * len(ids)
        starts, screened, beams = (
            fluent_starts(
                target,
                bound,
                hinge,
                ids,
                seed,
                windows,
                beam if s.beam_width > 0 else None,
                rank,
                most_active,
            )
            if FLUENT in streams and from_text(s)
            else (None, [0.0] * len(ids), [[] for _ in ids])
        )
        init = soft.best_ids[owners].clone()
        budgets = [budget for _ in ids for _, budget in plan.rows]
        budgets = soft_leftover(plan, budgets, owners, streams, soft.forward_passes)
        for row, (o, st) in enumerate(zip(owners, streams, strict=True)):
            window = most_active[o]
            if st == UNCONSTRAINED and window is not None and window[1] > soft.best_key[o]:
                init[row] = window[0]
            if st == FLUENT and starts is not None:
                init[row] = starts[o]
                spent = screened[o] / s.population
                budgets[row] = None if budgets[row] is None else budgets[row] - spent
        pop = Population(
            feature_ids=fids[owners],
            init_ids=init,
            generators=[
                generator(seed, ids[o], st, m)
                for o, st, m in zip(owners, streams, members, strict=True)
            ],
            scale=[float(scale[o]) for o in owners],
            hinge=[
                None if st not in FLUENT_STREAMS else soft_hinge if st == FLUENT_SOFT else hinge
                for st in streams
            ],
            budget=budgets,
            weight=[member_weight(weight, m) for m in members],
            pool=[
                o if st == FLUENT and s.population > 1 else None
                for o, st in zip(owners, streams, strict=True)
            ],
            levels=(hinge, soft_hinge),
        )
        refined = refine(target, vocab, pop, s, progress=bar)
    finally:
        bar.close()
    if starts is None:
        screened = [0.0] * len(ids)
    names = [
        TRAJECTORY_NAMES[st] + (f"_{m + 1}" if m else "")
        for st, m in zip(streams, members, strict=True)
    ]
    records = checked_records(model, target, ids, maxima, references, soft, refined, owners,
                              names, s, bound, reference_tokens, screened, windows, beams)  # fmt: skip
    seconds = (time.perf_counter() - start) / len(ids)
    for record in records:
        record.seconds = seconds
        record.length = s.length
    logger.info(
        "inverted %d features in %.1f s: unconstrained median %.3g, headline within %.2f nats/byte "
        "for %d of %d",
        len(ids), seconds * len(ids),
        float(torch.tensor([r.refined_activation for r in records]).median()),
        bound.cross_entropy, sum(r.headline is not None for r in records), len(records),
    )  # fmt: skip
    return records


def optimize_feature(
    model,
    sae,
    feature_id: int,
    opt_cfg: Any = None,
    *,
    seed: int = 0,
    dataset_max: float | None = None,
    reference_max: float | None = None,
    reference_tokens: int | None = None,
    exemplar_tokens: Sequence[int] | None = None,
    fluency_bound: FluencyBound | None = None,
    exclude_bos: bool = True,
    progress: bool = False,
) -> Inversion:
    """Invert one feature (``optimize_features`` with a batch of one)."""
    f = int(feature_id)
    (record,) = optimize_features(
        model, sae, [f], opt_cfg, seed=seed,
        dataset_max=None if dataset_max is None else {f: float(dataset_max)},
        reference_max=None if reference_max is None else {f: float(reference_max)},
        reference_tokens=reference_tokens,
        exemplar_tokens=None if exemplar_tokens is None else [list(exemplar_tokens)],
        fluency_bound=fluency_bound, exclude_bos=exclude_bos, progress=progress,
    )  # fmt: skip
    return record
