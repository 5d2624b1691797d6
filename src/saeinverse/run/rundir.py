"""Run directories: one folder per run, one subfolder per stage, a success marker per stage.

A stage's marker (``_SUCCESS.json``) records:

- ``hash``: the hash of everything the stage depends on (its config slice, the identity of the
  models and the ``output`` of the stages it reads);
- ``inputs``: ``{stage: output}`` of the stages it read, so the report can tell when an upstream
  stage was recomputed since (the stage is then stale);
- ``files``: the sha256 of every file the stage wrote;
- ``output``: a digest of ``hash`` and ``files``: what later stages record as their input.

A finished stage is reused only when its hash matches and its files still match their
checksums (a file changed by hand recomputes the stage, with a warning). A stage that crashed
left no marker (it is removed before the stage starts), so it is never mistaken for finished;
its ``units/`` checkpoints are kept for the rerun (a forced or changed stage starts empty);
once a stage's marker is written its ``units/`` are removed.
One run at a time writes a directory: ``lock`` holds ``.lock`` with ``filelock``.
"""

from __future__ import annotations

import hashlib
import logging
import platform
import shutil
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

from saeinverse.artifacts import CHECKPOINT_DIR, CONFIG_FILE, LOCK_FILE, MARKER, META_FILE
from saeinverse.config import Config, dump_config
from saeinverse.errors import ArtifactError, RunDirError, one_line
from saeinverse.io import digest, load_json, save_json, write_text

logger = logging.getLogger(__name__)

__all__ = ["CONFIG_FILE", "MARKER", "META_FILE", "Run", "digest", "file_digests"]

T = TypeVar("T")


def file_digests(folder: Path) -> dict[str, str]:
    """``{relative path: sha256}`` of every file under ``folder`` but the marker and the
    checkpoints."""
    found = {}
    for path in sorted(folder.rglob("*")):
        relative = path.relative_to(folder)
        if path.is_file() and path.name != MARKER and relative.parts[0] != CHECKPOINT_DIR:
            sha = hashlib.sha256()
            with path.open("rb") as handle:
                for block in iter(lambda h=handle: h.read(1 << 20), b""):
                    sha.update(block)
            found[relative.as_posix()] = sha.hexdigest()
    return found


@dataclass
class Run:
    """A run directory and its stage markers."""

    root: Path
    force: set[str] = field(default_factory=set)
    """Stage names to recompute even when their marker matches ('all' forces every stage)."""
    computed: list[str] = field(default_factory=list)
    """Stages computed (not reused) by this run, in order."""

    @classmethod
    def open(cls, root: str | Path, force: Iterable[str] = ()) -> Run:
        """The run at ``root``, without writing anything (``RunDirError`` if it is a file)."""
        root = Path(root)
        if root.exists() and not root.is_dir():
            raise RunDirError(f"run directory {root} is a file, not a directory")
        for parent in root.parents:
            if parent.exists() and not parent.is_dir():
                raise RunDirError(f"cannot create run directory {root}: {parent} is a file")
        return cls(root=root, force=set(force))

    @classmethod
    def create(
        cls, config: Config, root: str | Path | None = None, force: Iterable[str] = ()
    ) -> Run:
        """Open the run for ``config`` (``<output.dir>/<output.name>`` by default) and write its
        config (for code that builds a run by hand; ``run_experiment`` validates first)."""
        root = root if root is not None else Path(config.output.dir) / config.output.name
        run = cls.open(root, force)
        run.write_config(config)
        return run

    @contextmanager
    def lock(self, wait: bool = False) -> Iterator[None]:
        """Hold the run's lock: refuse (``RunDirError``) when another run holds it, or wait."""
        from filelock import FileLock, Timeout

        try:
            self.root.mkdir(parents=True, exist_ok=True)
            lock = FileLock(str(self.root / LOCK_FILE))
            try:
                lock.acquire(timeout=0)
            except Timeout:
                if not wait:
                    raise RunDirError(
                        f"run directory {self.root} is in use by another saeinverse run; "
                        "wait for it to finish or pass --wait"
                    ) from None
                logger.warning("run directory %s is in use: waiting for the other run", self.root)
                lock.acquire()
        except OSError as err:
            raise RunDirError(f"run directory {self.root} is not writable: {err}") from err
        try:
            yield
        finally:
            lock.release()

    def write_config(self, config: Config) -> None:
        """Write ``config.yaml`` and update ``meta.json`` (after the config was validated)."""
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            write_text(self.root / CONFIG_FILE, dump_config(config))
            self._update_meta()
        except OSError as err:
            raise RunDirError(f"cannot write to run directory {self.root}: {err}") from err

    def stage_dir(self, name: str) -> Path:
        """The folder of stage ``name`` (not created)."""
        return self.root / name

    def marker(self, name: str) -> dict[str, Any] | None:
        """The stage's success marker, or None when it never finished."""
        path = self.stage_dir(name) / MARKER
        if not path.exists():
            return None
        try:
            marker = load_json(path)
        except ArtifactError:
            marker = None
        if not isinstance(marker, dict) or "hash" not in marker:
            logger.warning("stage %s has an unreadable marker; it will be recomputed", name)
            return None
        return marker

    def stage_hash(self, name: str) -> str | None:
        """The hash a finished stage recorded (None when it is not finished)."""
        marker = self.marker(name)
        return marker["hash"] if marker else None

    def output(self, name: str) -> str | None:
        """What later stages record for ``name``: its hash and files, digested."""
        marker = self.marker(name)
        return marker.get("output", marker["hash"]) if marker else None

    def is_complete(self, name: str, stage_hash: str) -> bool:
        """True when ``name`` finished with exactly this hash, its files match their checksums
        and it is not forced."""
        if name in self.force or "all" in self.force:
            return False
        marker = self.marker(name)
        if marker is None or marker["hash"] != stage_hash:
            return False
        recorded = marker.get("files")
        if recorded is None:
            return True  # a marker written before checksums: trusted
        found = file_digests(self.stage_dir(name))
        if found != recorded:
            changed = sorted(
                k for k in recorded.keys() | found.keys() if recorded.get(k) != found.get(k)
            )
            logger.warning(
                "stage %s: its files no longer match their checksums (%s): recomputing it",
                name,
                ", ".join(changed),
            )
            return False
        return True

    def run_stage(
        self,
        name: str,
        stage_hash: str,
        compute: Callable[[Path], T],
        load: Callable[[Path], T],
        inputs: Mapping[str, str] | None = None,
    ) -> T:
        """Reuse stage ``name`` when its marker matches ``stage_hash``, else recompute it.

        ``compute(folder)`` writes the stage's artifacts into ``folder`` and returns the result;
        ``load(folder)`` reads a finished stage back; ``inputs`` (``{stage: output}``) is
        recorded in the marker.
        """
        folder = self.stage_dir(name)
        if self.is_complete(name, stage_hash):
            logger.info("stage %s: reusing finished result (hash %s)", name, stage_hash)
            try:
                return load(folder)
            except ArtifactError as err:
                raise ArtifactError(
                    f"stage {name}: {one_line(err)}; recompute it with --force {name}"
                ) from err
        previous = self.stage_hash(name)
        reason = "forced" if previous == stage_hash else ("inputs changed" if previous else "new")
        logger.info("stage %s: computing (%s)", name, reason)
        _clear(folder, keep_checkpoints=previous is None)
        start = time.perf_counter()
        result = compute(folder)
        seconds = time.perf_counter() - start
        files = file_digests(folder)
        marker = {
            "stage": name,
            "hash": stage_hash,
            "inputs": dict(inputs or {}),
            "files": files,
            "output": digest(stage_hash, files),
            "seconds": round(seconds, 3),
            "finished": _now(),
        }
        save_json(folder / MARKER, marker)
        shutil.rmtree(folder / CHECKPOINT_DIR, ignore_errors=True)  # the stage is whole now
        self.computed.append(name)
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


def _clear(folder: Path, keep_checkpoints: bool) -> None:
    """Empty ``folder`` (create it); an attempt that died (no marker) keeps its checkpoints."""
    if folder.exists():
        for path in folder.iterdir():
            if keep_checkpoints and path.name == CHECKPOINT_DIR and path.is_dir():
                logger.info(
                    "stage %s: keeping the checkpoints of the attempt that stopped", folder.name
                )
                continue
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            else:
                path.unlink()
    folder.mkdir(parents=True, exist_ok=True)


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
