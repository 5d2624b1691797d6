"""The seed README's "Jupyter Notebook Style" snippet runs as written, on the tiny model.

Two lines differ from the seed's text: the import (``from saeinverse import ...``), and the
overrides given to ``update_config`` (the tiny model instead of the default one). One call needs
more than the seed passed: ``load_experiment_models(config['hardware'])`` would load the default
model, because the hardware section alone cannot say which model to load; the tiny model is
named in ``config['model']``, so the snippet passes the whole ``config`` there.
"""

import numpy as np
import pytest
import torch

from tests import builders

SNIPPET = """
from saeinverse import (
    analyze_clusters, collect_and_filter_data, get_default_config, load_experiment_models,
    optimize_feature, run_clustering, select_features, update_config, visualize_results,
)

config = get_default_config()
config = update_config(config, TINY_OVERRIDES)
model, sae, lm, tokenizer = load_experiment_models(config)
filtered_acts, original_indices, prompts = collect_and_filter_data(model, sae, config['data'])
labels, reduced_acts = run_clustering(filtered_acts, config['clustering'])
analyze_clusters(filtered_acts, labels, original_indices, prompts, config['clustering'])
selected_features = select_features(filtered_acts, labels, original_indices, config['clustering']['selection'])
feature_results = []
for feature_id in selected_features[:2]:
    result = optimize_feature(model, sae, feature_id, config['optimization'])
    feature_results.append(result)
visualize_results(feature_results)
"""

TINY_OVERRIDES = builders.tiny_overrides()


@pytest.fixture(scope="module")
def notebook(tmp_path_factory):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    namespace = {"TINY_OVERRIDES": TINY_OVERRIDES}
    try:
        with pytest.MonkeyPatch.context() as patch:
            patch.setenv("SAEINVERSE_CACHE", str(tmp_path_factory.mktemp("cache")))
            exec(compile(SNIPPET, "seed-readme-snippet", "exec"), namespace)
    finally:
        torch.set_num_threads(threads)
    return namespace


def test_the_seed_notebook_snippet_runs_as_written(notebook):
    acts, kept, prompts = (
        notebook["filtered_acts"],
        notebook["original_indices"],
        notebook["prompts"],
    )
    assert acts.shape == (len(prompts), len(kept)) and len(kept) > 0
    labels, reduced = notebook["labels"], notebook["reduced_acts"]
    assert len(labels) == len(kept) and reduced.shape == (len(kept), 2)
    selected = notebook["selected_features"]
    kept_ids = set(kept.tolist())
    assert 0 < len(selected) <= 3 and set(selected) <= kept_ids
    results = notebook["feature_results"]
    assert [r.feature_id for r in results] == list(selected[:2])
    assert all(r.refined_activation > 0 for r in results)


def test_seed_forms_agree_with_the_rich_forms(notebook):
    from saeinverse import analyze_clusters, run_clustering, select_features
    from saeinverse.cluster.clustering import ClusterResult

    acts, kept, config = (
        notebook["filtered_acts"],
        notebook["original_indices"],
        notebook["config"],
    )
    rich = run_clustering(acts, kept, config["clustering"])
    assert isinstance(rich, ClusterResult)
    np.testing.assert_array_equal(rich.labels, notebook["labels"])
    np.testing.assert_array_equal(rich.feature_ids, kept.numpy())
    seed_analysis = analyze_clusters(
        acts, notebook["labels"], kept, notebook["prompts"], config["clustering"]
    )
    rich_analysis = analyze_clusters(rich, acts, notebook["prompts"])
    assert seed_analysis.records == rich_analysis.records
    chosen = select_features(acts, notebook["labels"], kept, config["clustering"]["selection"])
    assert list(chosen) == list(notebook["selected_features"])
    assert chosen.selection.feature_ids == list(chosen)
    # labels given as a plain list (no clustering result behind them) still select
    plain = select_features(
        acts, [int(x) for x in notebook["labels"]], kept, config["clustering"]["selection"]
    )
    assert list(plain) == list(chosen)


def test_visualize_results_draws_the_inversions(notebook, tmp_path):
    from saeinverse import visualize_results

    results = notebook["feature_results"]
    figures = visualize_results(results, tmp_path / "results.html")
    assert len(figures) == 1 + len(results)
    page = (tmp_path / "results.html").read_text()
    assert page.count('class="plotly-figure"') == len(figures)
    assert all(f"f{r.feature_id}" in figures[0].to_json() for r in results)


DEFAULT_OVERRIDES = {
    "data": {"n_prompts": 60, "max_length": 32},
    "clustering": {"hdbscan": {"min_cluster_size": 3}, "selection": {"max_features": 1}},
    "optimization": {
        "length": 6,
        "max_steps": 10,
        "refine_steps": 2,
        "refine_candidates": 16,
        "fluency_weight": 0.0,
    },
}
"""One feature, searched without fluent rows: each inversion on the real model costs minutes."""


ALIVE_FEATURES = 256
"""Features of the random default SAE that can fire (the rest never do, as in a trained one)."""


@pytest.fixture
def random_default_sae(tmp_path, monkeypatch):
    """A private cache whose default SAE is a random one of the default's shape, all but
    ``ALIVE_FEATURES`` features dead (training the real one takes minutes; first-use training
    is checked on the tiny model in test_cli). The embedded model's converted weights stay
    shared with the user cache."""
    from saeinverse import get_default_config
    from saeinverse.models.default import MODEL_NAME
    from saeinverse.models.from_config import default_sae_path
    from saeinverse.models.paths import models_dir

    shared_models = models_dir()
    shared_models.mkdir(parents=True, exist_ok=True)
    monkeypatch.setenv("SAEINVERSE_CACHE", str(tmp_path / "cache"))
    models_dir().parent.mkdir(parents=True)
    models_dir().symlink_to(shared_models, target_is_directory=True)
    train = get_default_config().sae.train
    sae = builders.tiny_sae(
        hook_name=train.hook_name, d_in=576, d_sae=train.d_sae, k=train.k, model_name=MODEL_NAME
    )
    with torch.no_grad():
        sae.b_enc[ALIVE_FEATURES:] = -1e4
    sae.save_model(str(default_sae_path(get_default_config())))


@pytest.mark.slow
def test_the_seed_snippet_runs_verbatim_on_the_embedded_default(
    random_default_sae, tmp_path, monkeypatch
):
    """The seed's text exactly, ``load_experiment_models(config['hardware'])`` included: the
    hardware section alone loads the embedded default model and SAE."""
    verbatim = SNIPPET.replace(
        "load_experiment_models(config)", "load_experiment_models(config['hardware'])"
    ).replace("TINY_OVERRIDES", "DEFAULT_OVERRIDES")
    monkeypatch.chdir(tmp_path)
    namespace = {"DEFAULT_OVERRIDES": DEFAULT_OVERRIDES}
    exec(compile(verbatim, "seed-readme-snippet", "exec"), namespace)
    assert namespace["model"].cfg.d_model == 576  # SmolLM2-135M, the embedded default
    results = namespace["feature_results"]
    assert [r.feature_id for r in results] == list(namespace["selected_features"][:2])
    assert all(r.refined_activation >= r.projected_activation for r in results)
