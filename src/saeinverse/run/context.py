"""What the pipeline's stages share: the ``Stage`` record and the run ``Context``."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from saeinverse.artifacts import StageSpec
from saeinverse.config import Config
from saeinverse.models.from_config import load_experiment_models
from saeinverse.run.rundir import Run


@dataclass
class Context:
    """What stages share: the config, the run, the models (loaded on first use) and results."""

    config: Config
    run: Run
    loaded: tuple[Any, Any, Any, Any] | None = None
    """``(model, sae, lm, tokenizer)`` once loaded; a rerun that reuses every stage loads nothing."""
    results: dict[str, Any] = field(default_factory=dict)
    hashes: dict[str, str] = field(default_factory=dict)
    """Stage name -> the hash it ran (or was reused) with."""
    outputs: dict[str, str] = field(default_factory=dict)
    """Stage name -> its output digest (its hash and its files' checksums)."""
    identity: Any = None
    """What identifies the models in every stage hash."""

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


class StageSkipped(Exception):
    """Raised by a stage that cannot run with what earlier stages produced (it is skipped)."""


@dataclass(frozen=True)
class Stage:
    """One pipeline stage: its row of ``saeinverse.artifacts.STAGES`` and its functions."""

    spec: StageSpec
    config_part: Callable[[Config], Any]
    """The slice of the config its result depends on."""
    compute: Callable[[Context, Path], Any]
    """Writes its artifacts into the folder and returns its result."""
    load: Callable[[Context, Path], Any]
    """Reads a finished stage's result back."""

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
