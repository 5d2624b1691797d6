"""A tiny finished run directory, built by calling every stage on the tiny model and SAE.

Stages are run through ``Run.run_stage`` so each folder has its success marker, as the pipeline
writes them. Some prompts hold HTML-like text (``<b>``, ``&``, quotes, ``</script>``): the
character tokenizer makes each of those characters a token of its own.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

from saeinverse.config import get_default_config, update_config
from saeinverse.run.rundir import Run, digest

FAST_INVERSION = {
    "length": 6,
    "max_steps": 30,
    "refine_steps": 10,
    "refine_candidates": 16,
    "patience": 15,
}
NASTY = "</script><b>bold</b> & \"quoted\" 'single' <!-- x -->"


def tiny_prompts() -> list[str]:
    from tests.explain.conftest import random_prompts

    words = random_prompts(36, seed=1)
    return words + [f"{NASTY} {i} {w[:12]}" for i, w in enumerate(words[:12])]


def tiny_config():
    return update_config(
        get_default_config(),
        {
            "data": {
                "max_length": 40,
                "filtering": {"sparsity_max": 0.3, "entropy_threshold_low": 0.5},
            },
            "clustering": {
                "umap": {"n_neighbors": 5},
                "hdbscan": {"min_cluster_size": 3},
                "selection": {"features_per_cluster": 2, "max_features": 4, "include_noise": True},
            },
            "output": {"name": "tiny"},
        },
    )


def build_tiny_run(
    root: Path,
    model,
    sae,
    config=None,
    skip: tuple[str, ...] = (),
    prompts: list[str] | None = None,
    inversion: dict | None = None,
) -> Path:
    """Run every stage (but those in ``skip``) into ``root``; returns ``root``.

    Defaults: ``tiny_config()``, ``tiny_prompts()`` and ``FAST_INVERSION``.
    """
    from saeinverse.cluster.analysis import analyze_clusters
    from saeinverse.cluster.clustering import run_clustering
    from saeinverse.collect.activations import collect_activations
    from saeinverse.explain import generate_explanations, save_explanations
    from saeinverse.filter import filter_features
    from saeinverse.invert import dataset_maxima, optimize_features, save_inversions
    from saeinverse.io import save_json
    from saeinverse.select import select_features

    config = config or tiny_config()
    run = Run.create(config, root=root)
    done: dict[str, object] = {}

    def stage(name, compute):
        if name not in skip:
            done[name] = run.run_stage(name, digest(name), compute, lambda folder: None)

    def models(folder):
        save_json(folder / "models.json", {"model": model.cfg.model_name, "hook_name": sae.cfg.metadata.hook_name,
                                           "d_sae": sae.cfg.d_sae, "d_model": model.cfg.d_model})  # fmt: skip

    def collect(folder):
        stats = collect_activations(
            model, sae, prompts or tiny_prompts(), config.data, progress=False
        )
        stats.save(folder)
        return stats

    def filtering(folder):
        kept = filter_features(done["collect"], config.data.filtering)
        kept.save(folder)
        return kept

    def cluster(folder):
        stats, kept = done["collect"], done["filter"]
        result = run_clustering(
            stats.prompt_feature_dense(kept.kept), kept.kept, config.clustering, sae=sae
        )
        result.save(folder)
        analyze_clusters(result, stats).save(folder)
        return result

    def select(folder):
        chosen = select_features(done.get("cluster"), done["collect"], config.clustering.selection)
        chosen.save(folder)
        return chosen

    def invert(folder):
        ids = done["select"].feature_ids
        records = optimize_features(model, sae, ids, inversion or FAST_INVERSION, seed=0, progress=False,
                                    dataset_max=dataset_maxima(done["collect"], ids))  # fmt: skip
        save_inversions(folder, records)
        return records

    def explain(folder):
        results = generate_explanations(model, sae, done["select"], None, None, {"explainer": "tokens"},
                                        stats=done["collect"], inversions=done.get("invert"))  # fmt: skip
        save_explanations(folder, results)

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for name, compute in [("models", models), ("collect", collect), ("filter", filtering),
                              ("cluster", cluster), ("select", select), ("invert", invert),
                              ("explain", explain)]:  # fmt: skip
            stage(name, compute)
    finally:
        torch.set_num_threads(threads)
    return root


@pytest.fixture(scope="package")
def tiny_run(tmp_path_factory, tiny_model, tiny_topk_sae) -> Path:
    """A finished run directory of the tiny model and TopK SAE (read-only: copy it to change it)."""
    return build_tiny_run(tmp_path_factory.mktemp("runs") / "tiny", tiny_model, tiny_topk_sae)


@pytest.fixture
def run_copy(tiny_run, tmp_path) -> Path:
    """A private copy of the tiny run, free to change."""
    return Path(shutil.copytree(tiny_run, tmp_path / "tiny"))
