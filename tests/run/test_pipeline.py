"""The batch pipeline on the tiny model: stages run in order, are reused, recomputed, toggled."""

import pytest

from saeinverse import get_default_config, update_config
from saeinverse.run.pipeline import run_experiment
from saeinverse.run.rundir import MARKER
from tests.builders import tiny_overrides

SMALL = tiny_overrides(
    data={"max_length": 20},
    optimization={"refine_candidates": 8},
    pipeline={"run_explanations": False, "run_visualization": False},
)


@pytest.fixture
def small_config():
    return update_config(get_default_config(), SMALL)


def _run(config, models, run_dir, **kwargs):
    return run_experiment(config, models=models, run_dir=run_dir, **kwargs)


def test_stages_run_in_order_and_are_reused(tiny_model, tiny_sae, small_config, tmp_path):
    models = (tiny_model, tiny_sae, None, None)
    first = _run(small_config, models, tmp_path)
    for name in ("models", "collect", "filter", "cluster", "select", "reference", "invert"):
        assert (tmp_path / name / MARKER).exists(), name
    inversions = first.results["invert"]
    assert [inv.feature_id for inv in inversions] == first.results["select"].feature_ids
    stamps = {p: p.stat().st_mtime_ns for p in tmp_path.glob("*/" + MARKER)}
    again = _run(small_config, models, tmp_path)
    assert {p: p.stat().st_mtime_ns for p in tmp_path.glob("*/" + MARKER)} == stamps
    assert again.hashes == first.hashes
    assert again.results["select"].feature_ids == first.results["select"].feature_ids


def test_changed_config_recomputes_that_stage_and_what_follows(
    tiny_model, tiny_sae, small_config, tmp_path
):
    models = (tiny_model, tiny_sae, None, None)
    first = _run(small_config, models, tmp_path)
    changed = update_config(small_config, {"clustering": {"selection": {"max_features": 1}}})
    second = _run(changed, models, tmp_path)
    for name in ("models", "collect", "filter", "cluster", "reference"):
        assert second.hashes[name] == first.hashes[name], name
    for name in ("select", "invert"):
        assert second.hashes[name] != first.hashes[name], name
    assert len(second.results["invert"]) == 1


def test_toggles_switch_stages_off(tiny_model, tiny_sae, small_config, tmp_path):
    config = update_config(
        small_config,
        {
            "pipeline": {"run_clustering": False},
            "clustering": {"selection": {"feature_ids": [3, 5]}},
        },
    )
    ctx = _run(config, (tiny_model, tiny_sae, None, None), tmp_path)
    assert "cluster" not in ctx.results and not (tmp_path / "cluster").exists()
    assert ctx.results["select"].feature_ids == [3, 5]
    assert [inv.feature_id for inv in ctx.results["invert"]] == [3, 5]


def test_inversion_without_collection_uses_explicit_ids(
    tiny_model, tiny_sae, small_config, tmp_path
):
    config = update_config(
        small_config,
        {
            "pipeline": {"run_data_collection": False},
            "clustering": {"selection": {"feature_ids": [7]}},
        },
    )
    ctx = _run(config, (tiny_model, tiny_sae, None, None), tmp_path)
    assert set(ctx.results) == {"models", "reference", "invert"}
    assert ctx.results["invert"][0].dataset_max is None


def test_until_stops_after_the_named_stage(tiny_model, tiny_sae, small_config, tmp_path):
    ctx = _run(small_config, (tiny_model, tiny_sae, None, None), tmp_path, until="filter")
    assert list(ctx.results) == ["models", "collect", "filter"]


def test_report_stage_writes_a_self_contained_page(tiny_model, tiny_sae, small_config, tmp_path):
    config = update_config(small_config, {"pipeline": {"run_visualization": True}})
    ctx = _run(config, (tiny_model, tiny_sae, None, None), tmp_path)
    page = ctx.results["report"].read_text()
    assert "<script src=" not in page, "the page must not load scripts from elsewhere"
    assert page.count("Plotly.newPlot") >= 1
    for feature_id in ctx.results["select"].feature_ids:
        assert f'id="feature-{feature_id}"' in page


ALL_STAGES = {
    "models", "collect", "filter", "cluster", "select", "cards", "reference", "invert", "explain",
    "report",
}  # fmt: skip
OFF_EXPECTATIONS = {
    # toggle switched off -> stages that must not be produced (it, and those with no input left)
    "run_data_collection": {
        "collect",
        "filter",
        "cluster",
        "select",
        "cards",
        "reference",
        "invert",
        "explain",
    },
    "run_filtering": {"filter"},
    "run_clustering": {"cluster"},
    "run_feature_selection": {"select", "cards", "reference", "invert", "explain"},
    "run_prompt_optimization": {"reference", "invert"},
    "run_explanations": {"explain"},
    "run_visualization": {"report"},
}


@pytest.mark.parametrize("toggle", sorted(OFF_EXPECTATIONS))
def test_each_toggle_off_in_turn(tiny_model, tiny_sae, small_config, tmp_path, toggle):
    pipeline = {name: True for name in OFF_EXPECTATIONS} | {toggle: False}
    config = update_config(small_config, {"pipeline": pipeline})
    ctx = _run(config, (tiny_model, tiny_sae, None, None), tmp_path)
    expected = ALL_STAGES - OFF_EXPECTATIONS[toggle]
    assert set(ctx.results) == expected
    produced = {p.parent.name for p in tmp_path.glob("*/" + MARKER)}
    assert produced == expected
    for name in OFF_EXPECTATIONS[toggle]:
        assert not (tmp_path / name).exists(), name
    if "select" in expected:
        assert len(ctx.results["select"].feature_ids) == 2
    if "explain" in expected:
        assert [e.feature_id for e in ctx.results["explain"]] == ctx.results["select"].feature_ids
    if "report" in expected:
        assert (tmp_path / "report" / "report.html").stat().st_size > 10_000
