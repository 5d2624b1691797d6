"""Fault campaign harness: start ``python -m saeinverse run`` on the tiny model, kill it at a chosen
point, rerun it, and compare the final artifacts with an uninterrupted run.

A *point* names a stage of the pipeline and a moment in it:

- ``within``: ``fraction`` of the stage's duration (measured in the uninterrupted reference run)
  after the stage began (= the previous stage's success marker appeared; the first stage begins
  when the process starts);
- ``after``: as soon as the stage's success marker appears (between two stages).

The signal is SIGKILL (kill -9: no cleanup runs) or SIGINT (Ctrl-C). Markers are polled every few
milliseconds, so a kill lands within a few ms of its moment; the outcome records the stages that
were really finished when the signal went out (under a loaded machine a "within" point can land in
a neighbouring stage: cases are counted by the stage they really hit).

``CAMPAIGN`` counts the cases each fault class tried in this session (printed at the end of the
session by ``tests/faults/conftest.py``, and written as JSON to ``$SAEINVERSE_FAULTS_RECORD``).
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import saeinverse
from saeinverse.run.rundir import MARKER
from tests.run.golden import artifact_digests
from tests.test_cli import TINY_RUN

STAGES = ("models", "collect", "filter", "cluster", "select", "invert", "explain", "report")
"""The stages a full tiny run finishes, in order (checked against the reference run)."""
POLL_S = 0.003
RUN_TIMEOUT_S = 600

CAMPAIGN: Counter[str] = Counter()
"""Fault class → cases tried in this session."""


def record(fault_class: str, **detail: object) -> None:
    """Count one case of ``fault_class``; with $SAEINVERSE_FAULTS_RECORD set, also append it as
    a JSON line to ``<that path>.jsonl`` at once (a long campaign cut short keeps its counts)."""
    CAMPAIGN[fault_class] += 1
    path = os.environ.get("SAEINVERSE_FAULTS_RECORD")
    if path:
        line = json.dumps({"class": fault_class, **detail}, default=str)
        with open(f"{path}.jsonl", "a") as handle:
            handle.write(line + "\n")


def full_campaign() -> bool:
    """SAEINVERSE_FAULTS_FULL=1 runs every point of the schedule (default: a seeded few)."""
    return os.environ.get("SAEINVERSE_FAULTS_FULL", "") == "1"


def campaign_seed() -> int:
    return int(os.environ.get("SAEINVERSE_FAULTS_SEED", "0"))


@dataclass(frozen=True)
class Point:
    stage: str
    when: str  # "within" | "after"
    fraction: float = 0.0
    signal: int = signal.SIGKILL

    @property
    def id(self) -> str:
        name = "kill" if self.signal == signal.SIGKILL else "int"
        at = f"@{self.fraction:.2f}" if self.when == "within" else ""
        return f"{name}-{self.when}-{self.stage}{at}"


def schedule(seed: int, full: bool) -> list[Point]:
    """Every point of the campaign (full), or two seeded SIGKILL points (the default).

    Full: per stage, SIGKILL within it at a fraction drawn from (0.05, 0.5) and one from
    (0.5, 0.95), SIGKILL after it, and SIGINT within it at a fraction drawn from (0.05, 0.95).
    Default: one SIGKILL point of a stage up to clustering, one of a later stage (each case costs
    about two tiny runs, so the fast suite keeps two).
    """
    rng = random.Random(seed)
    points = []
    for stage in STAGES:
        early, late = rng.uniform(0.05, 0.5), rng.uniform(0.5, 0.95)
        points += [
            Point(stage, "within", round(early, 2)),
            Point(stage, "within", round(late, 2)),
            Point(stage, "after"),
            Point(stage, "within", round(rng.uniform(0.05, 0.95), 2), signal.SIGINT),
        ]
    if full:  # shuffled: a campaign cut short has still visited every stage
        return rng.sample(points, len(points))
    kills = [p for p in points if p.signal == signal.SIGKILL and p.stage != "report"]
    split = STAGES.index("cluster") + 1
    return [
        rng.choice([p for p in kills if STAGES.index(p.stage) < split]),
        rng.choice([p for p in kills if STAGES.index(p.stage) >= split]),
    ]


def run_command(run_dir: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "saeinverse", "run", "--run-dir", str(run_dir), *extra, *TINY_RUN]


def campaign_env(cache: Path) -> dict[str, str]:
    """The subprocess environment: this checkout's code, a private cache, no hub access."""
    src = str(Path(saeinverse.__file__).resolve().parents[1])
    env = dict(os.environ)
    env.update(
        SAEINVERSE_CACHE=str(cache / "saeinverse"),
        NUMBA_CACHE_DIR=str(cache / "numba"),  # UMAP's compiled code, reused across processes
        HF_HUB_OFFLINE="1",
        TOKENIZERS_PARALLELISM="false",
        PYTHONPATH=os.pathsep.join(p for p in (src, env.get("PYTHONPATH", "")) if p),
    )
    return env


def finished(run_dir: Path) -> list[str]:
    """Stages whose success marker exists, in pipeline order."""
    return [s for s in STAGES if (run_dir / s / MARKER).exists()]


def marker_times(run_dir: Path) -> dict[str, int]:
    return {s: (run_dir / s / MARKER).stat().st_mtime_ns for s in finished(run_dir)}


@dataclass
class Reference:
    """The uninterrupted run: its artifact digests and when each stage finished."""

    run_dir: Path
    digests: dict[str, str]
    ends: dict[str, float]
    """Seconds from process start to each stage's marker."""
    seconds: float

    def window(self, stage: str) -> tuple[str | None, float]:
        """(the stage before ``stage`` or None, ``stage``'s duration in seconds)."""
        index = STAGES.index(stage)
        before = STAGES[index - 1] if index else None
        start = self.ends[before] if before else 0.0
        return before, max(self.ends[stage] - start, 0.0)


def reference_run(run_dir: Path, env: dict[str, str]) -> Reference:
    """Run to the end, noting when each marker appears."""
    start = time.monotonic()
    process = subprocess.Popen(
        run_command(run_dir), env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    ends: dict[str, float] = {}
    stderr_tail = _Drain(process)
    while process.poll() is None:
        for stage in finished(run_dir):
            ends.setdefault(stage, time.monotonic() - start)
        time.sleep(POLL_S)
        if time.monotonic() - start > RUN_TIMEOUT_S:
            process.kill()
    stderr_tail.join()
    if process.returncode != 0:
        raise AssertionError(f"reference run failed: exit {process.returncode}\n{stderr_tail.text}")
    for stage in finished(run_dir):
        ends.setdefault(stage, time.monotonic() - start)
    return Reference(run_dir, artifact_digests(run_dir), ends, time.monotonic() - start)


class _Drain:
    """Read a child's stdout and stderr in threads (a full pipe would block it)."""

    def __init__(self, process: subprocess.Popen) -> None:
        import threading

        self.chunks: list[str] = []
        self.threads = [
            threading.Thread(target=self._read, args=(stream,), daemon=True)
            for stream in (process.stdout, process.stderr)
        ]
        for thread in self.threads:
            thread.start()

    def _read(self, stream) -> None:
        for line in stream:
            self.chunks.append(line)

    def join(self) -> None:
        for thread in self.threads:
            thread.join(timeout=30)

    @property
    def text(self) -> str:
        return "".join(self.chunks)[-4000:]


@dataclass
class Outcome:
    """What a kill really did."""

    signalled: bool
    """False: the run ended before the moment came."""
    done_at_kill: list[str] = field(default_factory=list)
    """Stages whose marker existed when the signal went out."""
    markers_at_kill: dict[str, int] = field(default_factory=dict)
    returncode: int | None = None
    log: str = ""

    @property
    def hit(self) -> str:
        """The stage the signal interrupted ('done' when all had finished)."""
        left = [s for s in STAGES if s not in self.done_at_kill]
        return left[0] if left else "done"


def interrupt_at(point: Point, run_dir: Path, env: dict[str, str], ref: Reference) -> Outcome:
    """Start a run and send ``point.signal`` at ``point``; wait for the process to end."""
    before, duration = ref.window(point.stage)
    process = subprocess.Popen(
        run_command(run_dir), env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    drain = _Drain(process)
    start = time.monotonic()
    began: float | None = start if before is None else None
    outcome = Outcome(signalled=False)
    while process.poll() is None:
        now = time.monotonic()
        if point.when == "after":
            due = (run_dir / point.stage / MARKER).exists()
        else:
            if began is None and (run_dir / before / MARKER).exists():
                began = now
            due = began is not None and now - began >= point.fraction * duration
        if due:
            outcome.done_at_kill = finished(run_dir)
            outcome.markers_at_kill = marker_times(run_dir)
            process.send_signal(point.signal)
            outcome.signalled = True
            break
        if now - start > RUN_TIMEOUT_S:
            process.kill()
            raise AssertionError(f"{point.id}: the run did not reach its point in time")
        time.sleep(POLL_S)
    try:
        process.wait(timeout=RUN_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        process.kill()
        raise AssertionError(f"{point.id}: the run did not stop after {point.signal!r}") from None
    drain.join()
    outcome.returncode, outcome.log = process.returncode, drain.text
    return outcome


def finish(run_dir: Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    """Rerun to the end (uninterrupted)."""
    return subprocess.run(
        run_command(run_dir), env=env, capture_output=True, text=True, timeout=RUN_TIMEOUT_S
    )
