"""Kill -9 and Ctrl-C at sampled points of every stage; the rerun must end equal to an
uninterrupted run, reusing every stage that had finished.

By default a seeded few points run (SAEINVERSE_FAULTS_SEED, default 0); SAEINVERSE_FAULTS_FULL=1
runs the whole schedule (``harness.schedule``) plus kills while a fresh cache is filled (the SAE's
first-use training, the first reference maximum) and a kill of the rerun itself.
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


def _fault_class(point: harness.Point) -> str:
    name = "kill -9" if point.signal == signal.SIGKILL else "Ctrl-C (SIGINT)"
    where = "inside a stage" if point.when == "within" else "between stages"
    return f"{name} {where}"


def _check_killed_as_planned(case: str, point: harness.Point, outcome: harness.Outcome) -> None:
    """The signal went out at ``point`` (read from the markers while the run was stopped) and
    the process ended by it; fail naming ``case``, the point and what the process did."""
    planned = f"{case}: planned {point.describe()} (after the line {point.trigger!r})"
    output = f"the run's output ends:\n{outcome.log}"
    if not outcome.signalled and outcome.missed:
        pytest.fail(
            f"{planned}: the kill did not happen: in each of {len(outcome.missed)} attempts the "
            f"run was already past the point when stopped there (stages finished: "
            f"{outcome.missed}); {output}"
        )
    if not outcome.signalled:
        pytest.fail(
            f"{planned}: the kill did not happen: the run ended on its own with exit "
            f"{outcome.returncode} before the point came (stages finished: "
            f"{outcome.done_after}); {output}"
        )
    did = (
        f"exit {outcome.returncode}; stages finished when signalled {outcome.done_at_kill}, "
        f"at the end {outcome.done_after}; {output}"
    )
    assert point.reached(outcome.done_at_kill), f"{planned}: signalled elsewhere; {did}"
    if point.signal == signal.SIGKILL:
        assert outcome.returncode == -signal.SIGKILL, f"{planned}: not ended by the kill; {did}"
        assert outcome.done_after == outcome.done_at_kill, (
            f"{planned}: markers were written after kill -9; {did}"
        )
    else:  # caught by the CLI: one line, no traceback
        assert outcome.returncode == 130, f"{planned}: not ended by Ctrl-C; {did}"
        assert "saeinverse: interrupted" in outcome.log, did
        assert "Traceback" not in outcome.log, did


def _check_resumed(run_dir, env, reference, outcome: harness.Outcome) -> None:
    rerun = harness.finish(run_dir, env, reference.args)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    reference.note(run_dir)
    digests = artifact_digests(run_dir)
    differ = sorted(k for k in digests.keys() | reference.digests.keys()
                    if digests.get(k) != reference.digests.get(k))  # fmt: skip
    assert not differ, f"artifacts differ from the uninterrupted run: {differ}"
    after = harness.marker_times(run_dir)
    recomputed = [s for s, t in outcome.markers_after.items() if after.get(s) != t]
    assert not recomputed, f"finished stages were recomputed after the interruption: {recomputed}"


@pytest.mark.parametrize("point", POINTS, ids=[p.id for p in POINTS])
def test_interrupted_run_resumes_to_the_uninterrupted_artifacts(
    point, reference, campaign_cache, tmp_path
):
    env = harness.campaign_env(campaign_cache)
    run_dir = tmp_path / "run"
    outcome = harness.interrupt_at(point, run_dir, env, reference)
    _check_killed_as_planned(point.id, point, outcome)
    harness.record(_fault_class(point), point=point.id, hit=outcome.hit, missed=outcome.missed)
    harness.CAMPAIGN[f"  … of which hit stage {outcome.hit}"] += 1
    _check_resumed(run_dir, env, reference, outcome)
    harness.record("  … resumed equal to the uninterrupted run", point=point.id)


FRESH_CACHE_POINTS = [harness.Point(harness.STAGES[0], "training")] + [
    harness.Point(stage, "within", 0.5) for stage in ("reference",) if stage in harness.STAGES
]


@FULL_ONLY
@pytest.mark.parametrize("point", FRESH_CACHE_POINTS, ids=[p.id for p in FRESH_CACHE_POINTS])
def test_kill_while_a_fresh_cache_is_filled(point, request, campaign_cache, tmp_path):
    """A fresh cache: a run that names no SAE trains the default one first; every run computes
    the reference maximum into the cache once; kill it during either, the rerun computes it
    again."""
    training = point.when == "training"
    reference = request.getfixturevalue("training_reference" if training else "reference")
    cache = tmp_path / "cache"
    if (campaign_cache / "numba").is_dir():  # UMAP's compiled code only
        shutil.copytree(campaign_cache / "numba", cache / "numba")
    env = harness.campaign_env(cache)
    outcome = harness.interrupt_at(point, tmp_path / "run", env, reference, undo=[cache])
    _check_killed_as_planned(f"fresh cache, {point.id}", point, outcome)
    trained = cache / "saeinverse" / "saes"
    if training:
        assert not list(trained.glob("*/*/cfg.json")), "the SAE was saved before the kill"
    harness.record(f"kill -9 while a fresh cache is filled ({point.id})", hit=outcome.hit)
    _check_resumed(tmp_path / "run", env, reference, outcome)
    if training:
        assert list(trained.glob("*/*/cfg.json")), "the rerun did not train the SAE"


@FULL_ONLY
def test_the_rerun_killed_too(reference, campaign_cache, tmp_path):
    env = harness.campaign_env(campaign_cache)
    run_dir = tmp_path / "run"
    first, second = harness.Point("collect", "within", 0.5), harness.Point("invert", "within", 0.5)
    outcome = harness.interrupt_at(first, run_dir, env, reference)
    _check_killed_as_planned("the first run", first, outcome)
    outcome = harness.interrupt_at(second, run_dir, env, reference)
    _check_killed_as_planned("its rerun", second, outcome)
    harness.record("kill -9 of a run, then of its rerun", hit=outcome.hit)
    _check_resumed(run_dir, env, reference, outcome)
