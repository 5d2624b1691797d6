"""The fault campaign's shared state: one uninterrupted reference run per session (which also
trains the tiny SAE into a private cache), and a summary of the cases each fault class tried."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from tests.faults import harness


@pytest.fixture(scope="session")
def campaign_cache(tmp_path_factory) -> Path:
    """A session cache (the tiny SAE, UMAP's compiled code) shared by every campaign run."""
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


def pytest_terminal_summary(terminalreporter) -> None:
    if not harness.CAMPAIGN:
        return
    terminalreporter.section("fault campaign: cases tried per fault class")
    for name, count in sorted(harness.CAMPAIGN.items()):
        terminalreporter.write_line(f"{count:6d}  {name}")
    record = os.environ.get("SAEINVERSE_FAULTS_RECORD")
    if record:
        Path(record).write_text(json.dumps(dict(sorted(harness.CAMPAIGN.items())), indent=1))
