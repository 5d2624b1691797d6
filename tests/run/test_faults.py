"""A finished tiny run under faults and bad input: stale stages, changed files, a second run at
once, a rejected config, a run directory that cannot be used. Each test copies one finished run."""

from __future__ import annotations

import errno
import json
import shutil
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch

from saeinverse.artifacts import MARKER, stage_spec
from saeinverse.cli import main
from saeinverse.report import load_run
from tests.test_cli import TINY_RUN


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> Path:
    """One finished tiny run (read-only: tests copy it); its SAE cache lives beside it."""
    root = tmp_path_factory.mktemp("finished")
    patch = pytest.MonkeyPatch()
    patch.setenv("SAEINVERSE_CACHE", str(root / "cache"))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        assert main(["run", "--run-dir", str(root / "run"), *TINY_RUN]) == 0
    finally:
        torch.set_num_threads(threads)
        patch.undo()
    return root


@pytest.fixture
def run_dir(finished, tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("SAEINVERSE_CACHE", str(finished / "cache"))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield Path(shutil.copytree(finished / "run", tmp_path / "run"))
    torch.set_num_threads(threads)


def snapshot(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }


def stamps(root: Path) -> dict[str, int]:
    return {p.parent.name: p.stat().st_mtime_ns for p in root.glob("*/" + MARKER)}


def run(run_dir: Path, *extra: str) -> int:
    return main(["run", "--run-dir", str(run_dir), *TINY_RUN, *extra])


# ----------------------------------------------------------------------------- stale stages


def test_an_early_change_marks_later_stages_stale_in_the_report(run_dir, capsys):
    before = stamps(run_dir)
    narrower = "data.filtering.sparsity_max=0.5"
    assert main(["filter", "--run-dir", str(run_dir), *TINY_RUN, narrower]) == 0
    after = stamps(run_dir)
    assert after["filter"] != before["filter"] and after["collect"] == before["collect"]
    assert main(["report", str(run_dir)]) == 0
    loaded = load_run(run_dir)
    assert loaded.status["collect"] == "done" and loaded.status["filter"] == "done"
    for later in ("cluster", "select", "invert", "explain"):
        assert loaded.status[later] == "stale", later
    html = (run_dir / "report" / "report.html").read_text()
    assert "Clustering (cluster/): stale" in html


def test_markers_name_the_outputs_they_read(run_dir):
    markers = {p.parent.name: json.loads(p.read_text()) for p in run_dir.glob("*/" + MARKER)}
    assert markers["filter"]["inputs"] == {"collect": markers["collect"]["output"]}
    assert set(markers["report"]["inputs"]) == set(markers) - {"report"}
    for name, marker in markers.items():  # the stage list names exactly the files written
        assert set(marker["files"]) == set(stage_spec(name).artifacts), name


def test_use_cached_data_false_recollects(run_dir):
    before = stamps(run_dir)
    assert run(run_dir) == 0
    assert stamps(run_dir) == before  # the default reuses every finished stage
    assert run(run_dir, "data.use_cached_data=false") == 0
    assert stamps(run_dir)["collect"] != before["collect"]


# ----------------------------------------------------------------------------- checksums


def test_a_hand_edited_artifact_is_recomputed(run_dir, caplog):
    path = run_dir / "invert" / "inversions.json"
    original = json.loads(path.read_text())
    edited = json.loads(path.read_text())
    records = edited if isinstance(edited, list) else edited["inversions"]
    records[0]["refined_activation"] = 12345.0
    path.write_text(json.dumps(edited))
    assert run(run_dir) == 0
    assert "invert: its files no longer match their checksums" in caplog.text
    again = json.loads(path.read_text())
    records = again if isinstance(again, list) else again["inversions"]
    originals = original if isinstance(original, list) else original["inversions"]
    assert records[0]["refined_activation"] == originals[0]["refined_activation"] != 12345.0


def test_a_repaired_stage_rebuilds_the_report(run_dir):
    (run_dir / "invert" / "inversions.json").write_text("{ corrupt")
    assert main(["report", str(run_dir)]) == 0
    assert "could not be read" in (run_dir / "report" / "report.html").read_text()
    assert run(run_dir, "--force", "invert") == 0
    html = (run_dir / "report" / "report.html").read_text()
    assert "could not be read" not in html and "artifacts unreadable" not in html
    assert load_run(run_dir).status["invert"] == "done"


# ----------------------------------------------------------------------------- validate, then touch


@pytest.mark.parametrize(
    "overrides",
    [
        ["optimization.length=0"],
        ["optimization.lr=-1"],
        ["optimization.refine_candidates=0"],
        ["clustering.method=kmeans", "clustering.kmeans.n_clusters=0"],
        ["clustering.selection.feature_ids=[3, 9999]"],
    ],
)
def test_a_rejected_run_changes_nothing_on_disk(run_dir, capsys, overrides):
    before = snapshot(run_dir)
    assert run(run_dir, *overrides) == 2
    err = capsys.readouterr().err
    assert err.startswith("saeinverse: error:") and err.count("\n") == 1
    assert snapshot(run_dir) == before


def test_a_rejected_fresh_run_leaves_no_folder(tmp_path, finished, monkeypatch):
    monkeypatch.setenv("SAEINVERSE_CACHE", str(finished / "cache"))
    fresh = tmp_path / "fresh"
    assert run(fresh, "clustering.selection.feature_ids=[9999]") == 2
    assert not fresh.exists()


# ----------------------------------------------------------------------------- one run at a time

HOLD = textwrap.dedent(
    """
    import sys, time
    from filelock import FileLock
    lock = FileLock(sys.argv[1])
    lock.acquire()
    print("held", flush=True)
    time.sleep(float(sys.argv[2]))
    lock.release()
    """
)


def hold_lock(run_dir: Path, seconds: float) -> subprocess.Popen:
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(run_dir / ".lock"), str(seconds)],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert holder.stdout.readline().strip() == "held"
    return holder


def test_a_second_run_on_the_same_directory_refuses(run_dir, capsys):
    before = snapshot(run_dir)
    holder = hold_lock(run_dir, 60)
    try:
        assert run(run_dir, "seed=1") == 2
    finally:
        holder.kill()
        holder.wait()
    err = capsys.readouterr().err
    assert "in use by another saeinverse run" in err and "--wait" in err
    assert err.count("\n") == 1 and snapshot(run_dir) == before


def test_wait_waits_for_the_other_run(run_dir, caplog):
    holder = hold_lock(run_dir, 2)
    start = time.perf_counter()
    try:
        assert run(run_dir, "--wait") == 0
    finally:
        holder.wait()
    assert time.perf_counter() - start >= 1.0
    assert "is in use: waiting for the other run" in caplog.text


# ----------------------------------------------------------------------------- unusable directories


def test_a_run_directory_that_is_a_file(tmp_path, capsys):
    path = tmp_path / "not-a-dir"
    path.write_text("x")
    assert main(["run", "--run-dir", str(path), *TINY_RUN]) == 2
    assert "is a file" in capsys.readouterr().err
    assert main(["run", f"output.dir={path}", *TINY_RUN]) == 2
    err = capsys.readouterr().err
    assert "is a file" in err and err.count("\n") == 1
    assert main(["report", str(path)]) == 2
    err = capsys.readouterr().err
    assert "is a file, not a run directory" in err and err.count("\n") == 1


def test_a_read_only_filesystem_is_one_line(run_dir, capsys, monkeypatch):
    def read_only(*args, **kwargs):
        raise OSError(errno.EROFS, "Read-only file system", str(run_dir / "report"))

    monkeypatch.setattr("saeinverse.report.build.write_text", read_only)
    assert main(["report", str(run_dir)]) == 2
    err = capsys.readouterr().err
    assert "Read-only file system" in err and err.count("\n") == 1
    monkeypatch.setattr("saeinverse.run.rundir.write_text", read_only)
    assert run(run_dir) == 2
    err = capsys.readouterr().err
    assert "Read-only file system" in err and err.count("\n") == 1
    assert "Traceback" not in err


def test_an_unreadable_artifact_suggests_force(run_dir):
    marker = run_dir / "collect" / MARKER
    data = json.loads(marker.read_text())
    data.pop("files")  # a marker without checksums is trusted, so the load itself fails
    marker.write_text(json.dumps(data))
    (run_dir / "collect" / "feature_stats.json").write_text("{ corrupt")
    code = run(run_dir)
    assert code == 2
    assert main(["report", str(run_dir)]) == 0
    assert "--force collect" in (run_dir / "report" / "report.html").read_text()


def test_two_real_runs_never_interleave(tmp_path, finished, capsys):
    """The issue's case: seed 0 and seed 1 into one directory at once; the second refuses and
    the directory holds the first one's results under the first one's config."""
    import os

    run_dir = tmp_path / "run"
    env = {**os.environ, "SAEINVERSE_CACHE": str(finished / "cache"), "OMP_NUM_THREADS": "1"}
    first = subprocess.Popen(
        [sys.executable, "-m", "saeinverse", "run", "--run-dir", str(run_dir), *TINY_RUN],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 120
        while not (run_dir / "config.yaml").exists():  # written under the lock
            assert first.poll() is None and time.monotonic() < deadline
            time.sleep(0.05)
        assert not (run_dir / "report" / MARKER).exists(), "the first run is still going"
        assert run(run_dir, "seed=1") == 2
        assert "in use by another saeinverse run" in capsys.readouterr().err
    finally:
        assert first.wait(timeout=600) == 0
    assert "seed: 0" in (run_dir / "config.yaml").read_text()
    assert load_run(run_dir).status["invert"] == "done"
