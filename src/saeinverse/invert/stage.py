"""The inversion stage over a pool: ``InvertInputs`` in, one ``Inversion`` per feature out.

``InvertInputs`` is everything inversion reads besides its config section: per feature (an
``InvertTarget``) the collection's maximum, the reference maximum and the real windows a start
may take (the run's exemplars, then the reference pass's); for all features the reference's
token count, the real-text fluency bound and where the readable positions start.
``invert_features`` cuts the targets into batches, runs ``optimize_features`` on each batch on
the pool (``invert_batch``) and concatenates the records in the targets' order. A feature's randomness comes from its own stream (seed and feature id) and
its optimisation never reads the other features of its batch, so the batching changes where the
work runs, not its result (beyond float32 rounding of batched forwards).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from saeinverse.artifacts import INVERSIONS_FILE
from saeinverse.config import OptimizationConfig
from saeinverse.invert.context import config_at, search_length
from saeinverse.invert.fluency import FluencyBound
from saeinverse.invert.objective import FeatureTarget
from saeinverse.invert.optimize import optimize_features
from saeinverse.invert.result import Inversion, load_inversions, save_inversions
from saeinverse.models.paths import cache_dir
from saeinverse.units import Checkpoints, Models, Pool, Unit, run_units, split


@dataclass(frozen=True)
class InvertTarget:
    """One feature to invert, with what is known of it before the search."""

    feature_id: int
    dataset_max: float | None = None
    """Its maximum over the run's collection (None: no collection)."""
    reference_max: float | None = None
    """Its maximum over the reference sample (what ratios divide by)."""
    exemplar_windows: tuple[tuple[int, ...], ...] = ()
    """Its top exemplar windows, strongest first (the ``length`` tokens ending at each peak),
    never from a prompt that explanations hold out; empty without a collection."""
    exemplar_contexts: tuple[tuple[int, ...], ...] = ()
    """The same exemplars' longer contexts (up to ``max_length`` tokens ending at each peak), for
    a feature that does not fire in ``length`` tokens (``invert.context``); may be empty."""
    window_texts: tuple[str, ...] = ()
    """The corpus texts (``data.corpus.text_hash``) of the windows beyond the run's collection
    (the reference pass's) among ``exemplar_windows`` and ``exemplar_contexts``."""


@dataclass(frozen=True)
class InvertInputs:
    """What the inversion stage reads besides ``config.optimization`` and the seed."""

    targets: tuple[InvertTarget, ...]
    bound: FluencyBound | None = field(default=None, compare=False)
    """The real-text fluency bound (None: measured from the default corpus per batch)."""
    reference_tokens: int | None = None
    """Tokens the reference maximum was taken over (named on every ratio)."""
    exclude_bos: bool = True
    """Collection's ``data.exclude_bos``: where the readable positions start."""

    @property
    def feature_ids(self) -> list[int]:
        return [t.feature_id for t in self.targets]


def invert_features(
    pool: Pool,
    inputs: InvertInputs,
    opt_cfg: OptimizationConfig,
    *,
    seed: int,
    batch_size: int,
    checkpoints: Checkpoints | None = None,
    progress: bool = True,
) -> list[Inversion]:
    """One ``Inversion`` per target, in order: batches of ``batch_size`` features on ``pool``."""
    batches = split(list(inputs.targets), batch_size)
    units = [Unit(i, len(b), (tuple(b),)) for i, b in enumerate(batches)]
    store = None
    if checkpoints is not None:
        store = checkpoints.store("batch", units, INVERSIONS_FILE, save_inversions, load_inversions)
    shared = (inputs.bound, inputs.reference_tokens, inputs.exclude_bos, opt_cfg, int(seed))
    results = run_units(
        pool, invert_batch, units, store=store, shared=shared,
        desc="invert", unit_name="feature", progress=progress,
    )  # fmt: skip
    return [record for batch in results for record in batch]


def invert_batch(
    models: Models,
    targets: Sequence[InvertTarget],
    bound: FluencyBound | None,
    reference_tokens: int | None,
    exclude_bos: bool,
    opt_cfg: OptimizationConfig,
    seed: int,
) -> list[Inversion]:
    """``optimize_features`` over one batch of targets, one call per search length: a feature
    whose exemplar windows do not fire at ``length`` tokens runs at the length its exemplars'
    contexts need (``invert.context.search_length``), with the bound measured at that length and
    the same token-layers (``config_at``)."""
    probe = FeatureTarget(models.model, models.sae, opt_cfg.position, exclude_bos)
    plans = [
        search_length(probe, t.feature_id, t.exemplar_windows, t.exemplar_contexts,
                      opt_cfg.length, opt_cfg.max_length)
        for t in targets
    ]  # fmt: skip
    records: dict[int, Inversion] = {}
    for length in sorted({p.length for p in plans}):
        group = [(t, p) for t, p in zip(targets, plans, strict=True) if p.length == length]
        s = config_at(opt_cfg, length, probe)
        windows = {t.feature_id: p.windows for t, p in group}
        found = optimize_features(
            models.model, models.sae, [t.feature_id for t, _ in group], s, seed=seed,
            dataset_max={t.feature_id: t.dataset_max for t, _ in group},
            reference_max={t.feature_id: t.reference_max for t, _ in group},
            reference_tokens=reference_tokens,
            exemplar_windows=windows,
            fluency_bound=bound if length == opt_cfg.length else None,
            bound_cache=cache_dir() / "window-ce", exclude_bos=exclude_bos, progress=False,
        )  # fmt: skip
        for (t, p), record in zip(group, found, strict=True):
            record.forward_passes_by_stage["length"] = round(p.spent, 2)
            record.forward_passes = round(record.forward_passes + p.spent, 2)
            if length != opt_cfg.length:
                record.lengthened_from = opt_cfg.length
            record.window_texts = list(t.window_texts)
            records[t.feature_id] = record
    return [records[t.feature_id] for t in targets]
