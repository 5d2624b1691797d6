"""The batch pipeline: run each stage of ``saeinverse.run.stages.STAGES`` in order when its
toggle is on.

A stage reads the results of earlier stages from the context, writes its artifacts into its own
run folder, and is reused when its hash (its config, the models, the outputs of the stages it
reads) matches and its files match their checksums. Validate, then touch: the config and the
ranges that need the model are checked, under the run's lock, before anything in the run
directory is written or removed.
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from saeinverse.artifacts import STAGE_NAMES
from saeinverse.config import Config
from saeinverse.errors import ConfigError, SaeInverseError
from saeinverse.models.from_config import as_config, sae_identity
from saeinverse.models.weights import weights_fingerprint
from saeinverse.run.context import Context, StageSkipped
from saeinverse.run.rundir import Run, digest
from saeinverse.run.stages import STAGES

logger = logging.getLogger(__name__)

__all__ = ["Context", "StageSkipped", "run_experiment", "stage_names"]


def stage_names() -> list[str]:
    """Names accepted by ``--force``."""
    return list(STAGE_NAMES)


def run_experiment(
    config: Config | Mapping[str, Any] | None = None,
    *,
    force: Iterable[str] = (),
    run_dir: str | Path | None = None,
    models: tuple[Any, Any, Any, Any] | None = None,
    until: str | None = None,
    wait: bool = False,
) -> Context:
    """Run every stage whose ``pipeline`` toggle is on; return the context with all results.

    ``force`` names stages to recompute ('all' for every stage); ``models`` passes already
    loaded ``(model, sae, lm, tokenizer)`` instead of loading them from the config (they are
    otherwise loaded only when a stage has to compute); ``until`` stops after that stage;
    ``wait`` waits for another run holding the directory instead of refusing.
    ``data.use_cached_data: false`` recollects the statistics even when they are finished.
    """
    config = as_config(config)
    force = _checked_force(force, until)
    if not config.data.use_cached_data:
        force.add("collect")
    root = Path(run_dir) if run_dir is not None else Path(config.output.dir) / config.output.name
    run = Run.open(root, force=force)
    fresh = not root.exists()
    with run.lock(wait=wait):
        ctx = Context(config=config, run=run, loaded=tuple(models) if models is not None else None)
        _seed_everything(config.seed)
        try:
            ctx.identity = models_identity(ctx)
            check_model_ranges(ctx)
        except BaseException:
            if fresh:  # a rejected run leaves no trace, not even an empty folder
                shutil.rmtree(root, ignore_errors=True)
            raise
        run.write_config(config)
        last = STAGE_NAMES.index(until) + 1 if until else len(STAGES)
        for stage in STAGES[:last]:
            _run_stage(ctx, stage)
    logger.info("run finished: %s", run.root)
    return ctx


def _checked_force(force: Iterable[str], until: str | None) -> set[str]:
    force = set(force)
    unknown = sorted(force - set(STAGE_NAMES) - {"all"})
    if until is not None and until not in STAGE_NAMES:
        unknown.append(until)
    if unknown:
        raise ConfigError(f"unknown stage(s) {unknown}; valid: {[*STAGE_NAMES, 'all']}")
    return force


def _run_stage(ctx: Context, stage: Any) -> None:
    config, run = ctx.config, ctx.run
    if stage.toggle and not getattr(config.pipeline, stage.toggle):
        logger.info("stage %s: off (pipeline.%s = false)", stage.name, stage.toggle)
        return
    missing = [name for name in stage.inputs if name not in ctx.results]
    if missing:
        logger.warning("stage %s: skipped, it needs %s which did not run", stage.name, missing)
        return
    read = stage.inputs + stage.optional
    upstream = [ctx.outputs.get(name) for name in read]
    stage_hash = digest(stage.name, stage.config_part(config), upstream, ctx.identity)
    try:
        ctx.results[stage.name] = run.run_stage(
            stage.name,
            stage_hash,
            lambda folder, s=stage: s.compute(ctx, folder),
            lambda folder, s=stage: s.load(ctx, folder),
            inputs={name: ctx.outputs[name] for name in read if name in ctx.outputs},
        )
    except StageSkipped as why:
        logger.warning("stage %s: skipped, %s", stage.name, why)
        run.discard(stage.name)
        return
    ctx.hashes[stage.name] = stage_hash
    ctx.outputs[stage.name] = run.output(stage.name)


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


def check_model_ranges(ctx: Context) -> None:
    """The checks that need the model, before any stage starts: explicit feature ids < d_sae.

    ``d_sae`` comes from the loaded SAE, or from a finished ``models`` stage of the same
    identity (a rerun that reuses everything loads nothing).
    """
    ids = ctx.config.clustering.selection.feature_ids
    if not ids:
        return
    d_sae = _d_sae(ctx)
    bad = sorted({int(i) for i in ids if not 0 <= int(i) < d_sae})
    if bad:
        raise ConfigError(
            f"clustering.selection.feature_ids {bad} out of range: the SAE has {d_sae} "
            f"features (valid ids 0..{d_sae - 1})"
        )


def _d_sae(ctx: Context) -> int:
    models_hash = digest("models", None, [], ctx.identity)
    if ctx.loaded is None and ctx.run.is_complete("models", models_hash):
        try:
            return int(STAGES[0].load(ctx, ctx.run.stage_dir("models"))["d_sae"])
        except (SaeInverseError, KeyError, TypeError, ValueError):
            pass  # unreadable: load the SAE instead
    return int(ctx.sae.cfg.d_sae)


def _seed_everything(seed: int) -> None:
    import random

    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
