"""The batch pipeline: each stage is one entry in ``STAGES``, run in order when its toggle is on.

A stage reads the results of earlier stages from the context, writes its artifacts into its own
run folder, and is reused when its hash (its config, the models, the stages it reads) matches.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from saeinverse.config import Config
from saeinverse.errors import ConfigError
from saeinverse.io import load_json, save_json
from saeinverse.models.from_config import (
    as_config,
    load_experiment_models,
    sae_identity,
    weights_fingerprint,
)
from saeinverse.run.rundir import Run, digest

logger = logging.getLogger(__name__)


@dataclass
class Context:
    """What stages share: the config, the run, the models (loaded on first use) and results."""

    config: Config
    run: Run
    loaded: tuple[Any, Any, Any, Any] | None = None
    """``(model, sae, lm, tokenizer)`` once loaded; a rerun that reuses every stage loads nothing."""
    results: dict[str, Any] = field(default_factory=dict)
    hashes: dict[str, str] = field(default_factory=dict)
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
    """One pipeline stage."""

    name: str
    toggle: str | None
    """The ``pipeline`` key that switches it on (None: always runs)."""
    inputs: tuple[str, ...]
    """Earlier stages whose results it needs (it is skipped when one did not run)."""
    config_part: Callable[[Config], Any]
    """The slice of the config its result depends on."""
    compute: Callable[[Context, Path], Any]
    load: Callable[[Context, Path], Any]
    optional: tuple[str, ...] = ()
    """Earlier stages it reads when they ran."""


def models_identity(ctx: Context) -> Any:
    """The models' identity: weight fingerprints of models passed in, else the config's names.

    A default SAE that is not trained yet is trained first, so its identity is final.
    """
    config = ctx.config
    if ctx.loaded is not None:
        model, sae = ctx.loaded[0], ctx.loaded[1]
        return {
            "model": [model.cfg.model_name, weights_fingerprint(model)],
            "sae": [sae.cfg.metadata.hook_name, weights_fingerprint(sae)],
        }
    if (
        not (config.sae.release or config.sae.path)
        and sae_identity(config)["weights_mtime"] is None
    ):
        ctx.models()
    return {
        "model": config.model.to_dict(),
        "sae": sae_identity(config),
        "dtype": config.hardware.dtype,
    }


def _compute_models(ctx: Context, folder: Path) -> dict[str, Any]:
    ctx.models()
    sae_cfg = ctx.sae.cfg
    summary = {
        "model": ctx.config.model.name,
        "n_layers": ctx.model.cfg.n_layers,
        "d_model": ctx.model.cfg.d_model,
        "d_vocab": ctx.model.cfg.d_vocab,
        "sae_class": type(ctx.sae).__name__,
        "hook_name": sae_cfg.metadata.hook_name,
        "d_in": sae_cfg.d_in,
        "d_sae": sae_cfg.d_sae,
        "identity": ctx.identity,
    }
    save_json(folder / "models.json", summary)
    return summary


def _load_models(ctx: Context, folder: Path) -> dict[str, Any]:
    return load_json(folder / "models.json")


STAGES: list[Stage] = [
    Stage("models", None, (), lambda config: None, _compute_models, _load_models),
]


def register_stage(stage: Stage) -> None:
    """Add a stage at the end of the pipeline (names must be unique)."""
    if any(s.name == stage.name for s in STAGES):
        raise ValueError(f"a stage named {stage.name!r} is already registered")
    STAGES.append(stage)


def stage_names() -> list[str]:
    """Names accepted by ``--force``."""
    return [s.name for s in STAGES]


def run_experiment(
    config: Config | Mapping[str, Any] | None = None,
    *,
    force: Iterable[str] = (),
    run_dir: str | Path | None = None,
    models: tuple[Any, Any, Any, Any] | None = None,
    until: str | None = None,
) -> Context:
    """Run every stage whose ``pipeline`` toggle is on; return the context with all results.

    ``force`` names stages to recompute ('all' for every stage); ``models`` passes already
    loaded ``(model, sae, lm, tokenizer)`` instead of loading them from the config (they are
    otherwise loaded only when a stage has to compute); ``until`` stops after that stage.
    """
    import saeinverse.run.stages  # noqa: F401  (registers the stages)

    config = as_config(config)
    _seed_everything(config.seed)
    force = set(force)
    unknown = sorted(force - set(stage_names()) - {"all"})
    if until is not None and until not in stage_names():
        unknown.append(until)
    if unknown:
        raise ConfigError(f"unknown stage(s) {unknown}; valid: {stage_names() + ['all']}")
    run = Run.create(config, root=run_dir, force=force)
    ctx = Context(config=config, run=run, loaded=tuple(models) if models is not None else None)
    ctx.identity = models_identity(ctx)
    last = stage_names().index(until) + 1 if until else len(STAGES)
    for stage in STAGES[:last]:
        if stage.toggle and not getattr(config.pipeline, stage.toggle):
            logger.info("stage %s: off (pipeline.%s = false)", stage.name, stage.toggle)
            continue
        missing = [name for name in stage.inputs if name not in ctx.results]
        if missing:
            logger.warning("stage %s: skipped, it needs %s which did not run", stage.name, missing)
            continue
        upstream = [ctx.hashes.get(name) for name in stage.inputs + stage.optional]
        stage_hash = digest(stage.name, stage.config_part(config), upstream, ctx.identity)
        try:
            ctx.results[stage.name] = run.run_stage(
                stage.name,
                stage_hash,
                lambda folder, s=stage: s.compute(ctx, folder),
                lambda folder, s=stage: s.load(ctx, folder),
            )
        except StageSkipped as why:
            logger.warning("stage %s: skipped, %s", stage.name, why)
            run.discard(stage.name)
            continue
        ctx.hashes[stage.name] = stage_hash
    logger.info("run finished: %s", run.root)
    return ctx


def _seed_everything(seed: int) -> None:
    import random

    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
