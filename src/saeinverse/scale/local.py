"""The local engine (``scale.engine: local``, the default): the Ray engine's unit plan, in this
process, over the models the pipeline already loaded. No Ray import.

Collection runs shard by shard (``scale.shard_prompts`` prompts each), inversion batch by batch
(``scale.feature_batch`` features each), through the same code as the Ray engine
(``collect_sharded``, ``inverter``, ``explainer``, ``run_units``, ``UnitWorker``): each unit is
saved under ``<stage folder>/units/<plan>/`` as it finishes, so a kill -9 loses at most the unit
being computed, and the rerun logs ``reused K of N units``.

What the units change (nothing beyond float64 rounding, and nothing by default on the tiny run):

- collection: shards are merged with ``FeatureStats.merge`` (see ``saeinverse.scale.sharded``):
  counts, maxima, histograms, exemplars and the prompt × feature matrix equal one pass; the
  float64 sums agree to rounding (bit-equal with one shard: ``data.n_prompts`` ≤
  ``scale.shard_prompts``);
- inversion: each feature draws its randomness from its own stream, and a feature's optimisation
  does not read the other features of its batch, so the records equal one call over all features;
- explanation: the shuffled baseline scores each feature against *another feature of its call*
  (a derangement over the call's features). To keep results identical to one call, explanations
  that are scored (``explanation.score``, the default) run as **one unit of all the features**:
  saved once done, but a kill mid-stage redoes the whole stage. Unscored explanations are per
  feature and checkpoint per feature batch.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from saeinverse.config import Config
from saeinverse.scale.engine import Unit
from saeinverse.scale.fanout import explainer, inverter
from saeinverse.scale.prompts import token_counter
from saeinverse.scale.sharded import collect_sharded
from saeinverse.scale.worker import UnitWorker

logger = logging.getLogger(__name__)


class LocalPool:
    """``WorkerPool``'s interface over one in-process ``UnitWorker``: units run one at a time,
    in order, in this process (its torch threads)."""

    restarts = 0
    """Never restarted (a crash here ends the process; its saved units stay)."""

    def __init__(
        self, config: Config, model: Any, sae: Any, lm: Any = None, tokenizer: Any = None,
        identity: Any = None,
    ) -> None:  # fmt: skip
        self.worker = UnitWorker(config, model, sae, lm, tokenizer)
        self.identity = identity
        """The models' identity (the pipeline's, e.g. weight fingerprints of models passed in):
        part of every plan, so units of other models are never reused."""
        self.current: int | None = None
        """The unit being computed (None between units)."""

    def run(
        self, method: str, units: Sequence[Unit], shared: tuple = ()
    ) -> Iterator[tuple[int, Any]]:
        """Yield ``(unit.index, method(*unit.args, *shared))`` for every unit, in order."""
        call = getattr(self.worker, method)
        for unit in units:
            self.current = unit.index
            try:
                result = call(*unit.args, *shared)
            finally:
                self.current = None
            yield unit.index, result

    def call(self, method: str, *args: Any) -> Any:
        return getattr(self.worker, method)(*args)

    def in_flight(self) -> list[tuple[Any, int]]:
        return [] if self.current is None else [(self.worker, self.current)]

    def put(self, value: Any) -> Any:
        return value  # one process: nothing to ship

    def close(self) -> None:
        """Nothing to stop (the models belong to the caller)."""


def collect_local(config: Config, folder: str | Path, pool: LocalPool, *, progress: bool = True):
    """The collection stage: the config's prompts (drawn as ``draw_prompts`` does), collected
    shard by shard over ``pool``'s models; one merged ``FeatureStats``."""
    count_tokens = token_counter(pool.worker.model, config)
    return collect_sharded(config, folder, progress=progress, count_tokens=count_tokens, pool=pool)


def local_inverter(config: Config, folder: str | Path, pool: LocalPool) -> Callable[..., list]:
    """``optimize_features`` with its signature, batch by batch over ``pool``'s models."""
    return inverter(config, folder, pool=pool)


def local_explainer(config: Config, folder: str | Path, pool: LocalPool) -> Callable[..., list]:
    """``generate_explanations`` with its signature, checkpointed per feature batch when
    unscored, as one unit when scored (the shuffled baseline spans all features)."""
    return explainer(config, folder, pool=pool, whole_when_scored=True)
