"""Each figure shows exactly what the saved artifacts hold."""

from __future__ import annotations

import math

import numpy as np
import plotly.io as pio
import pytest

from saeinverse.report import figures as F
from saeinverse.report import load_run
from saeinverse.report import result_figures as R


@pytest.fixture(scope="module")
def run(tiny_run):
    return load_run(tiny_run)


def test_density_histogram_counts_every_firing_feature_once(run):
    fig = F.density_histogram(run.stats, run.feature_set)
    firing = int((run.stats.density > 0).sum())
    assert sum(len(t.x) for t in fig.data) == firing
    kept, dropped = fig.data
    assert len(kept.x) == len(run.feature_set.kept) and kept.name == "kept"
    assert np.allclose(
        np.sort(kept.x), np.sort(np.log10(run.stats.density.numpy()[run.feature_set.kept.numpy()]))
    )
    assert f"({run.stats.d_sae - firing} dead" in fig.layout.title.text


def test_entropy_density_draws_the_configured_bands(run):
    bands = run.filtering
    fig = F.entropy_density(run.stats, run.feature_set, bands)
    rect = next(s for s in fig.layout.shapes if s.type == "rect")
    assert rect.x0 == pytest.approx(math.log10(bands["sparsity_min"]))
    assert rect.x1 == pytest.approx(math.log10(bands["sparsity_max"]))
    assert (rect.y0, rect.y1) == (bands["entropy_threshold_low"], bands["entropy_threshold_high"])
    kept = next(t for t in fig.data if t.name == "kept")
    assert sorted(int(i) for i in kept.customdata[:, 0]) == run.feature_set.kept.tolist()
    for trace in fig.data:  # every dropped group is named by its first reason
        for fid in trace.customdata[:, 0]:
            assert trace.name == (run.feature_set.reasons.get(int(fid)) or ["kept"])[0]


def test_cluster_map_hover_names_tokens_and_explanations(run):
    fig = F.cluster_map(run.clusters, run.stats, run.explanations, run.selected_ids)
    points = sum(len(t.x) for t in fig.data if t.name != "selected")
    assert points == len(run.clusters.feature_ids)
    starred = next(t for t in fig.data if t.name == "selected")
    assert len(starred.x) == len(run.selected_ids)
    fid = run.selected_ids[0]
    hover = next(h for h in starred.text if f"feature {fid}</b>" in h)
    assert "top tokens:" in hover and "explanation:" in hover
    assert "<script" not in " ".join(t for tr in fig.data for t in tr.text)


def test_prompt_feature_heatmap_has_one_view_per_cluster(run):
    fig = F.prompt_feature_heatmaps(run.stats, run.clusters, max_prompts=10)
    clusters = run.clusters.cluster_ids()
    assert len(fig.data) == len(clusters) == len(fig.layout.updatemenus[0].buttons)
    assert [t.visible for t in fig.data] == [True] + [False] * (len(clusters) - 1)
    first = fig.data[0]
    members = run.clusters.members(clusters[0])
    assert np.asarray(first.z).shape == (10, min(len(members), 40))
    assert np.nanmax(np.asarray(first.z, dtype=float)) <= 1.0
    button = fig.layout.updatemenus[0].buttons[1]
    assert button.args[0]["visible"][1] is True
    assert sorted(int(t) for t in button.args[1]["xaxis.ticktext"]) == sorted(
        run.clusters.members(clusters[1]).tolist()
    )


def test_optimisation_curve_follows_the_trajectory(run):
    inversion = run.inversions[run.selected_ids[0]]
    fig = R.optimisation_curve(inversion)
    soft = next(t for t in fig.data if t.name == "soft stage")
    refine = next(t for t in fig.data if t.name == "refinement")
    assert list(soft.y) == inversion.trajectory["soft_activation"]
    assert list(refine.y) == inversion.trajectory["refine_activation"]
    assert refine.x[0] == len(soft.y)


def test_activation_ratios_divide_by_the_dataset_max(run):
    fig = R.activation_ratios(run.inversions, run.selected_ids)
    refined = next(t for t in fig.data if t.name == "refined prompt")
    expected = [run.inversions[f].refined_ratio for f in run.selected_ids]
    assert list(refined.x) == [f"f{f}" for f in run.selected_ids]
    assert np.allclose(refined.y, expected)


def test_explanation_scores_show_baselines(run):
    fig = R.explanation_scores(run.explanations, run.selected_ids)
    names = [t.name for t in fig.data]
    assert names == ["detection", "detection, shuffled", "fuzzing", "fuzzing, shuffled"]
    first = run.explanations[run.selected_ids[0]]
    assert fig.data[0].y[0] == first.detection and fig.data[1].y[0] == first.baseline_detection


def test_every_figure_serialises(run):
    figures = [
        F.density_histogram(run.stats), F.entropy_density(run.stats),
        R.optimisation_curve(run.inversions[run.selected_ids[0]]),
    ]  # fmt: skip
    for fig in figures:
        assert pio.from_json(fig.to_json()).data


def test_plot_text_escapes_and_shortens():
    assert F.plot_text("<b>&\n", 10) == "&lt;b&gt;&amp;↵"
    assert F.plot_text("abcdefghijkl", 5) == "abcd…"
