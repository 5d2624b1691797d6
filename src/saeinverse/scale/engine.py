"""The Ray pool: actors that each load the model and SAE once and run units of work on them.

``RayPool`` has the interface of ``saeinverse.units.Pool``: ``run(fn, units, shared)`` sends each
unit to an idle actor as ``fn(models, *unit.args, *shared)`` and yields results as they finish.
Where the units come from, how they are checkpointed and merged is the stages' own business
(``saeinverse.units``); this module is only what is Ray's: joining or starting the cluster,
placing actors (CPUs, GPUs per worker), and replacing a worker that dies mid-unit (killed, out
of memory, its node lost) with a fresh actor that gets its unit again. A unit that raises an
ordinary exception fails the stage (a bug or a bad input does not get better by retrying).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from saeinverse.config import Config, ScaleConfig
from saeinverse.errors import ConfigError, SaeInverseError
from saeinverse.io import digest
from saeinverse.units import Unit

logger = logging.getLogger(__name__)

FORWARDED_ENV = ("SAEINVERSE_", "HF_", "TRANSFORMERS_")
"""Environment variables (by prefix) a worker gets from the driver: caches and hub mode."""
MAX_RESTARTS_PER_WORKER = 3
"""A stage gives up after this many worker deaths per worker."""


class ScaleError(SaeInverseError):
    """The Ray engine cannot run: Ray missing, a cluster too small, workers dying over and over."""


# ----------------------------------------------------------------------------- Ray session


def require_ray():
    """The ``ray`` module, or a ScaleError saying how to install it."""
    try:
        import ray
    except ImportError as err:
        raise ScaleError(
            "scale.engine='ray' needs Ray: pip install 'saeinverse[ray]' (or set scale.engine=local)"
        ) from err
    return ray


def ensure_ray(scale: ScaleConfig):
    """Join the cluster at ``scale.address``, or start a local Ray; reuse one already running."""
    ray = require_ray()
    if ray.is_initialized():
        return ray
    if scale.address:
        logger.info("joining the Ray cluster at %s", scale.address)
        ray.init(address=scale.address, log_to_driver=False)
    else:
        cpus = max(os.cpu_count() or 1, scale.workers * scale.threads_per_worker)
        logger.info("starting a local Ray with %d CPUs", cpus)
        ray.init(num_cpus=cpus, include_dashboard=False, log_to_driver=False)
    return ray


def _check_capacity(ray, scale: ScaleConfig) -> None:
    resources = ray.cluster_resources()
    needs = {"CPU": scale.workers * scale.threads_per_worker}
    if scale.gpus_per_worker:
        needs["GPU"] = scale.workers * scale.gpus_per_worker
    for name, need in needs.items():
        have = resources.get(name, 0)
        if have < need:
            per = "threads_per_worker" if name == "CPU" else "gpus_per_worker"
            raise ConfigError(
                f"scale.workers={scale.workers} with scale.{per}={getattr(scale, per)} needs "
                f"{need:g} {name}s; the Ray cluster has {have:g}"
            )


def forwarded_env(config: Config) -> dict[str, str]:
    """The driver's cache and hub-mode variables and the explanation endpoint's key variable,
    for workers started on other machines (kept in memory there, never written)."""
    key = config.explanation.api_key_env
    return {k: v for k, v in os.environ.items() if k.startswith(FORWARDED_ENV) or k == key}


# ----------------------------------------------------------------------------- the pool


class RayPool:
    """``scale.workers`` actors of ``actor_class``, each built with ``init_args`` (models loaded once).

    ``run`` feeds them units and yields ``(index, result)`` as units finish; dead actors are
    replaced and their units resent.
    """

    def __init__(self, config: Config, actor_class: type, init_args: tuple = ()) -> None:
        self.scale = config.scale
        self.ray = ensure_ray(self.scale)
        _check_capacity(self.ray, self.scale)
        options: dict[str, Any] = {"num_cpus": self.scale.threads_per_worker}
        if self.scale.gpus_per_worker:
            options["num_gpus"] = self.scale.gpus_per_worker
        self._remote = self.ray.remote(actor_class).options(**options)
        self._init_args = (config, self.scale.threads_per_worker, forwarded_env(config), *init_args)
        self.actors = [self._spawn() for _ in range(self.scale.workers)]
        self.restarts = 0
        """Workers replaced since the pool started (all stages)."""
        self.busy: dict[Any, tuple[int, Unit]] = {}
        """In-flight result ref -> (actor slot, unit)."""

    def _spawn(self):
        return self._remote.remote(*self._init_args)

    def run(
        self, fn: Callable[..., Any], units: Sequence[Unit], shared: tuple = ()
    ) -> Iterator[tuple[int, Any]]:
        """Yield ``(unit.index, fn(models, *unit.args, *shared))`` for every unit, in the order
        they finish. ``fn`` is a module-level function (it travels by name); put large shared
        inputs in the object store first (``put``) so they travel once per node.
        """
        ray = self.ray
        queue = list(reversed(units))
        idle = list(range(len(self.actors)))
        limit, deaths = MAX_RESTARTS_PER_WORKER * len(self.actors), 0
        while queue or self.busy:
            while queue and idle:
                slot, unit = idle.pop(), queue.pop()
                ref = self.actors[slot].run.remote(fn, *unit.args, *shared)
                self.busy[ref] = (slot, unit)
            (ref,), _ = ray.wait(list(self.busy), num_returns=1)
            slot, unit = self.busy.pop(ref)
            try:
                result = ray.get(ref)
            except (ray.exceptions.RayActorError, ray.exceptions.WorkerCrashedError) as err:
                self.restarts += 1
                deaths += 1
                if deaths > limit:
                    raise ScaleError(
                        f"Ray workers died {deaths} times in one stage (limit {limit}); last: {err}"
                    ) from err
                logger.warning(
                    "worker %d died during unit %d: starting a new one, resending the unit",
                    slot,
                    unit.index,
                )
                self.actors[slot] = self._spawn()
                queue.append(unit)
                idle.append(slot)
                continue
            idle.append(slot)
            yield unit.index, result

    def in_flight(self) -> list[tuple[Any, int]]:
        """``(actor, unit index)`` of every unit being computed now."""
        return [(self.actors[slot], unit.index) for slot, unit in self.busy.values()]

    def put(self, value: Any) -> Any:
        """``value`` in Ray's object store (sent once per node, not once per unit)."""
        return self.ray.put(value)

    def close(self) -> None:
        for actor in self.actors:
            self.ray.kill(actor)
        self.actors = []


_POOL: dict[str, RayPool] = {}
"""The one live pool, by its key: kept between stages so the workers load the models once."""


def pool_key(config: Config, identity: str) -> str:
    """What the workers' state depends on: models, hardware, worker shape and environment."""
    scale = config.scale
    return digest(
        config.model.to_dict(), config.sae.to_dict(), identity, config.hardware.to_dict(),
        [scale.address, scale.workers, scale.gpus_per_worker, scale.threads_per_worker],
        forwarded_env(config),  # hashed, never stored
    )  # fmt: skip


def ray_pool(config: Config, identity: str) -> RayPool:
    """The live pool for ``config``'s models (of ``identity``) and worker shape; kept between
    stages and runs so the workers load the models once; a new one closes any other."""
    from saeinverse.scale.worker import ModelsActor

    key = pool_key(config, identity)
    if key not in _POOL or not _POOL[key].actors:  # none yet, or closed after a failure
        close_pools()
        _POOL[key] = RayPool(config, ModelsActor)
    return _POOL[key]


def close_pools() -> None:
    """Stop the live pool's workers (their CPUs and GPUs go back to Ray)."""
    for pool in _POOL.values():
        pool.close()
    _POOL.clear()
