"""Kill -9 and Ctrl-C at sampled points of every stage; the rerun must end equal to an
uninterrupted run, reusing every stage that had finished.

By default a seeded few points run (SAEINVERSE_FAULTS_SEED, default 0); SAEINVERSE_FAULTS_FULL=1
runs the whole schedule (``harness.schedule``) plus a kill during the SAE's first-use training and
a kill of the rerun itself.
"""

from __future__ import annotations

import shutil
import signal

import pytest

from tests.faults import harness
from tests.run.golden import artifact_digests

POINTS = harness.schedule(harness.campaign_seed(), harness.full_campaign())
FULL_ONLY = pytest.mark.skipif(
    not harness.full_campaign(), reason="full campaign only (SAEINVERSE_FAULTS_FULL=1)"
)


def _fault_class(point: harness.Point, outcome: harness.Outcome) -> str:
    name = "kill -9" if point.signal == signal.SIGKILL else "Ctrl-C (SIGINT)"
    where = "inside a stage" if point.when == "within" else "between stages"
    return f"{name} {where}"


def _check_signal_effect(point: harness.Point, outcome: harness.Outcome) -> None:
    if not outcome.signalled:
        return
    seen = f"exit {outcome.returncode}, hit {outcome.hit}; the run's output ends:\n{outcome.log}"
    if point.signal == signal.SIGKILL:
        assert outcome.returncode == -signal.SIGKILL, seen
    elif outcome.returncode == 130:  # caught by the CLI: one line, no traceback
        assert "saeinverse: interrupted" in outcome.log, seen
        assert "Traceback" not in outcome.log, seen
    else:  # SIGINT before the CLI's handler was installed (during imports)
        assert outcome.returncode in (-signal.SIGINT, 1), seen


def _check_resumed(run_dir, env, reference, outcome: harness.Outcome) -> None:
    rerun = harness.finish(run_dir, env)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    digests = artifact_digests(run_dir)
    differ = sorted(k for k in digests.keys() | reference.digests.keys()
                    if digests.get(k) != reference.digests.get(k))  # fmt: skip
    assert not differ, f"artifacts differ from the uninterrupted run: {differ}"
    after = harness.marker_times(run_dir)
    recomputed = [s for s, t in outcome.markers_at_kill.items() if after.get(s) != t]
    assert not recomputed, f"finished stages were recomputed after the interruption: {recomputed}"


@pytest.mark.parametrize("point", POINTS, ids=[p.id for p in POINTS])
def test_interrupted_run_resumes_to_the_uninterrupted_artifacts(
    point, reference, campaign_cache, tmp_path
):
    env = harness.campaign_env(campaign_cache)
    run_dir = tmp_path / "run"
    outcome = harness.interrupt_at(point, run_dir, env, reference)
    harness.record(_fault_class(point, outcome), point=point.id, hit=outcome.hit)
    harness.CAMPAIGN[f"  … of which hit stage {outcome.hit}"] += 1
    _check_signal_effect(point, outcome)
    _check_resumed(run_dir, env, reference, outcome)
    harness.record("  … resumed equal to the uninterrupted run", point=point.id)


@FULL_ONLY
def test_kill_during_first_use_sae_training(reference, campaign_cache, tmp_path):
    """A fresh cache: the run trains the SAE first; kill it then, the rerun trains it again."""
    cache = tmp_path / "cache"
    if (campaign_cache / "numba").is_dir():  # UMAP's compiled code only: no SAE
        shutil.copytree(campaign_cache / "numba", cache / "numba")
    env = harness.campaign_env(cache)
    point = harness.Point("models", "within", 0.6)
    outcome = harness.interrupt_at(point, tmp_path / "run", env, reference)
    harness.record("kill -9 during the SAE's first-use training", hit=outcome.hit)
    assert outcome.signalled and outcome.hit == "models"
    _check_resumed(tmp_path / "run", env, reference, outcome)


@FULL_ONLY
def test_the_rerun_killed_too(reference, campaign_cache, tmp_path):
    env = harness.campaign_env(campaign_cache)
    run_dir = tmp_path / "run"
    first = harness.interrupt_at(harness.Point("collect", "within", 0.5), run_dir, env, reference)
    second = harness.interrupt_at(harness.Point("invert", "within", 0.5), run_dir, env, reference)
    harness.record("kill -9 of a run, then of its rerun", hit=second.hit)
    assert first.signalled and second.signalled
    _check_resumed(run_dir, env, reference, second)
