import subprocess
import sys

import yaml

from saeinverse import get_default_config
from saeinverse.cli import main
from saeinverse.config import config_from_dict
from tests import builders


def test_config_show_prints_resolved_yaml(capsys, tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("data:\n  n_prompts: 9\n")
    assert main(["config", "show", "--config", str(path), "data.max_length=32"]) == 0
    shown = config_from_dict(yaml.safe_load(capsys.readouterr().out))
    assert shown.data.n_prompts == 9 and shown.data.max_length == 32
    assert shown.model == get_default_config().model


def test_user_error_is_one_line_and_exit_2(capsys):
    assert main(["config", "show", "data.n_promts=3"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("saeinverse: error: unknown config key 'n_promts'")
    assert "Traceback" not in err and err.count("\n") == 1


def test_python_dash_m_entry_point():
    out = subprocess.run(
        [sys.executable, "-m", "saeinverse", "config", "show", "seed=5"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert yaml.safe_load(out.stdout)["seed"] == 5


def test_unknown_force_stage_is_clear(capsys, tmp_path):
    code = main(
        ["run", "--force", "colect", "--run-dir", str(tmp_path), "output.dir=" + str(tmp_path)]
    )
    assert code == 2
    assert "colect" in capsys.readouterr().err


TINY_RUN = builders.TINY_RUN_TRAINING
"""The tiny run naming no SAE (it trains the default one on first use, as this module checks)."""


def test_run_trains_the_sae_on_first_use_then_resumes(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("SAEINVERSE_CACHE", str(tmp_path / "cache"))
    run_dir = tmp_path / "run"
    assert main(["run", "--run-dir", str(run_dir), *TINY_RUN]) == 0
    saes = list((tmp_path / "cache" / "saes").glob("*/*/cfg.json"))
    assert len(saes) == 1, "the default SAE is trained and cached on first use"
    markers = {p: p.stat().st_mtime_ns for p in run_dir.glob("*/_SUCCESS.json")}
    assert {p.parent.name for p in markers} >= {"collect", "invert", "explain", "report"}
    capsys.readouterr()
    assert main(["run", "--run-dir", str(run_dir), *TINY_RUN]) == 0
    assert {p: p.stat().st_mtime_ns for p in run_dir.glob("*/_SUCCESS.json")} == markers
    assert main(["run", "--run-dir", str(run_dir), "--force", "invert", *TINY_RUN]) == 0
    changed = [p.parent.name for p in markers if p.stat().st_mtime_ns != markers[p]]
    assert "invert" in changed and "collect" not in changed
    (run_dir / "report" / "report.html").unlink()
    assert main(["report", str(run_dir)]) == 0
    assert (run_dir / "report" / "report.html").exists()
