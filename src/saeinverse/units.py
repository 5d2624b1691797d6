"""A long stage's work in units, checkpointed as they finish, run on a pool.

A long stage (collection, inversion, explanation) is a function of its per-unit input records
(shards of prompts, batches of features), its config section and a ``Pool``. It cuts its records
into ``Unit``s and calls ``run_units``, which reads back the units already saved under
``<stage folder>/units/<kind>/<plan>/``, runs the missing ones on the pool and saves each result
(atomically) as soon as it arrives: a kill -9 loses at most the units in flight, and the rerun
logs ``reused K of N units``. ``<plan>`` is the stage's hash plus the unit boundaries
(``Checkpoints.store``), so units of another plan are never reused.

A unit function is a module-level function called as ``fn(models, *unit.args, *shared)``, where
``models`` is the pool's ``Models`` (subject model and SAE loaded once per process, the
explanation LM on first use). The same function runs in this process (``LocalPool``) or on a Ray
worker (``saeinverse.scale``): the pool changes where a unit runs, never what it computes. The
pool is chosen once per run, by ``saeinverse.run``.
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, TypeVar

from saeinverse.artifacts import CHECKPOINT_DIR
from saeinverse.io import digest

logger = logging.getLogger(__name__)

T = TypeVar("T")


@dataclass(frozen=True)
class Unit:
    """One piece of a stage's work: its index, how much work it counts for, its arguments."""

    index: int
    size: int
    """Prompts or features in the unit (what the progress bar counts)."""
    args: tuple
    """The unit function's arguments after ``models`` (a shard's prompts, a batch's records)."""


def split(items: Sequence[T], size: int) -> list[list[T]]:
    """Consecutive chunks of at most ``size`` items."""
    size = max(1, int(size))
    return [list(items[i : i + size]) for i in range(0, len(items), size)]


# ----------------------------------------------------------------------------- models


@dataclass
class Models:
    """What a unit function runs on: the subject model and SAE, and the explanation LM loaded on
    first use by ``load_lm(explanation_cfg) -> (lm, tokenizer)``."""

    model: Any
    sae: Any
    load_lm: Callable[[Any], tuple[Any, Any]] | None = None
    lms: dict[tuple[str, str], tuple[Any, Any]] = field(default_factory=dict)
    """``(explainer, llm_name) -> (lm, tokenizer)`` loaded so far (or passed in)."""

    def explanation_lm(self, explanation_cfg: Any) -> tuple[Any, Any]:
        """``(lm, tokenizer)`` for ``explanation_cfg``'s explainer (None, None when it needs none)."""
        key = (str(explanation_cfg.explainer), str(explanation_cfg.llm_name))
        if key not in self.lms:
            load = self.load_lm
            self.lms[key] = load(explanation_cfg) if load is not None else (None, None)
        return self.lms[key]


# ----------------------------------------------------------------------------- pools


class Pool(Protocol):
    """Where units run: ``LocalPool`` (this process) or the Ray pool (``saeinverse.scale``)."""

    restarts: int
    """Workers replaced since the pool started."""

    def run(
        self, fn: Callable[..., Any], units: Sequence[Unit], shared: tuple = ()
    ) -> Iterator[tuple[int, Any]]:
        """Yield ``(unit.index, fn(models, *unit.args, *shared))`` for every unit as it finishes."""
        ...

    def put(self, value: Any) -> Any:
        """``value`` as the pool ships it to every unit (once per node on Ray)."""
        ...

    def close(self) -> None: ...


class LocalPool:
    """Units run one at a time, in order, in this process, over ``models``."""

    restarts = 0
    """Never restarted (a crash here ends the process; its saved units stay)."""

    def __init__(self, models: Models) -> None:
        self.models = models
        self.current: int | None = None
        """The unit being computed (None between units)."""

    def run(
        self, fn: Callable[..., Any], units: Sequence[Unit], shared: tuple = ()
    ) -> Iterator[tuple[int, Any]]:
        for unit in units:
            self.current = unit.index
            try:
                result = fn(self.models, *unit.args, *shared)
            finally:
                self.current = None
            yield unit.index, result

    def put(self, value: Any) -> Any:
        return value  # one process: nothing to ship

    def close(self) -> None:
        """Nothing to stop (the models belong to the caller)."""


# ----------------------------------------------------------------------------- checkpoints


class UnitStore:
    """Finished units of one plan under ``<folder>/units/<kind>/<plan>/<kind>-<index>/``.

    ``save`` and ``load`` are the stage's own (atomic) artifact writer and reader; ``marker`` is
    the file ``save`` writes last, so a unit folder holding it is complete. Other plans' units of
    the same kind are removed when a store opens.
    """

    def __init__(
        self,
        folder: str | Path,
        kind: str,
        plan: str,
        marker: str,
        save: Callable[[Path, Any], None],
        load: Callable[[Path], Any],
    ) -> None:
        root = Path(folder) / CHECKPOINT_DIR / kind
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


@dataclass(frozen=True)
class Checkpoints:
    """Where a stage keeps its finished units: its folder, and its hash (what decides them)."""

    folder: Path
    stage_hash: str

    def store(
        self,
        kind: str,
        units: Sequence[Unit],
        marker: str,
        save: Callable[[Path, Any], None],
        load: Callable[[Path], Any],
    ) -> UnitStore:
        """The store of ``kind`` units for this stage hash and these unit boundaries."""
        plan = digest(self.stage_hash, kind, [u.size for u in units])
        return UnitStore(self.folder, kind, plan, marker, save, load)


# ----------------------------------------------------------------------------- running


def run_units(
    pool: Pool,
    fn: Callable[..., Any],
    units: Sequence[Unit],
    *,
    store: UnitStore | None = None,
    shared: tuple = (),
    desc: str,
    unit_name: str,
    progress: bool = True,
    on_unit: Callable[[Pool, int], None] | None = None,
) -> Iterator[Any]:
    """Every unit's result, in unit order: saved ones read back, missing ones run on ``pool``.

    Results are yielded as soon as every earlier unit is available, so a caller that folds them
    holds only the few that finished out of order. ``shared`` values go to every unit (shipped
    once, ``pool.put``); ``on_unit(pool, index)`` is called after each computed unit is saved.
    """
    from tqdm.auto import tqdm

    order = [u.index for u in units]
    missing = [u for u in units if store is None or not store.has(u.index)]
    if store is not None and len(missing) < len(units):
        logger.info(
            "%s: reused %d of %d units saved under %s (computing %d)",
            desc, len(units) - len(missing), len(units), store.root, len(missing),
        )  # fmt: skip
    todo = {u.index for u in missing}
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

    if not missing:
        yield from ready()
        return
    sizes = {u.index: u.size for u in units}
    total, left = sum(sizes.values()), sum(u.size for u in missing)
    bar = tqdm(total=total, initial=total - left, unit=unit_name, desc=desc, disable=not progress)
    with bar:
        yield from ready()
        args = tuple(pool.put(value) for value in shared)
        for index, result in pool.run(fn, missing, args):
            if store is not None:
                store.save(index, result)
            todo.discard(index)
            computed[index] = result
            bar.update(sizes[index])
            if on_unit is not None:
                on_unit(pool, index)
            yield from ready()
    if pool.restarts:
        logger.info("%s: %d worker restart(s) so far", desc, pool.restarts)
