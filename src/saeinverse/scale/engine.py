"""The Ray engine: a pool of actors that each load the model and SAE once, fed units of work.

A stage split into *units* (a shard of prompts, a batch of features) runs as follows: units
already saved under ``<stage folder>/units/<plan>/`` are read back, the missing ones are sent
to the actors one at a time per actor, and each result is saved (atomically) by the driver as
soon as it arrives, so a rerun after a worker or the driver died redoes only the missing units.
``units/`` is ``artifacts.CHECKPOINT_DIR``: the run directory keeps it when an attempt died and
leaves it out of the stage's checksums. ``<plan>`` is a hash of everything that decides the
units' results (config slice, unit boundaries), so units of another plan are never reused.
The local engine (``scale.engine: local``, ``saeinverse.scale.local``) runs the same plan through
an in-process pool with ``WorkerPool``'s interface, over the models already loaded.

A worker that dies mid-unit (killed, out of memory, its node lost) is replaced by a fresh actor
and its unit is sent again; a unit that raises an ordinary exception fails the stage (a bug or a
bad input does not get better by retrying). One tqdm bar on the driver counts the stage's work
(prompts or features) across all workers, advanced as units finish.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from saeinverse.artifacts import CHECKPOINT_DIR
from saeinverse.config import Config, ScaleConfig
from saeinverse.errors import ConfigError, SaeInverseError

logger = logging.getLogger(__name__)

FORWARDED_ENV = ("SAEINVERSE_", "HF_", "TRANSFORMERS_")
"""Environment variables (by prefix) a worker gets from the driver: caches and hub mode."""
MAX_RESTARTS_PER_WORKER = 3
"""A stage gives up after this many worker deaths per worker."""


class ScaleError(SaeInverseError):
    """The Ray engine cannot run: Ray missing, a cluster too small, workers dying over and over."""


@dataclass(frozen=True)
class Unit:
    """One piece of a stage's work: its index, how much work it counts for, and its payload."""

    index: int
    size: int
    """Prompts or features in the unit (what the progress bar counts)."""
    args: tuple
    """The worker method's leading arguments (a shard's prompts, a batch's feature ids, ...)."""


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


# ----------------------------------------------------------------------------- unit store


def plan_hash(*parts: Any) -> str:
    """A short stable hash of what decides a plan's unit results."""
    blob = json.dumps(parts, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


class UnitStore:
    """Finished units of one plan under ``<folder>/units/<plan>/<kind>-<index>/``.

    ``save`` and ``load`` are the stage's own (atomic) artifact writer and reader; ``marker`` is
    the file ``save`` writes last, so a unit folder holding it is complete. Older plans' units
    are removed when a store for a new plan opens.
    """

    def __init__(
        self,
        folder: str | Path,
        plan: str,
        kind: str,
        marker: str,
        save: Callable[[Path, Any], None],
        load: Callable[[Path], Any],
    ) -> None:
        root = Path(folder) / CHECKPOINT_DIR
        for old in root.glob("*"):
            if old.is_dir() and old.name != plan:
                shutil.rmtree(old, ignore_errors=True)
        self.root = root / plan
        self.kind, self.marker, self._save, self._load = kind, marker, save, load

    def path(self, index: int) -> Path:
        return self.root / f"{self.kind}-{index:05d}"

    def has(self, index: int) -> bool:
        return (self.path(index) / self.marker).is_file()

    def load(self, index: int) -> Any:
        return self._load(self.path(index))

    def save(self, index: int, result: Any) -> None:
        self._save(self.path(index), result)


# ----------------------------------------------------------------------------- the pool


class WorkerPool:
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
        self, method: str, units: Sequence[Unit], shared: tuple = ()
    ) -> Iterator[tuple[int, Any]]:
        """Yield ``(unit.index, result)`` for every unit, in the order they finish.

        ``method`` is the actor method called as ``method(*unit.args, *shared)``; put large
        shared inputs in the object store first (``ray.put``) so they travel once per node.
        """
        ray = self.ray
        queue = list(reversed(units))
        idle = list(range(len(self.actors)))
        limit, deaths = MAX_RESTARTS_PER_WORKER * len(self.actors), 0
        while queue or self.busy:
            while queue and idle:
                slot, unit = idle.pop(), queue.pop()
                ref = getattr(self.actors[slot], method).remote(*unit.args, *shared)
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

    def call(self, method: str, *args: Any) -> Any:
        """``method(*args)`` on one worker (a one-off: a token count, the default fluency bound)."""
        return self.ray.get(getattr(self.actors[0], method).remote(*args))

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


_POOL: dict[str, WorkerPool] = {}
"""The one live pool, by its key: kept between stages so the workers load the models once."""


def pool_key(config: Config) -> str:
    """What the workers' state depends on: models, hardware, worker shape and environment."""
    from saeinverse.models.from_config import sae_identity

    scale = config.scale
    return plan_hash(
        config.model.to_dict(), sae_identity(config), config.hardware.to_dict(),
        [scale.address, scale.workers, scale.gpus_per_worker, scale.threads_per_worker],
        forwarded_env(config),  # hashed, never stored
    )  # fmt: skip


def worker_pool(config: Config) -> WorkerPool:
    """The live pool for ``config``'s models and worker shape; a new one (closing any other)."""
    from saeinverse.scale.worker import StageWorker

    key = pool_key(config)
    if key not in _POOL:
        close_pools()
        _POOL[key] = WorkerPool(config, StageWorker)
    return _POOL[key]


def close_pools() -> None:
    """Stop the live pool's workers (their CPUs and GPUs go back to Ray)."""
    for pool in _POOL.values():
        pool.close()
    _POOL.clear()


def run_units(
    config: Config,
    store: UnitStore,
    units: Sequence[Unit],
    method: str,
    *,
    shared: Callable[[WorkerPool], tuple] | None = None,
    desc: str,
    unit_name: str,
    progress: bool = True,
    on_unit: Callable[[WorkerPool, int], None] | None = None,
    pool: Any = None,
) -> Iterator[Any]:
    """Every unit's result, in unit order: saved ones read back, missing ones computed on a pool.

    ``pool``: a pool with ``WorkerPool``'s ``run``, ``put`` and ``restarts`` (the local engine's
    ``LocalPool``); None: the Ray pool for ``config`` (``worker_pool``), started only when a unit
    is missing.

    Results are yielded as soon as every earlier unit is available, so a caller that folds them
    holds only the few that finished out of order. The pool starts only when a unit is missing.
    Each call is ``method(*unit.args, config, *shared(pool))``: ``shared`` gives object refs of
    large inputs every unit reads (put once per stage);
    ``on_unit(pool, index)`` is called on the driver after each computed unit is saved.
    """
    from tqdm.auto import tqdm

    order = [u.index for u in units]
    missing = [u for u in units if not store.has(u.index)]
    if len(missing) < len(units):
        logger.info(
            "%s: reused %d of %d units saved under %s (computing %d)",
            desc, len(units) - len(missing), len(units), store.root, len(missing),
        )  # fmt: skip
    computed: dict[int, Any] = {}
    position = 0

    def ready() -> Iterator[Any]:
        nonlocal position
        while position < len(order):
            index = order[position]
            if index in computed:
                yield computed.pop(index)
            elif index not in todo:
                yield store.load(index)
            else:
                return
            position += 1

    todo = {u.index for u in missing}
    if not missing:
        yield from ready()
        return
    sizes = {u.index: u.size for u in units}
    total, left = sum(sizes.values()), sum(u.size for u in missing)
    bar = tqdm(total=total, initial=total - left, unit=unit_name, desc=desc, disable=not progress)
    on_ray = pool is None
    if on_ray:
        pool = worker_pool(config)
    try:
        with bar:
            yield from ready()
            args = (pool.put(config), *(shared(pool) if shared is not None else ()))
            for index, result in pool.run(method, missing, args):
                store.save(index, result)
                todo.discard(index)
                computed[index] = result
                bar.update(sizes[index])
                if on_unit is not None:
                    on_unit(pool, index)
                yield from ready()
    except BaseException:
        if on_ray:
            close_pools()  # its workers may still be busy with units nobody waits for
        raise
    if pool.restarts:
        logger.warning("%s: %d worker restart(s) so far", desc, pool.restarts)


def split(items: Sequence[Any], size: int) -> list[list[Any]]:
    """``items`` in consecutive chunks of ``size`` (the last may be shorter)."""
    return [list(items[i : i + size]) for i in range(0, len(items), size)]
