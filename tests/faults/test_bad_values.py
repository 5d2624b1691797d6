"""Regression tests of issue 14 items 6, 8 and 11: a value out of range is rejected at config time
through the CLI (exit 2, one line naming the key and its valid range), before anything runs."""

from __future__ import annotations

import pytest

from saeinverse.cli import main
from tests.builders import TINY_RUN
from tests.faults import harness

BAD_RUNS = [
    (["data.batch_size=0"], "data.batch_size must be ≥ 1, got 0"),
    (["data.top_k_exemplars=0"], "data.top_k_exemplars must be ≥ 1, got 0"),
    (["optimization.lr=-1"], "optimization.lr must be > 0, got -1.0"),
    (
        ["clustering.method=kmeans", "clustering.kmeans.n_clusters=0"],
        "clustering.kmeans.n_clusters must be ≥ 1, got 0",
    ),
    (["clustering.selection.max_features=0"], "clustering.selection.max_features must be ≥ 1"),
    (["optimization.length=0"], "optimization.length must be ≥ 1, got 0"),
    (["data.n_prompts=-5"], "data.n_prompts must be ≥ 1, got -5"),
    (["optimization.lr=.nan"], "optimization.lr must be > 0, got nan"),
    (["seed=99999999999999999999"], "seed must be in [0, 4294967295]"),
]


def _one_error_line(err: str, expected: str) -> None:
    assert err.startswith(f"saeinverse: error: config key {expected}"), err
    assert err.count("\n") == 1 and "Traceback" not in err


@pytest.mark.parametrize("items, expected", BAD_RUNS, ids=[i[0][-1] for i in BAD_RUNS])
def test_run_with_a_bad_value_exits_2_on_one_line_before_anything_runs(
    items, expected, tmp_path, monkeypatch, capsys
):
    harness.CAMPAIGN["bad values on the command line (run)"] += 1
    monkeypatch.setenv("SAEINVERSE_CACHE", str(tmp_path / "cache"))
    run_dir = tmp_path / "run"
    assert main(["run", "--run-dir", str(run_dir), *TINY_RUN, *items]) == 2
    captured = capsys.readouterr()
    _one_error_line(captured.err, expected)
    assert captured.out == ""
    assert not run_dir.exists(), "a rejected run must not create its run directory"
    assert not (tmp_path / "cache").exists(), "a rejected run must not train or cache anything"


@pytest.mark.parametrize("items, expected", BAD_RUNS, ids=[i[0][-1] for i in BAD_RUNS])
def test_config_show_rejects_the_same_values(items, expected, capsys):
    """Issue 14.8: ``config show data.n_prompts=-5`` exited 0."""
    harness.CAMPAIGN["bad values on the command line (config show)"] += 1
    assert main(["config", "show", *items]) == 2
    captured = capsys.readouterr()
    _one_error_line(captured.err, expected)
    assert captured.out == ""


@pytest.mark.parametrize(
    "text, expected",
    [
        ("data:\n  n_prompts: [1,\n", "is not valid YAML: line 3, column 1: expected"),
        ("data: {n_prompts: 3\n", "is not valid YAML: line 2, column 1: expected"),
        ("data:\n\tn_prompts: 3\n", "is not valid YAML: line 2, column 1: found character '\\t'"),
    ],
)
def test_malformed_yaml_file_is_one_line_with_its_position(text, expected, tmp_path, capsys):
    """Issue 14.9: PyYAML's multi-line snippet is replaced by one line: position and problem."""
    harness.CAMPAIGN["malformed YAML (file or value)"] += 1
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    assert main(["config", "show", "--config", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"saeinverse: error: config file {path} {expected}"), err
    assert err.count("\n") == 1


@pytest.mark.parametrize("item", ["data.filtering={a: 1", "seed=[1,", "data.source=@x"])
def test_malformed_yaml_value_is_one_line_naming_the_override(item, capsys):
    harness.CAMPAIGN["malformed YAML (file or value)"] += 1
    assert main(["config", "show", item]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"saeinverse: error: override {item!r}: the value is not valid YAML")
    assert err.count("\n") == 1 and "Traceback" not in err


def test_a_config_file_that_is_binary_or_a_directory_is_one_line(tmp_path, capsys):
    binary = tmp_path / "c.yaml"
    binary.write_bytes(b"\xff\xfe\x00garbage")
    assert main(["config", "show", "--config", str(binary)]) == 2
    assert "is not UTF-8 text" in capsys.readouterr().err
    assert main(["config", "show", "--config", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "cannot read config file" in err and err.count("\n") == 1
