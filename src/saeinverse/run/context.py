"""What the pipeline's stages share: the ``Stage`` record and the run ``Context``.

The context holds the run's models (loaded on first use) and its pool, chosen here and nowhere
else: ``scale.engine: local`` runs units in this process over the loaded models, ``ray`` on Ray
workers (``saeinverse.scale``), at ``scale.address`` or on a local Ray.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from saeinverse.artifacts import StageSpec
from saeinverse.config import Config
from saeinverse.models.from_config import load_experiment_models, load_lm
from saeinverse.run.rundir import Run
from saeinverse.units import LocalPool, Models, Pool


@dataclass
class Context:
    """What stages share: the config, the run, the models (loaded on first use), the pool and
    results."""

    config: Config
    run: Run
    loaded: tuple[Any, Any, Any, Any] | None = None
    """``(model, sae, lm, tokenizer)`` once loaded; a rerun that reuses every stage loads nothing."""
    results: dict[str, Any] = field(default_factory=dict)
    hashes: dict[str, str] = field(default_factory=dict)
    """Stage name -> the hash it ran (or was reused) with."""
    outputs: dict[str, str] = field(default_factory=dict)
    """Stage name -> its output digest (its hash and its files' checksums)."""
    identity: str | None = None
    """The models' identity (``models.identity.models_identity``), in every stage hash."""
    computing: str = ""
    """The hash of the stage being computed (its unit checkpoints are keyed by it)."""
    _pool: Pool | None = None

    def models(self) -> tuple[Any, Any, Any, Any]:
        """``(model, sae, lm, tokenizer)``, loading them from the config on first call."""
        if self.loaded is None:
            self.loaded = load_experiment_models(self.config)
        return self.loaded

    @property
    def model(self) -> Any:
        return self.models()[0]

    @property
    def sae(self) -> Any:
        return self.models()[1]

    def pool(self) -> Pool:
        """The run's pool, chosen once by ``scale.engine``."""
        if self._pool is None:
            if self.config.scale.engine == "ray":
                from saeinverse.scale import ray_pool

                self.models()  # trains a missing default SAE once, before any worker loads it
                self._pool = ray_pool(self.config, str(self.identity))
            else:
                model, sae, lm, tokenizer = self.models()
                loader = functools.partial(load_lm, device=self.config.hardware.device)
                models = Models(model, sae, loader)
                explanation = self.config.explanation
                if lm is not None:
                    models.lms[(explanation.explainer, explanation.llm_name)] = (lm, tokenizer)
                self._pool = LocalPool(models)
        return self._pool

    def close_pool(self) -> None:
        """Stop the pool's workers (after a failure: they may be busy with units nobody waits for)."""
        if self._pool is not None:
            self._pool.close()
            self._pool = None


class StageSkipped(Exception):
    """Raised by a stage that cannot run with what earlier stages produced (it is skipped)."""


@dataclass(frozen=True)
class Stage:
    """One pipeline stage: its row of ``saeinverse.artifacts.STAGES`` and its functions."""

    spec: StageSpec
    reads: Callable[[Context], tuple[str, ...]]
    """The config paths its result depends on (see ``saeinverse.run.stages``)."""
    compute: Callable[[Context, Path], Any]
    """Writes its artifacts into the folder and returns its result."""
    load: Callable[[Path], Any]
    """Reads a finished stage's result back (``saeinverse.loaders``)."""

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def toggle(self) -> str | None:
        return self.spec.toggle

    @property
    def inputs(self) -> tuple[str, ...]:
        return self.spec.inputs

    @property
    def optional(self) -> tuple[str, ...]:
        return self.spec.optional
