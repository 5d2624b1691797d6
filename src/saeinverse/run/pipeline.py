"""The batch pipeline: run each stage of ``saeinverse.run.stages.STAGES`` in order when its
toggle is on.

A stage reads the results of earlier stages from the context, writes its artifacts into its own
run folder, and is reused when its hash (the config values it reads, the models' identity, the
outputs of the stages it reads) matches and its files match their checksums. The long stages run
on the context's pool, chosen once per run (``Context.pool``). Validate, then touch: the config and the
ranges that need the model are checked, under the run's lock, before anything in the run
directory is written or removed.
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from saeinverse.artifacts import IDENTITY_FILE, STAGE_NAMES
from saeinverse.config import Config, read_values
from saeinverse.errors import ConfigError, SaeInverseError
from saeinverse.io import load_json, save_json
from saeinverse.models.from_config import as_config, weights_stamp
from saeinverse.models.identity import models_identity
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
            ctx.identity, remember = run_identity(ctx)
            check_model_ranges(ctx)
        except BaseException:
            if fresh:  # a rejected run leaves no trace, not even an empty folder
                shutil.rmtree(root, ignore_errors=True)
            raise
        run.write_config(config)
        if remember is not None:
            save_json(root / IDENTITY_FILE, remember)
        last = STAGE_NAMES.index(until) + 1 if until else len(STAGES)
        try:
            for stage in STAGES[:last]:
                _run_stage(ctx, stage)
        except BaseException:
            ctx.close_pool()  # its workers may still be busy with units nobody waits for
            raise
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
    stage_hash = stage_hash_of(ctx, stage)
    read = stage.inputs + stage.optional
    ctx.computing = stage_hash
    try:
        ctx.results[stage.name] = run.run_stage(
            stage.name,
            stage_hash,
            lambda folder, s=stage: s.compute(ctx, folder),
            stage.load,
            inputs={name: ctx.outputs[name] for name in read if name in ctx.outputs},
        )
    except StageSkipped as why:
        logger.warning("stage %s: skipped, %s", stage.name, why)
        run.discard(stage.name)
        return
    ctx.hashes[stage.name] = stage_hash
    ctx.outputs[stage.name] = run.output(stage.name)


def stage_hash_of(ctx: Context, stage: Any) -> str:
    """A stage's hash: the config values it reads, the models' identity and its inputs' outputs."""
    upstream = [ctx.outputs.get(name) for name in stage.inputs + stage.optional]
    values = read_values(ctx.config, stage.reads(ctx))
    return digest(stage.name, values, upstream, ctx.identity)


def run_identity(ctx: Context) -> tuple[str, dict[str, str] | None]:
    """The models' identity (``models.identity.models_identity``) for every stage hash, and
    what to remember of it in ``identity.json`` once the run is accepted (None: nothing new).

    Models passed in are fingerprinted. Models the config names are loaded and fingerprinted
    once; the run directory remembers the result beside the weights' stamp
    (``models.from_config.weights_stamp``: the config's model and SAE, the SAE files' times), so
    a rerun that reuses every stage loads nothing. A missing default SAE is trained first.
    """
    if ctx.loaded is not None:
        return models_identity(ctx.loaded[0], ctx.loaded[1]), None
    try:
        known = load_json(ctx.run.root / IDENTITY_FILE)
        if isinstance(known, dict) and known.get("stamp") == digest(weights_stamp(ctx.config)):
            return str(known["identity"]), None
    except (SaeInverseError, KeyError):
        pass  # absent or unreadable: fingerprint the models
    model, sae, _, _ = ctx.models()
    identity = models_identity(model, sae)
    return identity, {"stamp": digest(weights_stamp(ctx.config)), "identity": identity}


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
    models_hash = stage_hash_of(ctx, STAGES[0])
    if ctx.loaded is None and ctx.run.is_complete("models", models_hash):
        try:
            return int(STAGES[0].load(ctx.run.stage_dir("models"))["d_sae"])
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
