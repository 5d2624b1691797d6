"""The explanation stage over a pool: batches of features, in two passes.

1. **Draft** (per batch): build each feature's evidence and write its explanation.
2. **Score** (per batch): score each explanation on its held-out evidence against its shuffled
   baseline, judge it, re-check its refined prompt.

The baselines (``Baselines.of``) pair each feature with another by a derangement over *every*
feature of the stage, and the scoring pass starts only once every draft is written, so the results are the same whatever the batching and wherever the batches
run: equal to one ``generate_explanations`` call over all the features. Both passes save each
batch as it finishes (``saeinverse.units``).
"""

from __future__ import annotations

import pickle
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from saeinverse.artifacts import EXPLANATIONS_FILE
from saeinverse.config import ExplanationConfig
from saeinverse.explain.explainers import make_backend
from saeinverse.explain.results import ExplanationResult, load_explanations, save_explanations
from saeinverse.explain.sampling import build_evidence
from saeinverse.explain.stage import Baselines, Draft, draft_explanations, score_explanations
from saeinverse.io import atomic_open
from saeinverse.units import Checkpoints, Models, Pool, Unit, run_units, split

if TYPE_CHECKING:
    from saeinverse.invert import Inversion

DRAFTS_FILE = "drafts.pickle"
"""A draft batch's checkpoint (evidence and unscored results; read back only by this module)."""


def explain_features(
    pool: Pool,
    feature_ids: Sequence[int],
    cfg: ExplanationConfig,
    *,
    stats: Any,
    inversions: Sequence[Inversion] = (),
    seed: int,
    batch_size: int,
    checkpoints: Checkpoints | None = None,
    progress: bool = True,
) -> list[ExplanationResult]:
    """One scored ``ExplanationResult`` per feature, in order (see the module docstring)."""
    ids = [int(f) for f in feature_ids]
    by_id = {int(inv.feature_id): inv for inv in inversions}
    batches = split(ids, batch_size)
    units = [Unit(i, len(b), (b, _of(by_id, b))) for i, b in enumerate(batches)]
    store = None
    if checkpoints is not None:
        store = checkpoints.store("draft", units, DRAFTS_FILE, _save_drafts, _load_drafts)
    avoid = tuple(sorted({t for inv in inversions for t in inv.window_texts}))
    drafted = run_units(
        pool, draft_batch, units, store=store, shared=(stats, cfg, int(seed), avoid),
        desc="explain", unit_name="feature", progress=progress,
    )  # fmt: skip
    drafts = list(drafted)
    baselines = Baselines.of([d for batch in drafts for d in batch], seed)
    units = [
        Unit(i, len(b), (d, _of(by_id, b)))
        for i, (b, d) in enumerate(zip(batches, drafts, strict=True))
    ]
    if checkpoints is not None:
        store = checkpoints.store(
            "batch", units, EXPLANATIONS_FILE, save_explanations, load_explanations
        )
    scored = run_units(
        pool, score_batch, units, store=store, shared=(baselines, cfg, int(seed)),
        desc="score explanations", unit_name="feature", progress=progress,
    )  # fmt: skip
    return [result for batch in scored for result in batch]


def draft_batch(
    models: Models,
    feature_ids: list[int],
    inversions: list[Inversion],
    stats: Any,
    cfg: ExplanationConfig,
    seed: int,
    avoid_texts: Sequence[str] = (),
) -> list[Draft]:
    """Evidence and explanation of one batch of features; ``avoid_texts``: the texts every
    inversion of the stage could start from (never drawn as extra prompts, in any batch)."""
    began = time.perf_counter()
    backend = make_backend(cfg, *models.explanation_lm(cfg))
    evidence = build_evidence(
        models.model, models.sae, feature_ids, stats, cfg,
        inversions={int(i.feature_id): i for i in inversions}, seed=seed, progress=False,
        avoid_texts=avoid_texts,
    )  # fmt: skip
    drafts = draft_explanations(backend, evidence)
    for draft in drafts:
        draft.result.seconds = (time.perf_counter() - began) / len(drafts)
    return drafts


def score_batch(
    models: Models,
    drafts: list[Draft],
    inversions: list[Inversion],
    baselines: Baselines,
    cfg: ExplanationConfig,
    seed: int,
) -> list[ExplanationResult]:
    """One batch's drafts scored against their shuffled baselines."""
    began = time.perf_counter()
    backend = make_backend(cfg, *models.explanation_lm(cfg))
    results = score_explanations(
        models.model, models.sae, backend, drafts, baselines, cfg,
        inversions={int(i.feature_id): i for i in inversions}, seed=seed,
    )  # fmt: skip
    for result in results:
        result.seconds = (result.seconds or 0.0) + (time.perf_counter() - began) / len(results)
    return results


def _of(by_id: Mapping[int, Inversion], ids: Sequence[int]) -> list[Inversion]:
    return [by_id[f] for f in ids if f in by_id]


def _save_drafts(folder: Path, drafts: list[Draft]) -> None:
    with atomic_open(Path(folder) / DRAFTS_FILE, "wb") as handle:
        pickle.dump(drafts, handle)


def _load_drafts(folder: Path) -> list[Draft]:
    with open(Path(folder) / DRAFTS_FILE, "rb") as handle:
        return pickle.load(handle)
