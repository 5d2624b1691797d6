"""Fault campaign harness: start ``python -m saeinverse run`` on the tiny run
(``tests.builders.TINY_RUN``), signal it at a planned point, rerun it, and compare the final
artifacts with an uninterrupted run.

A *point* names a stage of the pipeline and a moment in it, each following a line the run logs
on stderr:

- ``within``: ``fraction`` of the stage's duration (``Reference.seconds``) after the run logs
  ``stage <name>: computing``; a moment under ``MIN_DELAY_S`` is the line itself (the harness
  stops the run as it reads it);
- ``after``: as soon as the stage's successor logs that line (for the last stage: ``run
  finished``), i.e. between the two stages;
- ``training``: as soon as the run logs that it trains the default SAE on first use.

At that moment the harness stops the process (SIGSTOP, and waits until it is stopped), reads
which success markers exist (the process cannot write while stopped, so these are exactly the
stages finished when the signal lands), and only then sends the signal: SIGKILL (kill -9, no
cleanup runs) or SIGINT (Ctrl-C). When the markers show the point already passed (the stage ran
faster than in the reference), the process is killed, its run directory put back as it was, and
the point tried again, sooner (the stage's duration in the missed attempt, then none). ``Outcome`` records what the signal hit; the tests assert it before they compare artifacts.

``CAMPAIGN`` counts the cases each fault class tried in this session (printed at the end of the
session by ``tests/faults/conftest.py``, and written as JSON to ``$SAEINVERSE_FAULTS_RECORD``).
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import saeinverse
from saeinverse.artifacts import MARKER, STAGE_NAMES
from tests.builders import TINY_RUN
from tests.run.golden import artifact_digests

STAGES: tuple[str, ...] = tuple(STAGE_NAMES)
"""The stages a full tiny run finishes, in order (checked against the reference run)."""
START_LINE = "stage {}: computing"
"""What the run logs when a stage begins to compute (``saeinverse.run.rundir``)."""
FINISH_LINE = "run finished:"
TRAINING_LINE = "training one now"
"""What the run logs when it trains the default SAE on first use."""
ATTEMPTS = 3
MIN_DELAY_S = 0.02
"""A moment this soon after its line is taken at the line (a timer would land no closer)."""
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
    when: str  # "within" | "after" | "training"
    fraction: float = 0.0
    signal: int = signal.SIGKILL

    @property
    def id(self) -> str:
        name = "kill" if self.signal == signal.SIGKILL else "int"
        at = f"@{self.fraction:.2f}" if self.when == "within" else ""
        return f"{name}-{self.when}-{self.stage}{at}"

    def describe(self) -> str:
        name = "kill -9" if self.signal == signal.SIGKILL else "Ctrl-C"
        if self.when == "within":
            return f"{name} inside stage {self.stage}, {self.fraction:.0%} of its way"
        if self.when == "after":
            then = "the next stage begins" if self.stage != STAGES[-1] else "the process exits"
            return f"{name} after stage {self.stage}, before {then}"
        return f"{name} while the default SAE trains on first use"

    @property
    def trigger(self) -> str:
        """The line of the run's log that the moment follows."""
        if self.when == "training":
            return TRAINING_LINE
        index = STAGES.index(self.stage) + (self.when == "after")
        return START_LINE.format(STAGES[index]) if index < len(STAGES) else FINISH_LINE

    def reached(self, done: list[str]) -> bool:
        """True when ``done`` (the finished stages, in order) is the state the point plans."""
        if self.when == "training":
            return not done
        index = STAGES.index(self.stage) + (self.when == "after")
        return done == list(STAGES[:index])


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
    kills = [p for p in points if p.signal == signal.SIGKILL and p.stage != STAGES[-1]]
    split = STAGES.index("cluster") + 1
    return [
        rng.choice([p for p in kills if STAGES.index(p.stage) < split]),
        rng.choice([p for p in kills if STAGES.index(p.stage) >= split]),
    ]


def run_command(run_dir: Path, args: Sequence[str] = TINY_RUN) -> list[str]:
    return [sys.executable, "-m", "saeinverse", "run", "--run-dir", str(run_dir), *args]


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


def stage_seconds(run_dir: Path, stage: str) -> float:
    """How long ``stage`` computed, as its marker records (0 when it has none)."""
    path = run_dir / stage / MARKER
    return float(json.loads(path.read_text()).get("seconds", 0.0)) if path.exists() else 0.0


@dataclass
class Reference:
    """The uninterrupted run of ``args``: its artifact digests and how long each stage
    computed; the runs compared with it run the same ``args``."""

    run_dir: Path
    args: Sequence[str]
    digests: dict[str, str]
    seconds: dict[str, float]
    """How long each stage computed: in this run, lowered by ``note`` to the shortest seen in any
    run of the session (a stage reading a cache that this run filled is quicker). It only plans
    moments; no check reads it."""

    def note(self, run_dir: Path) -> None:
        """Lower ``seconds`` to what the stages finished in ``run_dir`` took."""
        for stage in finished(run_dir):
            seen = stage_seconds(run_dir, stage)
            self.seconds[stage] = min(self.seconds.get(stage, seen), seen)

    def delay(self, point: Point) -> float:
        """Seconds from ``point``'s line to its moment."""
        if point.when != "within":
            return 0.0
        delay = point.fraction * self.seconds.get(point.stage, 0.0)
        return delay if delay >= MIN_DELAY_S else 0.0


def reference_run(run_dir: Path, env: dict[str, str], args: Sequence[str] = TINY_RUN) -> Reference:
    """Run to the end, uninterrupted."""
    done = finish(run_dir, env, args)
    if done.returncode != 0:
        raise AssertionError(f"reference run failed: exit {done.returncode}\n{done.stderr[-4000:]}")
    seconds = {stage: stage_seconds(run_dir, stage) for stage in finished(run_dir)}
    return Reference(run_dir, args, artifact_digests(run_dir), seconds)


def finish(
    run_dir: Path, env: dict[str, str], args: Sequence[str] = TINY_RUN
) -> subprocess.CompletedProcess:
    """Rerun to the end (uninterrupted)."""
    return subprocess.run(
        run_command(run_dir, args), env=env, capture_output=True, text=True, timeout=RUN_TIMEOUT_S
    )


@dataclass
class Outcome:
    """What a signal really did."""

    signalled: bool = False
    """False: the run ended, or was past the point in every attempt, before it was signalled."""
    done_at_kill: list[str] = field(default_factory=list)
    """Stages whose marker existed when the signal went out (read while the run was stopped)."""
    missed: list[list[str]] = field(default_factory=list)
    """The finished stages of each attempt that was past the point when stopped."""
    done_after: list[str] = field(default_factory=list)
    """Stages whose marker exists once the process ended."""
    markers_after: dict[str, int] = field(default_factory=dict)
    returncode: int | None = None
    log: str = ""

    @property
    def hit(self) -> str:
        """The stage the signal interrupted ('done' when all had finished)."""
        left = [s for s in STAGES if s not in self.done_at_kill]
        return left[0] if left else "done"


def interrupt_at(
    point: Point, run_dir: Path, env: dict[str, str], ref: Reference, undo: Sequence[Path] = ()
) -> Outcome:
    """Start a run and send ``point.signal`` at ``point``; wait for the process to end.

    An attempt that finds the point passed is undone (the run directory and the folders in
    ``undo``, e.g. a fresh cache, put back as they were) and the point tried again, sooner, up to
    ``ATTEMPTS`` times.
    """
    delay = ref.delay(point)
    kept = {path: path.with_name(path.name + ".before") for path in (run_dir, *undo)}
    for path, copy in kept.items():
        if path.exists():
            shutil.copytree(path, copy, symlinks=True)
    missed: list[list[str]] = []
    try:
        for attempt in range(ATTEMPTS):
            outcome = _signal_once(point, delay, run_dir, ref.args, env)
            if outcome.signalled or not outcome.missed:
                outcome.missed[:0] = missed
                return outcome
            missed += outcome.missed
            ref.note(run_dir)
            delay = ref.delay(point) if attempt + 2 < ATTEMPTS else 0.0
            for path, copy in kept.items():
                shutil.rmtree(path, ignore_errors=True)
                if copy.exists():
                    shutil.copytree(copy, path, symlinks=True)
        outcome.missed = missed
        return outcome
    finally:
        for copy in kept.values():
            shutil.rmtree(copy, ignore_errors=True)


def _signal_once(
    point: Point, delay: float, run_dir: Path, args: Sequence[str], env: dict[str, str]
) -> Outcome:
    process = subprocess.Popen(
        run_command(run_dir, args),
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    drain = _Drain(process, re.compile(re.escape(point.trigger)), stop_at_once=delay <= 0)
    outcome = Outcome()
    try:
        if drain.wait_for_trigger(RUN_TIMEOUT_S):
            time.sleep(max(0.0, drain.seen_at + delay - time.monotonic()))
            if _stop(process):
                done = finished(run_dir)
                if point.reached(done):
                    outcome.done_at_kill = done
                    process.send_signal(point.signal)
                    outcome.signalled = True
                else:
                    outcome.missed.append(done)
                    process.kill()
                os.kill(process.pid, signal.SIGCONT)  # SIGINT acts once it runs again
        process.wait(timeout=RUN_TIMEOUT_S)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        drain.join()
    outcome.returncode, outcome.log = process.returncode, drain.text
    outcome.done_after, outcome.markers_after = finished(run_dir), marker_times(run_dir)
    return outcome


def _stop(process: subprocess.Popen) -> bool:
    """Stop ``process`` and wait until it is stopped: True, or False when it ended first."""
    if process.poll() is not None:
        return False
    os.kill(process.pid, signal.SIGSTOP)
    _, status = os.waitpid(process.pid, os.WUNTRACED)
    if os.WIFSTOPPED(status):
        return True
    process.returncode = os.waitstatus_to_exitcode(status)  # it ended: reaped here
    return False


class _Drain:
    """Read a child's stdout and stderr in threads (a full pipe would block it), noting when the
    first line matching ``trigger`` arrives; with ``stop_at_once``, stop the child right then."""

    def __init__(
        self, process: subprocess.Popen, trigger: re.Pattern[str], stop_at_once: bool
    ) -> None:
        self.process, self.trigger, self.stop_at_once = process, trigger, stop_at_once
        self.seen = threading.Event()
        self.seen_at = 0.0
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
            if not self.seen.is_set() and self.trigger.search(line):
                if self.stop_at_once:
                    try:
                        os.kill(self.process.pid, signal.SIGSTOP)
                    except ProcessLookupError:
                        pass  # it ended meanwhile; ``_stop`` finds out
                self.seen_at = time.monotonic()
                self.seen.set()

    def wait_for_trigger(self, timeout: float) -> bool:
        """True once the trigger line came; False when the process ended without it."""
        start = time.monotonic()
        while not self.seen.wait(POLL_S):
            if self.process.poll() is not None:
                return self.seen.is_set()
            if time.monotonic() - start > timeout:
                raise AssertionError(f"no line {self.trigger.pattern!r} in {timeout} s")
        return True

    def join(self) -> None:
        for thread in self.threads:
            thread.join(timeout=30)

    @property
    def text(self) -> str:
        return "".join(self.chunks)[-4000:]
