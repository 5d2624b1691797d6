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
from saeinverse.experiment import as_config, load_experiment_models, sae_identity
from saeinverse.io import load_json, save_json
from saeinverse.runs import Run, digest

logger = logging.getLogger(__name__)


@dataclass
class Context:
    """What stages share: the config, the run, the loaded models and earlier stages' results."""

    config: Config
    run: Run
    model: Any = None
    sae: Any = None
    lm: Any = None
    tokenizer: Any = None
    results: dict[str, Any] = field(default_factory=dict)
    hashes: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Stage:
    """One pipeline stage."""

    name: str
    toggle: str | None
    """The ``pipeline`` key that switches it on (None: always runs)."""
    inputs: tuple[str, ...]
    """Earlier stages whose results it reads."""
    config_part: Callable[[Config], Any]
    """The slice of the config its result depends on."""
    compute: Callable[[Context, Path], Any]
    load: Callable[[Context, Path], Any]


def _models_part(config: Config) -> Any:
    return {
        "model": config.model.to_dict(),
        "sae": sae_identity(config),
        "dtype": config.hardware.dtype,
    }


def _compute_models(ctx: Context, folder: Path) -> dict[str, Any]:
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
        "sae": sae_identity(ctx.config),
    }
    save_json(folder / "models.json", summary)
    return summary


def _load_models(ctx: Context, folder: Path) -> dict[str, Any]:
    return load_json(folder / "models.json")


STAGES: list[Stage] = [
    Stage("models", None, (), _models_part, _compute_models, _load_models),
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
) -> Context:
    """Run every stage whose ``pipeline`` toggle is on; return the context with all results.

    ``force`` names stages to recompute ('all' for every stage); ``models`` passes already
    loaded ``(model, sae, lm, tokenizer)`` instead of loading them from the config.
    """
    config = as_config(config)
    _seed_everything(config.seed)
    force = set(force)
    unknown = force - set(stage_names()) - {"all"}
    if unknown:
        from saeinverse.errors import ConfigError

        raise ConfigError(
            f"--force names unknown stage(s) {sorted(unknown)}; valid: {stage_names() + ['all']}"
        )
    run = Run.create(config, root=run_dir, force=force)
    model, sae, lm, tokenizer = models if models is not None else load_experiment_models(config)
    ctx = Context(config=config, run=run, model=model, sae=sae, lm=lm, tokenizer=tokenizer)
    for stage in STAGES:
        if stage.toggle and not getattr(config.pipeline, stage.toggle):
            logger.info("stage %s: off (pipeline.%s = false)", stage.name, stage.toggle)
            continue
        missing = [name for name in stage.inputs if name not in ctx.results]
        if missing:
            logger.warning("stage %s: skipped, it needs %s which did not run", stage.name, missing)
            continue
        stage_hash = digest(
            stage.name, stage.config_part(config), [ctx.hashes[i] for i in stage.inputs]
        )
        ctx.results[stage.name] = run.run_stage(
            stage.name,
            stage_hash,
            lambda folder, s=stage: s.compute(ctx, folder),
            lambda folder, s=stage: s.load(ctx, folder),
        )
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
