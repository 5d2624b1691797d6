"""Checkpoints inside long stages on the in-process pool, on the tiny model: a run SIGKILLed
after K units of a stage (collection shards, inversion batches, explanation drafts or scored
batches) reruns only the missing units, says how many it reused, and ends with the artifacts of
an uninterrupted run.

The kill is deterministic: the killed run is a subprocess whose ``UnitStore.save`` sends SIGKILL
to its own process right after the K-th unit of the stage is saved. That subprocess cannot import
Ray, so these runs also show the in-process pool never does.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

import saeinverse
from saeinverse.cli import main
from saeinverse.collect.stats import FeatureStats
from saeinverse.io import load_json
from tests.run.golden import artifact_digests
from tests.test_cli import TINY_RUN

CHECKPOINTED = [
    *TINY_RUN,
    "pipeline.run_clustering=false",  # select the 4 strongest survivors directly
    "pipeline.run_visualization=false",
    "clustering.selection.max_features=4",
    "optimization.reference_tokens=2000",
    "explanation={judge: false, fit_sentence: false, heldout_prompts: 4, n_bootstrap: 100}",
    "scale.shard_prompts=8",  # 30 prompts: 4 shards
    "scale.feature_batch=1",  # 4 features: 4 batches
]
ONE_PASS = ["scale.shard_prompts=256", "scale.feature_batch=8"]  # one shard, one batch: no split
SUMS = "collect/feature_stats.safetensors"
"""Float64 sums merged from shards: equal to rounding (the rest of the statistics exactly)."""

KILL_AFTER = textwrap.dedent(
    """
    import os, signal, sys
    import torch
    from saeinverse.cli import main
    from saeinverse import units

    stage, after, saved = sys.argv[1], int(sys.argv[2]), []
    save = units.UnitStore.save

    def save_then_die(self, index, result):  # root: <stage>/units/<kind>/<plan>
        save(self, index, result)
        if self.root.parents[2].name == stage:
            saved.append(index)
            if len(saved) == after:
                os.kill(os.getpid(), signal.SIGKILL)

    units.UnitStore.save = save_then_die
    sys.modules["ray"] = None  # the local engine never imports Ray: importing it would fail
    torch.set_num_threads(1)
    sys.exit(main(sys.argv[3:]))
    """
)


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("checkpoint_cache")


@pytest.fixture
def one_thread(cache, monkeypatch):
    monkeypatch.setenv("SAEINVERSE_CACHE", str(cache))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def run(run_dir: Path, *extra: str) -> int:
    return main(["run", "--run-dir", str(run_dir), *CHECKPOINTED, *extra])


@pytest.fixture(scope="module")
def reference(cache, tmp_path_factory) -> Path:
    """An uninterrupted checkpointed run (it also trains the tiny SAE into ``cache``)."""
    root = tmp_path_factory.mktemp("reference") / "run"
    patch = pytest.MonkeyPatch()
    patch.setenv("SAEINVERSE_CACHE", str(cache))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        assert run(root) == 0
    finally:
        torch.set_num_threads(threads)
        patch.undo()
    return root


def units(run_dir: Path, stage: str) -> list[str]:
    """The stage's saved units, as ``<kind>/<unit>``."""
    found = (run_dir / stage / "units").glob("*/*/*")
    return sorted(f"{p.parent.parent.name}/{p.name}" for p in found)


def kill_after(run_dir: Path, stage: str, count: int, cache: Path, *extra: str) -> None:
    """Run the pipeline in a subprocess, SIGKILLed right after ``count`` units of ``stage``."""
    src = str(Path(saeinverse.__file__).resolve().parents[1])
    env = {**os.environ, "SAEINVERSE_CACHE": str(cache), "HF_HUB_OFFLINE": "1"}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (src, env.get("PYTHONPATH", "")) if p)
    command = ["run", "--run-dir", str(run_dir), *CHECKPOINTED, *extra]
    done = subprocess.run(
        [sys.executable, "-c", KILL_AFTER, stage, str(count), *command],
        env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert done.returncode == -signal.SIGKILL, done.stderr[-2000:]
    assert not (run_dir / stage / "_SUCCESS.json").exists()
    assert len(units(run_dir, stage)) == count


def reused(caplog, stage: str) -> list[str]:
    return [r.getMessage().split(" saved under")[0] for r in caplog.records
            if r.getMessage().startswith(f"{stage}: reused")]  # fmt: skip


def test_the_local_engine_saves_each_unit_and_equals_one_pass(reference, one_thread, tmp_path):
    for stage in ("collect", "invert", "explain"):  # saved while running (see the kill tests)
        assert units(reference, stage) == [], "a finished stage keeps no units/"
    assert len(load_json(reference / "invert" / "inversions.json")["inversions"]) == 4

    assert run(tmp_path / "one", *ONE_PASS) == 0
    split, whole = artifact_digests(reference), artifact_digests(tmp_path / "one")
    assert "invert/inversions.json" in whole and "explain/explanations.jsonl" in whole
    assert {k: v for k, v in split.items() if k != SUMS} == {
        k: v for k, v in whole.items() if k != SUMS
    }
    got, want = (
        FeatureStats.load(reference / "collect"),
        FeatureStats.load(tmp_path / "one" / "collect"),
    )
    for name in ("firing_count", "max_activation", "exemplar_prompt", "tokens"):
        assert torch.equal(getattr(got, name), getattr(want, name)), name
    torch.testing.assert_close(got.activation_sum, want.activation_sum, rtol=1e-9, atol=0)


@pytest.mark.parametrize(("stage", "count"), [("invert", 2), ("collect", 3)])
def test_a_kill_mid_stage_redoes_only_the_missing_units(
    reference, cache, one_thread, tmp_path, caplog, stage, count
):
    """Killed after ``count`` of 4 inversion batches / collection shards, rerun, same artifacts."""
    kill_after(tmp_path / "run", stage, count, cache)
    caplog.set_level(logging.INFO, logger="saeinverse")
    assert run(tmp_path / "run") == 0
    assert reused(caplog, stage) == [f"{stage}: reused {count} of 4 units"]
    others = [s for s in ("collect", "invert", "explain") if s != stage]
    assert all(reused(caplog, other) == [] for other in others)  # finished or fresh
    assert artifact_digests(tmp_path / "run") == artifact_digests(reference)


@pytest.mark.parametrize(("count", "drafts", "scored"), [(3, 3, 0), (6, 4, 2)])
def test_explanations_are_checkpointed_per_batch_in_both_passes(
    reference, cache, one_thread, tmp_path, caplog, count, drafts, scored
):
    """Killed after 3 of 4 drafts, or after every draft and 2 of 4 scored batches."""
    killed = Path(shutil.copytree(reference, tmp_path / "killed"))
    shutil.rmtree(killed / "explain")
    kill_after(killed, "explain", count, cache)
    caplog.set_level(logging.INFO, logger="saeinverse")
    assert run(killed) == 0
    assert reused(caplog, "explain") == [f"explain: reused {drafts} of 4 units"]
    assert reused(caplog, "score explanations") == (
        [f"score explanations: reused {scored} of 4 units"] if scored else []
    )
    assert artifact_digests(killed) == artifact_digests(reference)
