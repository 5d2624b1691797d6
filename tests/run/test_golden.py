"""Golden run: the same seed on ``tiny-char`` gives the same artifacts as the recorded ones.

``golden_tiny.json`` was recorded by the code before the stage-folder restructure; a change that
alters results on purpose re-records it (``python -m tests.run.test_golden``) and says why in its
commit.
"""

import json
import sys
from pathlib import Path

from saeinverse.cli import main
from tests.run.golden import artifact_digests
from tests.test_cli import TINY_RUN

GOLDEN = Path(__file__).with_name("golden_tiny.json")


def _run(run_dir: Path) -> dict[str, str]:
    assert main(["run", "--run-dir", str(run_dir), *TINY_RUN]) == 0
    return artifact_digests(run_dir)


def test_tiny_run_artifacts_equal_the_recorded_ones(tmp_path, monkeypatch):
    monkeypatch.setenv("SAEINVERSE_CACHE", str(tmp_path / "cache"))
    digests = _run(tmp_path / "run")
    golden = json.loads(GOLDEN.read_text())
    changed = sorted(k for k in golden.keys() | digests.keys() if golden.get(k) != digests.get(k))
    assert not changed, f"artifacts differ from the golden run: {changed}"


if __name__ == "__main__":  # re-record
    import os
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        os.environ["SAEINVERSE_CACHE"] = str(Path(tmp) / "cache")
        GOLDEN.write_text(json.dumps(_run(Path(tmp) / "run"), indent=1, sort_keys=True) + "\n")
    sys.exit(0)
