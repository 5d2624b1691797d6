"""Run directories: one folder per run, one subfolder per stage, a success marker per stage.

A stage's marker (``_SUCCESS.json``) records the hash of everything the stage depends on: its
own config section, the identity of the models and the markers of the stages it reads. A
finished stage whose hash matches is reused; a changed hash recomputes it; a stage that crashed
left no marker (it is removed before the stage starts), so it is never mistaken for finished.
"""

from __future__ import annotations

import hashlib
import json
import logging
import platform
import shutil
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

from saeinverse.config import Config, dump_config
from saeinverse.errors import ArtifactError
from saeinverse.io import load_json, save_json, write_text

logger = logging.getLogger(__name__)

MARKER = "_SUCCESS.json"
CONFIG_FILE = "config.yaml"
META_FILE = "meta.json"

T = TypeVar("T")


def digest(*parts: Any) -> str:
    """A short stable hash of JSON-serialisable parts (config dicts, upstream hashes, names)."""
    blob = json.dumps(parts, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


@dataclass
class Run:
    """A run directory and its stage markers."""

    root: Path
    force: set[str] = field(default_factory=set)
    """Stage names to recompute even when their marker matches ('all' forces every stage)."""

    @classmethod
    def create(
        cls, config: Config, root: str | Path | None = None, force: Iterable[str] = ()
    ) -> Run:
        """Open (or create) the run for ``config``: ``<output.dir>/<output.name>`` by default."""
        root = Path(root) if root is not None else Path(config.output.dir) / config.output.name
        root.mkdir(parents=True, exist_ok=True)
        run = cls(root=root, force=set(force))
        write_text(root / CONFIG_FILE, dump_config(config))
        run._update_meta()
        return run

    def stage_dir(self, name: str) -> Path:
        """The folder of stage ``name`` (not created)."""
        return self.root / name

    def marker(self, name: str) -> dict[str, Any] | None:
        """The stage's success marker, or None when it never finished."""
        path = self.stage_dir(name) / MARKER
        if not path.exists():
            return None
        try:
            return load_json(path)
        except ArtifactError:
            logger.warning("stage %s has an unreadable marker; it will be recomputed", name)
            return None

    def stage_hash(self, name: str) -> str | None:
        """The hash a finished stage recorded (None when it is not finished)."""
        marker = self.marker(name)
        return marker["hash"] if marker else None

    def is_complete(self, name: str, stage_hash: str) -> bool:
        """True when ``name`` finished with exactly this hash and is not forced."""
        if name in self.force or "all" in self.force:
            return False
        return self.stage_hash(name) == stage_hash

    def run_stage(
        self,
        name: str,
        stage_hash: str,
        compute: Callable[[Path], T],
        load: Callable[[Path], T],
    ) -> T:
        """Reuse stage ``name`` when its marker matches ``stage_hash``, else recompute it.

        ``compute(folder)`` writes the stage's artifacts into ``folder`` and returns the result;
        ``load(folder)`` reads a finished stage back.
        """
        folder = self.stage_dir(name)
        if self.is_complete(name, stage_hash):
            logger.info("stage %s: reusing finished result (hash %s)", name, stage_hash)
            return load(folder)
        previous = self.stage_hash(name)
        reason = "forced" if previous == stage_hash else ("inputs changed" if previous else "new")
        logger.info("stage %s: computing (%s)", name, reason)
        if folder.exists():
            shutil.rmtree(folder)
        folder.mkdir(parents=True)
        start = time.perf_counter()
        result = compute(folder)
        seconds = time.perf_counter() - start
        save_json(
            folder / MARKER,
            {"stage": name, "hash": stage_hash, "seconds": round(seconds, 3), "finished": _now()},
        )
        self._update_meta(stage=name, seconds=seconds)
        return result

    def discard(self, name: str) -> None:
        """Remove stage ``name``'s folder (a stage that could not run)."""
        shutil.rmtree(self.stage_dir(name), ignore_errors=True)

    def _update_meta(self, stage: str | None = None, seconds: float | None = None) -> None:
        path = self.root / META_FILE
        meta = load_json(path) if path.exists() else {"created": _now(), "stages": {}}
        meta["updated"] = _now()
        meta["versions"] = _versions()
        if stage is not None:
            meta.setdefault("stages", {})[stage] = {
                "seconds": round(seconds or 0.0, 3),
                "finished": _now(),
            }
        save_json(path, meta)


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def _versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    found = {"python": platform.python_version()}
    for package in ("saeinverse", "torch", "transformer-lens", "sae-lens", "transformers"):
        try:
            found[package] = version(package)
        except PackageNotFoundError:
            continue
    return found
