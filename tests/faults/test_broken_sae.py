"""Issue 14.5 through the CLI: a run with an all-dead SAE finishes (with warnings), a run with a
NaN SAE stops at collection with one line; neither prints a traceback."""

from __future__ import annotations

import pytest
import torch

from saeinverse.cli import main
from tests import builders
from tests.faults import harness


def _saved_sae(folder, fill_bias: float):
    sae = builders.tiny_sae()
    with torch.no_grad():
        sae.b_enc.fill_(fill_bias)
    sae.save_model(str(folder))
    return folder


def test_a_run_with_an_all_dead_sae_finishes_and_says_why_nothing_was_chosen(
    tmp_path, monkeypatch, capsys, caplog
):
    harness.CAMPAIGN["broken SAE (all dead, NaN) through the CLI"] += 1
    monkeypatch.setenv("SAEINVERSE_CACHE", str(tmp_path / "cache"))
    sae = _saved_sae(tmp_path / "dead", -1e4)
    run_dir = tmp_path / "run"
    assert (
        main(["run", "--run-dir", str(run_dir), *builders.tiny_run_args(sae={"path": str(sae)})])
        == 0
    )
    assert "Traceback" not in capsys.readouterr().err
    assert "no features to cluster" in caplog.text
    assert "the selection is empty" in caplog.text
    assert (run_dir / "report" / "report.html").exists()


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_a_run_with_a_non_finite_sae_stops_at_collection_with_one_line(
    bad, tmp_path, monkeypatch, capsys
):
    harness.CAMPAIGN["broken SAE (all dead, NaN) through the CLI"] += 1
    monkeypatch.setenv("SAEINVERSE_CACHE", str(tmp_path / "cache"))
    sae = _saved_sae(tmp_path / "nan", bad)
    run_dir = tmp_path / "run"
    assert (
        main(["run", "--run-dir", str(run_dir), *builders.tiny_run_args(sae={"path": str(sae)})])
        == 2
    )
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if "saeinverse: error" in line]  # after the bar
    assert len(lines) == 1 and "Traceback" not in err
    assert lines[0].startswith("saeinverse: error: the SAE gave NaN or infinite activations for 64")
    assert not (run_dir / "collect" / "_SUCCESS.json").exists()
