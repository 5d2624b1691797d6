"""The fault campaign's shared state: one uninterrupted reference run of the tiny run per session
(in a private cache), one of the tiny run that trains the default SAE (asked for by the full
campaign only), and a summary of the cases each fault class tried."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from tests.builders import TINY_RUN_TRAINING
from tests.faults import harness


@pytest.fixture(scope="session")
def campaign_cache(tmp_path_factory) -> Path:
    """A session cache (the reference maximum, UMAP's compiled code) shared by the campaign's
    runs."""
    return tmp_path_factory.mktemp("faults-cache")


@pytest.fixture(scope="session")
def reference(campaign_cache, tmp_path_factory) -> harness.Reference:
    """The uninterrupted tiny run every interrupted one must end equal to."""
    run_dir = tmp_path_factory.mktemp("faults-reference") / "run"
    ref = harness.reference_run(run_dir, harness.campaign_env(campaign_cache))
    assert list(ref.seconds) == list(harness.STAGES), (
        f"the reference run finished {list(ref.seconds)}, not every stage {list(harness.STAGES)}"
    )
    return ref


@pytest.fixture(scope="session")
def training_reference(campaign_cache, tmp_path_factory) -> harness.Reference:
    """The uninterrupted tiny run that trains the default SAE on first use (in its own cache)."""
    cache = tmp_path_factory.mktemp("faults-training-cache")
    if (campaign_cache / "numba").is_dir():  # UMAP's compiled code only
        shutil.copytree(campaign_cache / "numba", cache / "numba")
    run_dir = tmp_path_factory.mktemp("faults-training-reference") / "run"
    env = harness.campaign_env(cache)
    return harness.reference_run(run_dir, env, TINY_RUN_TRAINING)


def pytest_terminal_summary(terminalreporter) -> None:
    if not harness.CAMPAIGN:
        return
    terminalreporter.section("fault campaign: cases tried per fault class")
    for name, count in sorted(harness.CAMPAIGN.items()):
        terminalreporter.write_line(f"{count:6d}  {name}")
    record = os.environ.get("SAEINVERSE_FAULTS_RECORD")
    if record:
        Path(record).write_text(json.dumps(dict(sorted(harness.CAMPAIGN.items())), indent=1))
