"""The Ray pool on a local Ray (2 CPUs) and the tiny model: the same numbers as one process.

The stages' own functions run on the pool (``collect_prompts``, ``invert_features``,
``explain_features``); one Ray session and one pool serve the whole module (Ray start-up and two
workers loading the model take several seconds on 2 cores).
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
from saeinverse.models.identity import models_identity
from saeinverse.units import Checkpoints, LocalPool, Models
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
def pool(ray_session, config, models):
    return scale.ray_pool(config, models_identity(*models))


@pytest.fixture(scope="module")
def local_pool(models):
    return LocalPool(Models(*models))


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


class Watched:
    """A pool that calls ``on_unit(pool, index)`` as each unit's result arrives."""

    def __init__(self, pool, on_unit):
        self.pool, self.on_unit = pool, on_unit

    def run(self, fn, units, shared=()):
        for index, result in self.pool.run(fn, units, shared):
            self.on_unit(self.pool, index)
            yield index, result

    def __getattr__(self, name):
        return getattr(self.pool, name)


def _collect(pool, config, folder, on_unit=None):
    from saeinverse.collect.sharded import collect_prompts

    prompts = load_prompts(config.data, seed=config.seed)
    return collect_prompts(
        pool if on_unit is None else Watched(pool, on_unit), prompts, config.data,
        seed=config.seed, shard_prompts=config.scale.shard_prompts,
        checkpoints=Checkpoints(folder, "stage-hash"), progress=False,
    )  # fmt: skip


def test_sharded_collection_on_two_workers_equals_one_process(pool, config, local_stats, tmp_path):
    stats = _collect(pool, config, tmp_path)
    assert len(list((tmp_path / "units" / "shard").glob("*/shard-*"))) == 4  # 60 prompts, 16 each
    assert_same_stats(stats, local_stats)
    assert bool((stats.firing_count > 0).any())


def test_a_rerun_redoes_only_the_missing_shard(pool, config, local_stats, tmp_path):
    _collect(pool, config, tmp_path)
    (plan,) = (tmp_path / "units" / "shard").iterdir()
    shutil.rmtree(plan / "shard-00002")
    redone = []
    stats = _collect(pool, config, tmp_path, on_unit=lambda pool, index: redone.append(index))
    assert redone == [2]
    assert_same_stats(stats, local_stats)


def test_a_worker_killed_mid_stage_still_gives_the_same_statistics(
    pool, config, local_stats, tmp_path
):
    killed = []

    def kill_a_busy_worker(pool, index):
        if not killed and pool.in_flight():
            actor, unit = pool.in_flight()[0]
            ray.kill(actor)
            killed.append(unit)

    restarts = pool.restarts
    stats = _collect(pool, config, tmp_path, on_unit=kill_a_busy_worker)
    assert killed, "no unit was in flight to kill"
    assert pool.restarts == restarts + 1
    assert_same_stats(stats, local_stats)


def _inputs(stats, ids):
    from saeinverse.invert import dataset_maxima
    from saeinverse.invert.stage import InvertInputs, InvertTarget

    maxima = dataset_maxima(stats, ids)
    return InvertInputs(tuple(InvertTarget(f, maxima[f]) for f in ids))


def test_inversion_of_four_features_on_two_workers_equals_one_call(
    pool, config, models, local_stats, tmp_path
):
    from saeinverse.invert import optimize_features
    from saeinverse.invert.stage import invert_features

    ids = [3, 7, 11, 20]
    inputs = _inputs(local_stats, ids)
    one_call = optimize_features(
        *models, ids, config.optimization, seed=config.seed,
        dataset_max={t.feature_id: t.dataset_max for t in inputs.targets}, progress=False,
    )  # fmt: skip
    fanned = invert_features(
        pool, inputs, config.optimization, seed=config.seed, batch_size=2,
        checkpoints=Checkpoints(tmp_path, "stage-hash"), progress=False,
    )  # fmt: skip
    assert len(list((tmp_path / "units" / "batch").glob("*/batch-*"))) == 2  # 2 features each
    assert [r.feature_id for r in fanned] == ids
    for got, want in zip(fanned, one_call, strict=True):
        assert got.refined_tokens == want.refined_tokens
        assert got.projected_tokens == want.projected_tokens
        assert got.refined_activation == want.refined_activation
        assert got.pareto == want.pareto
    assert max(r.refined_activation for r in fanned) > 0


def _without_seconds(results):
    rows = []
    for result in results:
        data = result.to_dict()
        data.pop("seconds", None)
        rows.append(data)
    return rows


def test_explanations_are_the_same_whatever_the_batching_and_the_engine(
    pool, local_pool, config, models, local_stats, tmp_path
):
    """The shuffled baseline pairs features over the whole stage, never within a batch."""
    from saeinverse.explain import generate_explanations
    from saeinverse.explain.batches import explain_features

    ids = [3, 7, 11, 20]
    one_call = generate_explanations(
        *models, ids, None, None, config.explanation, stats=local_stats, seed=config.seed
    )
    runs = {
        (name, size): explain_features(
            p,
            ids,
            config.explanation,
            stats=local_stats,
            seed=config.seed,
            batch_size=size,
            checkpoints=Checkpoints(tmp_path / f"{name}-{size}", "stage-hash"),
            progress=False,
        )  # fmt: skip
        for name, p in (("local", local_pool), ("ray", pool))
        for size in (1, 2, 4)
    }
    want = _without_seconds(one_call)
    assert any(r.detection is not None for r in one_call), "the explanations are scored"
    assert {r.baseline_feature for r in one_call} <= set(ids)
    for key, results in runs.items():
        assert _without_seconds(results) == want, key


def test_more_workers_than_the_cluster_holds_is_a_clear_error(ray_session, config):
    too_many = update_config(config, {"scale": {"workers": 8}})
    with pytest.raises(
        ConfigError, match=r"scale.workers=8 .* needs 8 CPUs; the Ray cluster has 2"
    ):
        scale.RayPool(too_many, object)


def test_a_ray_run_writes_the_same_results_as_a_local_run(ray_session, tmp_path, monkeypatch):
    """Selection, inversions and explanations equal; statistics equal but the float64 sums
    (equal to rounding)."""
    from saeinverse.cli import main
    from saeinverse.collect.stats import FeatureStats
    from saeinverse.loaders import LOADERS
    from tests.test_cli import TINY_RUN

    monkeypatch.setenv("SAEINVERSE_CACHE", str(tmp_path / "cache"))  # one SAE for both runs
    common = [
        *TINY_RUN,
        "pipeline.run_visualization=false",
        "optimization.reference_tokens=2000",
        "explanation={judge: false, fit_sentence: false, heldout_prompts: 20, n_bootstrap: 100}",
    ]
    ray_keys = ["scale.engine=ray", "scale.workers=2", "scale.shard_prompts=8"]
    ray_keys += ["scale.feature_batch=1"]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as each worker: float32 reductions in the same order
    try:
        assert main(["run", "--run-dir", str(tmp_path / "local"), *common]) == 0
    finally:
        torch.set_num_threads(threads)
    assert main(["run", "--run-dir", str(tmp_path / "ray"), *common, *ray_keys]) == 0
    assert not (tmp_path / "ray" / "collect" / "units").exists(), "units go once the stage is whole"
    local, fanned = tmp_path / "local", tmp_path / "ray"
    explanations = (local / "explain" / "explanations.jsonl").read_text()
    assert '"detection"' in explanations, "the explanations are scored"
    for stage in ("select", "invert", "explain"):
        got, want = LOADERS[stage](fanned / stage), LOADERS[stage](local / stage)
        if stage == "select":
            assert got.feature_ids == want.feature_ids
        else:
            assert _without_seconds(got) == _without_seconds(want), stage
    assert_same_stats(FeatureStats.load(fanned / "collect"), FeatureStats.load(local / "collect"))
