"""The Ray engine on a local Ray (2 CPUs) and the tiny model: same numbers as one process.

One Ray session and one worker pool serve the whole module (Ray start-up and two workers
loading the model take several seconds on 2 cores).
"""

from __future__ import annotations

import shutil

import pytest
import torch

from saeinverse.collect.activations import collect_activations
from saeinverse.config import get_default_config, update_config
from saeinverse.data.sources import load_prompts
from saeinverse.errors import ConfigError
from saeinverse.models.from_config import load_experiment_sae, load_subject_model
from tests import builders

ray = pytest.importorskip("ray")
scale = pytest.importorskip("saeinverse.scale")

EXACT = (
    "firing_count",
    "max_activation",
    "histogram",
    "exemplar_activation",
    "exemplar_prompt",
    "exemplar_position",
    "tokens",
    "lengths",
    "token_mass_keys",
)
SUMS = ("activation_sum", "position_mass", "prompt_mass_xlogx", "token_mass_values")


@pytest.fixture(scope="module")
def ray_session():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    scale.close_pools()
    ray.shutdown()


@pytest.fixture(scope="module")
def config(tmp_path_factory):
    folder = tmp_path_factory.mktemp("sae") / "tiny_topk"
    builders.tiny_sae(k=4).save_model(folder)
    return update_config(
        get_default_config(),
        {
            "model": {"name": "tiny-char"},
            "sae": {"path": str(folder)},
            "data": {"n_prompts": 60, "max_length": 24, "batch_size": 8},
            "optimization": {"length": 4, "max_steps": 8, "refine_steps": 2},
            "explanation": {"judge": False, "heldout_prompts": 0, "n_bootstrap": 100},
            "scale": {"engine": "ray", "workers": 2, "shard_prompts": 16, "feature_batch": 2},
        },
    )


@pytest.fixture(scope="module")
def models(config):
    model = load_subject_model(config)
    return model, load_experiment_sae(config, model)


@pytest.fixture(scope="module")
def local_stats(config, models):
    prompts = load_prompts(config.data, seed=config.seed)
    return collect_activations(*models, prompts, config.data, progress=False)


def assert_same_stats(got, want):
    assert got.n_tokens == want.n_tokens and got.prompts == want.prompts
    for name in EXACT:
        assert torch.equal(getattr(got, name), getattr(want, name)), name
    for name in SUMS:
        torch.testing.assert_close(getattr(got, name), getattr(want, name), rtol=1e-9, atol=0)
    assert torch.equal(got.prompt_feature_dense(), want.prompt_feature_dense())


def test_sharded_collection_on_two_workers_equals_one_process(
    ray_session, config, local_stats, tmp_path
):
    stats = scale.collect_sharded(config, tmp_path, progress=False)
    assert len(list((tmp_path / "units").glob("*/shard-*"))) == 4  # 60 prompts, 16 per shard
    assert_same_stats(stats, local_stats)
    assert bool((stats.firing_count > 0).any())


def test_a_rerun_redoes_only_the_missing_shard(ray_session, config, local_stats, tmp_path):
    scale.collect_sharded(config, tmp_path, progress=False)
    (plan,) = (tmp_path / "units").iterdir()
    shutil.rmtree(plan / "shard-00002")
    redone = []
    stats = scale.collect_sharded(
        config, tmp_path, progress=False, on_unit=lambda pool, index: redone.append(index)
    )
    assert redone == [2]
    assert_same_stats(stats, local_stats)


def test_a_worker_killed_mid_stage_still_gives_the_same_statistics(
    ray_session, config, local_stats, tmp_path
):
    killed = []

    def kill_a_busy_worker(pool, index):
        if not killed and pool.in_flight():
            actor, unit = pool.in_flight()[0]
            ray.kill(actor)
            killed.append(unit)

    pool = scale.worker_pool(config)
    restarts = pool.restarts
    stats = scale.collect_sharded(config, tmp_path, progress=False, on_unit=kill_a_busy_worker)
    assert killed, "no unit was in flight to kill"
    assert pool.restarts == restarts + 1
    assert_same_stats(stats, local_stats)


def test_inversion_of_four_features_on_two_workers_equals_local(
    ray_session, config, models, local_stats, tmp_path
):
    from saeinverse.invert import dataset_maxima, optimize_features

    ids = [3, 7, 11, 20]
    maxima = dataset_maxima(local_stats, ids)
    local = optimize_features(
        *models, ids, config.optimization, seed=config.seed, dataset_max=maxima, progress=False
    )
    fanned = scale.invert_fanned(config, tmp_path, ids, dataset_max=maxima, progress=False)
    assert len(list((tmp_path / "units").glob("*/batch-*"))) == 2  # batches of 2 features
    assert [r.feature_id for r in fanned] == ids
    for got, want in zip(fanned, local, strict=True):
        assert got.refined_tokens == want.refined_tokens
        assert got.projected_tokens == want.projected_tokens
        assert got.refined_activation == want.refined_activation
        assert got.soft_activation == want.soft_activation
        assert got.pareto == want.pareto
    assert max(r.refined_activation for r in fanned) > 0


def test_explanations_on_two_workers_equal_local_but_for_the_baseline_partner(
    ray_session, config, models, local_stats, tmp_path
):
    from saeinverse.explain import generate_explanations

    ids = [3, 7, 11, 20]
    local = generate_explanations(
        *models, ids, None, None, config.explanation, stats=local_stats, seed=config.seed
    )
    fanned = scale.explain_fanned(config, tmp_path, ids, stats=local_stats, progress=False)
    assert len(list((tmp_path / "units").glob("*/batch-*"))) == 2  # batches of 2 features

    def own(result):  # all but timing and what the shuffled baseline (a batch partner) gives
        data = result.to_dict()
        return {
            k: v for k, v in data.items() if k not in ("seconds", "scores") and "baseline" not in k
        }

    assert [own(r) for r in fanned] == [own(r) for r in local]
    assert all(r.explanation for r in fanned)
    partners = {r.feature_id: r.baseline_feature for r in fanned}
    assert partners == {3: 7, 7: 3, 11: 20, 20: 11}


def test_more_workers_than_the_cluster_holds_is_a_clear_error(ray_session, config):
    too_many = update_config(config, {"scale": {"workers": 8}})
    with pytest.raises(
        ConfigError, match=r"scale.workers=8 .* needs 8 CPUs; the Ray cluster has 2"
    ):
        scale.WorkerPool(too_many, object)


def test_a_token_budget_is_counted_by_a_worker_as_collection_counts(
    ray_session, config, models, tmp_path
):
    from saeinverse.scale.prompts import draw_prompts, token_counter

    budget = update_config(config, {"data": {"n_tokens": 400}})
    stats = scale.collect_sharded(budget, tmp_path, progress=False)
    assert stats.prompts == draw_prompts(budget, token_counter(models[0], budget))
    last = int(stats.lengths[-1]) - stats.first_position
    assert stats.n_tokens >= 400 > stats.n_tokens - last


def test_a_ray_run_writes_the_same_artifacts_as_a_local_run(ray_session, tmp_path, monkeypatch):
    """Every artifact equal, but the collection's float64 sums (equal to rounding)."""
    from saeinverse.cli import main
    from saeinverse.collect.stats import FeatureStats
    from tests.run.golden import artifact_digests
    from tests.test_cli import TINY_RUN

    monkeypatch.setenv("SAEINVERSE_CACHE", str(tmp_path / "cache"))  # one SAE for both runs
    common = [
        *TINY_RUN,
        "pipeline.run_visualization=false",
        "explanation={judge: false, heldout_prompts: 0, n_bootstrap: 100}",
    ]
    ray_keys = ["scale.engine=ray", "scale.workers=2", "scale.shard_prompts=8"]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as each worker: float32 reductions in the same order
    try:
        assert main(["run", "--run-dir", str(tmp_path / "local"), *common]) == 0
    finally:
        torch.set_num_threads(threads)
    assert main(["run", "--run-dir", str(tmp_path / "ray"), *common, *ray_keys]) == 0
    assert not (tmp_path / "ray" / "collect" / "units").exists(), "units go once the stage is whole"
    local, fanned = artifact_digests(tmp_path / "local"), artifact_digests(tmp_path / "ray")
    sums = "collect/feature_stats.safetensors"
    assert {k: v for k, v in fanned.items() if k != sums} == {
        k: v for k, v in local.items() if k != sums
    }
    assert "invert/inversions.json" in local and "explain/explanations.jsonl" in local
    assert_same_stats(
        FeatureStats.load(tmp_path / "ray" / "collect"),
        FeatureStats.load(tmp_path / "local" / "collect"),
    )
