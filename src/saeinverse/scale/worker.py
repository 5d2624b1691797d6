"""The unit workers: collect, invert or explain one unit over models loaded once (a Ray actor
that loads its own, or the local engine's worker over the pipeline's).

Each method is the local stage function applied to one unit (a shard of prompts, a batch of
features): the same code as one process, so the engine changes where work runs, not what it
computes. The stage's config travels with each unit, so one pool serves every stage of a run
(models loaded once); a Ray worker loads the explanation LM on its first explanation unit only.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from typing import Any

from saeinverse.config import Config

logger = logging.getLogger(__name__)


class UnitWorker:
    """Runs units over models already loaded: ``model`` and ``sae``, and optionally the
    explanation LM (``lm``, ``tokenizer``) for ``config``'s explainer (else loaded when needed).

    The local engine's pool holds one over the pipeline's models; ``StageWorker`` (a Ray actor)
    loads its own.
    """

    def __init__(
        self, config: Config, model: Any, sae: Any, lm: Any = None, tokenizer: Any = None
    ) -> None:
        self.config, self.model, self.sae = config, model, sae
        self._lm: tuple[Any, Any] | None = None
        """((explainer, llm_name), (lm, tokenizer)) once an explanation unit ran."""
        if lm is not None:
            self._lm = (
                (config.explanation.explainer, config.explanation.llm_name),
                (lm, tokenizer),
            )

    def ready(self) -> str:
        """Where this worker runs (for logs): host, pid and device."""
        import socket

        return f"{socket.gethostname()} pid {os.getpid()} on {self.model.cfg.device}"

    def cpu_seconds(self) -> float:
        """CPU time this worker process has used (benchmarks: cores actually obtained)."""
        import time

        return time.process_time()

    def collect(self, prompts: Sequence[str], config: Config):
        """``collect_activations`` over one shard: ``FeatureStats`` with shard-local prompt ids,
        or None when no prompt of the shard holds a token after the start token."""
        from saeinverse.collect.activations import collect_activations
        from saeinverse.errors import DataError

        try:
            return collect_activations(
                self.model, self.sae, prompts, config.data, seed=config.seed, progress=False
            )
        except DataError as err:
            logger.warning("a shard of %d prompts is empty after tokenizing: %s", len(prompts), err)
            return None

    def count_tokens(self, prompts: Sequence[str], config: Config) -> list[int]:
        """Collected tokens of each prompt (for a ``data.n_tokens`` budget)."""
        from saeinverse.scale.prompts import token_counter

        return token_counter(self.model, config)(prompts)

    def invert(self, feature_ids: Sequence[int], kwargs: Mapping[str, Any], config: Config):
        """``optimize_features`` over one batch of features (``kwargs``: its keyword arguments)."""
        from saeinverse.invert import optimize_features

        return optimize_features(
            self.model, self.sae, list(feature_ids), config.optimization,
            **{"seed": config.seed, **kwargs, "progress": False},
        )  # fmt: skip

    def fluency_bound(self, config: Config, exclude_bos: bool, seed: int):
        """The default real-text fluency bound inversion measures when it is given none."""
        from saeinverse.invert import FeatureTarget
        from saeinverse.invert.fluency import default_bound

        target = FeatureTarget(self.model, self.sae, config.optimization.position, exclude_bos)
        return default_bound(target, config.optimization, seed)

    def explain(self, feature_ids: Sequence[int], inversions: Any, config: Config, stats: Any):
        """``generate_explanations`` over one batch of features."""
        from saeinverse.explain import generate_explanations

        lm, tokenizer = self._explanation_lm(config)
        return generate_explanations(
            self.model, self.sae, list(feature_ids), lm, tokenizer, config.explanation,
            stats=stats, inversions=inversions, seed=config.seed, progress=False,
        )  # fmt: skip

    def _explanation_lm(self, config: Config) -> tuple[Any, Any]:
        from saeinverse.models.from_config import load_explanation_lm

        key = (config.explanation.explainer, config.explanation.llm_name)
        if self._lm is None or self._lm[0] != key:
            self._lm = (key, load_explanation_lm(config))
        return self._lm[1]


class StageWorker(UnitWorker):
    """One Ray worker process: ``config``'s model and SAE on its device, ``threads`` torch threads."""

    def __init__(self, config: Config, threads: int, env: Mapping[str, str]) -> None:
        import torch

        os.environ.update(env)  # caches and hub mode, as the driver has them
        torch.set_num_threads(int(threads))
        from saeinverse.models.from_config import load_experiment_sae, load_subject_model

        model = load_subject_model(config)
        super().__init__(config, model, load_experiment_sae(config, model))
