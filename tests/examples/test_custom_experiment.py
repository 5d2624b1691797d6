"""The example notebook runs end to end (on the tiny model, as CI runs it)."""

import runpy
from pathlib import Path

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "custom_experiment.py"


def test_example_runs_on_the_tiny_model(tiny_sae_cache, tmp_path, monkeypatch):
    """Its tiny branch names no SAE: it finds the saved tiny SAE cached as the default one."""
    monkeypatch.setenv("SAEINVERSE_EXAMPLE_MODEL", "tiny-char")
    monkeypatch.setenv("SAEINVERSE_EXAMPLE_OUT", str(tmp_path))
    namespace = runpy.run_path(str(EXAMPLE), run_name="__main__")
    inversions = namespace["inversions"]
    assert [inv.feature_id for inv in inversions] == namespace["selection"].feature_ids
    assert all(inv.refined_activation > 0 for inv in inversions)
    assert (tmp_path / "run" / "report" / "report.html").exists()
