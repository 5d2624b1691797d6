"""Default model: kill -9 mid-inversion, rerun; the rerun's wall time against a fresh run's.

Runs (sequentially) F: a fresh run; K: a second fresh run killed (SIGKILL) halfway through its
inversion (F's inversion duration from the moment the select marker appears); R: K's rerun.
Prints per-stage finish times, wall times and `uptime` before and after each run.
Usage (from the repository root, which puts ``tests`` on the path):
    PYTHONPATH=. python bench/faults_measure.py OUT_DIR [KEY=VALUE ...]
"""

import signal
import subprocess
import sys
import time
from pathlib import Path

from saeinverse.artifacts import MARKER
from saeinverse.artifacts import STAGE_NAMES as STAGES


def uptime() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()


def run(run_dir: Path, overrides: list[str], kill_after_select: float | None = None):
    cmd = [sys.executable, "-m", "saeinverse", "run", "--run-dir", str(run_dir), *overrides]
    start = time.monotonic()
    ends, select_seen, killed = {}, None, None
    with open(run_dir.parent / f"{run_dir.name}.log", "w") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
        while proc.poll() is None:
            now = time.monotonic()
            for s in STAGES:
                if s not in ends and (run_dir / s / MARKER).exists():
                    ends[s] = now - start
            if kill_after_select is not None and "select" in ends:
                select_seen = select_seen or now
                if now - select_seen >= kill_after_select:
                    proc.send_signal(signal.SIGKILL)
                    killed = now - start
                    break
            time.sleep(0.05)
        proc.wait()
    wall = time.monotonic() - start
    for s in STAGES:
        if s not in ends and (run_dir / s / MARKER).exists():
            ends[s] = wall
    return {"rc": proc.returncode, "wall": wall, "ends": ends, "killed_at": killed}


def show(name: str, result: dict) -> None:
    ends = " ".join(f"{s}={t:.0f}s" for s, t in result["ends"].items())
    killed = f" killed at {result['killed_at']:.0f}s" if result["killed_at"] else ""
    print(
        f"{name}: exit {result['rc']}, wall {result['wall']:.1f} s{killed}; stages done at: {ends}"
    )
    sys.stdout.flush()


def main() -> None:
    out = Path(sys.argv[1])
    overrides = sys.argv[2:]
    out.mkdir(parents=True, exist_ok=True)
    print("overrides:", " ".join(overrides) or "(none)")
    print("before F:", uptime())
    fresh = run(out / "fresh", overrides)
    show("F fresh run", fresh)
    print("after F:", uptime())
    invert_s = fresh["ends"]["invert"] - fresh["ends"]["select"]
    killed = run(out / "killed", overrides, kill_after_select=0.5 * invert_s)
    show(
        f"K killed {0.5 * invert_s:.0f} s into inversion (F's inversion: {invert_s:.0f} s)", killed
    )
    print("after K:", uptime())
    rerun = run(out / "killed", overrides)
    show("R rerun of K", rerun)
    print("after R:", uptime())
    from tests.run.golden import artifact_digests  # the snapshot's tests/ is on PYTHONPATH

    a, b = artifact_digests(out / "fresh"), artifact_digests(out / "killed")
    differ = sorted(k for k in a.keys() | b.keys() if a.get(k) != b.get(k))
    print(f"rerun artifacts equal the fresh run's: {not differ} ({len(a)} files; differ: {differ})")
    print(
        f"rerun wall time {rerun['wall']:.1f} s = {rerun['wall'] / fresh['wall']:.2f} × the fresh "
        f"run's {fresh['wall']:.1f} s; K + R together {killed['wall'] + rerun['wall']:.1f} s "
        f"({(killed['wall'] + rerun['wall']) / fresh['wall']:.2f} ×)"
    )


if __name__ == "__main__":
    main()
