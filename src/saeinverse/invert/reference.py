"""What inversion is measured against, as a step of its own: the reference maximum and the
real-text fluency bound.

- ``maximum``: each feature's maximum over the bundled corpus (``collect.reference``, cached per
  model and SAE), or over the run's collection when that counted more tokens;
- ``windows``: each target feature's most active windows of the reference pass
  (``collect.reference.RealWindow``), real text that fires, where a fluent search may start
  beside the run's own exemplars;
- ``bound``: the real-text cross-entropy bound (``invert.fluency``) measured on windows of the
  run's own prompts (the default corpus without a collection), its windows and their
  cross-entropies kept, since fluent rows may start from them.

Inversion reads both (``InvertInputs``); the report names them on every card.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from saeinverse.artifacts import REFERENCE_FILE, REFERENCE_TENSORS_FILE
from saeinverse.collect.reference import (
    RealWindow,
    ReferenceMax,
    cached_reference_max,
    larger_of,
)
from saeinverse.config import DataConfig, OptimizationConfig
from saeinverse.errors import ArtifactError
from saeinverse.invert.fluency import FluencyBound, default_bound, measure_bound, stats_token_rows
from saeinverse.invert.objective import FeatureTarget
from saeinverse.io import load_json, load_tensors, save_json, save_tensors

logger = logging.getLogger(__name__)


@dataclass
class RunReference:
    """The reference maximum and the fluency bound of one run."""

    maximum: ReferenceMax
    bound: FluencyBound
    windows: dict[int, list[RealWindow]] = field(default_factory=dict)
    """Per target feature, its most active reference windows, strongest first."""

    def save(self, folder: str | Path) -> None:
        folder = Path(folder)
        tensors = {"max_activation": self.maximum.max_activation.float()}
        if self.bound.windows is not None and self.bound.window_ce is not None:
            tensors["windows"] = self.bound.windows.long().cpu()
            tensors["window_ce"] = self.bound.window_ce.float().cpu()
        save_tensors(folder / REFERENCE_TENSORS_FILE, tensors)
        save_json(
            folder / REFERENCE_FILE,
            {
                "n_tokens": self.maximum.n_tokens,
                "source": self.maximum.source,
                "name": self.maximum.name,
                "bound": self.bound.to_dict(),
                "windows": {str(f): [w.to_dict() for w in ws] for f, ws in self.windows.items()},
            },
        )

    @classmethod
    def load(cls, folder: str | Path) -> RunReference:
        folder = Path(folder)
        try:
            info = load_json(folder / REFERENCE_FILE)
            tensors = load_tensors(folder / REFERENCE_TENSORS_FILE)
            maximum = ReferenceMax(tensors["max_activation"], int(info["n_tokens"]), info["source"])
            bound = FluencyBound(**info["bound"])
            windows = {
                int(f): [RealWindow.from_dict(w) for w in ws]
                for f, ws in info.get("windows", {}).items()
            }
        except (KeyError, TypeError, ValueError, json.JSONDecodeError) as err:
            raise ArtifactError(f"reference artifacts in {folder} are unreadable: {err}") from err
        if "windows" not in info:
            logger.warning(
                "%s was written before reference windows were kept: inversion starts from the "
                "run's exemplars only (rerun with --force reference to keep them)",
                folder / REFERENCE_FILE,
            )
        bound.windows = tensors.get("windows")
        bound.window_ce = tensors.get("window_ce")
        return cls(maximum, bound, windows)


def measure_reference(
    model,
    sae,
    opt_cfg: OptimizationConfig,
    data_cfg: DataConfig,
    *,
    seed: int,
    cache: str | Path,
    stats=None,
    feature_ids: Sequence[int] = (),
) -> RunReference:
    """The run's reference maximum and fluency bound (cached in ``cache`` where they can be),
    with the reference windows of ``feature_ids``."""
    maximum = cached_reference_max(
        model, sae, cache, seed=seed, max_tokens=opt_cfg.reference_tokens,
        window=data_cfg.max_length, exclude_bos=data_cfg.exclude_bos,
    )  # fmt: skip
    maximum = larger_of(maximum, stats)
    target = FeatureTarget(model, sae, opt_cfg.position, data_cfg.exclude_bos)
    if stats is None:
        bound = default_bound(target, opt_cfg, seed)
    else:
        rows = stats_token_rows(stats, model)
        bound = measure_bound(
            target, rows, opt_cfg.length, opt_cfg.fluency_quantile, opt_cfg.fluency_windows,
            seed, cache=cache,
        )  # fmt: skip
    return RunReference(maximum, bound, real_windows(maximum, feature_ids, model, seed))


def real_windows(
    maximum: ReferenceMax, feature_ids: Sequence[int], model, seed: int
) -> dict[int, list[RealWindow]]:
    """Each feature's reference windows as ``RealWindow``s (texts named by ``text_hash``); empty
    when the reference kept none."""
    if maximum.windows is None or not feature_ids:
        return {}
    from saeinverse.data.corpus import default_corpus
    from saeinverse.models.hooks import start_token_id

    texts, start = default_corpus(seed=seed).train, start_token_id(model)
    return {int(f): maximum.windows.real_windows(int(f), texts, start) for f in feature_ids}
