import logging

import numpy as np
import pytest
import torch
from sklearn.metrics import adjusted_rand_score

from saeinverse import get_default_config, update_config
from saeinverse.cluster.analysis import ANALYSIS_FILE, ClusterAnalysis, analyze_clusters, cohesion
from saeinverse.cluster.clusterers import CLUSTERERS, NOISE, nearest_neighbors, search_eps
from saeinverse.cluster.clustering import (
    CLUSTER_ARRAYS_FILE,
    CLUSTERS_FILE,
    ClusterResult,
    run_clustering,
)
from saeinverse.cluster.vectors import feature_vectors
from saeinverse.errors import ConfigError, DataError

N_GROUPS, PER_GROUP, N_PROMPTS = 4, 15, 200


def planted(seed: int = 0, noise: float = 0.05) -> tuple[np.ndarray, np.ndarray]:
    """A prompts × features matrix of 4 groups of 15 features; group g fires on its own quarter
    of the prompts (70% of them per feature, activation 1..5) plus sparse noise everywhere."""
    rng = np.random.default_rng(seed)
    groups = np.repeat(np.arange(N_GROUPS), PER_GROUP)
    subsets = np.array_split(rng.permutation(N_PROMPTS), N_GROUPS)
    matrix = np.zeros((N_PROMPTS, len(groups)), np.float32)
    for feature, group in enumerate(groups):
        rows = subsets[group]
        fires = rng.random(len(rows)) < 0.7
        matrix[rows[fires], feature] = rng.uniform(1, 5, fires.sum())
        spurious = rng.random(N_PROMPTS) < noise
        matrix[spurious, feature] += rng.uniform(0, 1, spurious.sum())
    return matrix, groups


def clustering_cfg(**overrides):
    return update_config(get_default_config(), {"clustering": overrides}).clustering


IDS = np.arange(N_GROUPS * PER_GROUP) * 7 + 3  # SAE ids of the kept features (not 0..n-1)


@pytest.mark.parametrize("method", ["hdbscan", "dbscan", "kmeans"])
@pytest.mark.parametrize("vectors", ["activation", "cooccurrence"])
def test_each_clusterer_recovers_planted_groups(method, vectors):
    matrix, groups = planted()
    cfg = clustering_cfg(method=method, vectors=vectors, kmeans={"n_clusters": N_GROUPS})
    result = run_clustering(torch.from_numpy(matrix), torch.from_numpy(IDS), cfg, seed=0)
    assert adjusted_rand_score(groups, result.labels) >= 0.9
    assert result.n_clusters == N_GROUPS
    assert result.noise_fraction <= 0.1
    assert result.silhouette is not None and result.silhouette > 0.5
    assert result.feature_ids.tolist() == IDS.tolist()
    assert result.embedding_2d.shape == (len(IDS), 2)
    assert result.embedding.shape == (len(IDS), cfg.umap.n_components)
    assert set(result.timings) == {"vectors", "umap", "cluster"}


def test_clusters_directly_on_cosine_vectors_without_umap():
    """umap.n_components 0: cluster the vectors themselves; eps stays in cosine's [0, 2]."""
    matrix, groups = planted()
    cfg = clustering_cfg(method="dbscan", umap={"n_components": 0})
    result = run_clustering(matrix, IDS, cfg, seed=0)
    assert result.metric == "cosine"
    assert 0 < result.params["eps"] <= 2
    assert all(0 < row["eps"] <= 2 for row in result.params["eps_search"])
    assert adjusted_rand_score(groups, result.labels) >= 0.9


def test_decoder_vectors_recover_planted_directions():
    rng = np.random.default_rng(1)
    d_model, groups = 32, np.repeat(np.arange(N_GROUPS), PER_GROUP)
    centres = rng.normal(size=(N_GROUPS, d_model))
    w_dec = np.zeros((500, d_model), np.float32)
    w_dec[IDS] = centres[groups] + 0.15 * rng.normal(size=(len(IDS), d_model))
    sae = type("FakeSAE", (), {"W_dec": torch.from_numpy(w_dec)})()
    result = run_clustering(None, IDS, clustering_cfg(vectors="decoder"), sae=sae, seed=0)
    assert adjusted_rand_score(groups, result.labels) >= 0.9


def test_vector_kinds_have_documented_shapes_and_metric():
    matrix, _ = planted()
    w_dec = torch.randn(500, 24)
    shapes = {
        "activation": (60, N_PROMPTS),
        "decoder": (60, 24),
        "cooccurrence": (60, 60),
    }
    for kind, shape in shapes.items():
        vectors, metric = feature_vectors(kind, matrix, IDS, sae=w_dec)
        assert (vectors.shape, metric) == (shape, "cosine")
        assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    activation, _ = feature_vectors("activation", matrix, IDS)
    assert np.allclose(activation[5], matrix[:, 5] / np.linalg.norm(matrix[:, 5]), atol=1e-6)
    decoder, _ = feature_vectors("decoder", None, IDS, sae=w_dec)
    assert np.allclose(decoder[2], (w_dec[IDS[2]] / w_dec[IDS[2]].norm()).numpy(), atol=1e-6)


def test_cooccurrence_rows_are_normalised_jaccard_rows():
    fires = np.array([[1, 1, 0], [1, 0, 0], [0, 1, 1], [0, 0, 0]], np.float32)  # prompts × 3
    vectors, _ = feature_vectors("cooccurrence", fires * 2.5, [10, 11, 12])
    jaccard = np.array([[1, 1 / 3, 0], [1 / 3, 1, 1 / 2], [0, 1 / 2, 1]])
    expected = jaccard / np.linalg.norm(jaccard, axis=1, keepdims=True)
    assert np.allclose(vectors, expected, atol=1e-6)


def test_sparse_and_dense_inputs_agree():
    matrix, _ = planted()
    sparse = torch.from_numpy(matrix).to_sparse()
    assert np.allclose(
        feature_vectors("activation", sparse, IDS)[0], feature_vectors("activation", matrix, IDS)[0]
    )


def test_bad_inputs_are_clear_errors():
    matrix, _ = planted()
    with pytest.raises(DataError, match="60 columns but 3 feature ids"):
        feature_vectors("activation", matrix, [1, 2, 3])
    with pytest.raises(ConfigError, match="needs the SAE"):
        feature_vectors("decoder", None, IDS)
    with pytest.raises(DataError, match="needs the prompts × features matrix"):
        feature_vectors("cooccurrence", None, IDS)
    with pytest.raises(ConfigError, match="valid:"):
        feature_vectors("pixels", matrix, IDS)


def test_same_seed_same_labels_and_embedding():
    matrix, _ = planted()
    cfg = clustering_cfg()
    first, again = (run_clustering(matrix, IDS, cfg, seed=3) for _ in range(2))
    assert np.array_equal(first.labels, again.labels)
    assert np.array_equal(first.embedding_2d, again.embedding_2d)
    assert np.array_equal(first.embedding, again.embedding)


@pytest.mark.parametrize("n", [0, 1, 2, 3, 4, 6, 9])
@pytest.mark.parametrize("method", sorted(CLUSTERERS))
def test_too_few_features_give_a_usable_result(n, method, caplog):
    """Below the method's minimum group: one cluster; UMAP needs n >= n_components + 2 (else PCA);
    kmeans lowers n_clusters (8) to n; HDBSCAN leaves fewer than 2 × 5 features as noise."""
    matrix, _ = planted()
    with caplog.at_level(logging.WARNING, logger="saeinverse.cluster.clustering"):
        result = run_clustering(matrix[:, :n], IDS[:n], clustering_cfg(method=method), seed=0)
    assert result.labels.shape == (n,)
    assert result.embedding_2d.shape == (n, 2)
    assert np.isfinite(result.embedding_2d).all()
    if n <= 4 or method == "hdbscan":
        assert result.messages and caplog.records
        assert result.silhouette is None
    if 0 < n < 5 and method != "kmeans":
        assert result.n_clusters == 1 and (result.labels == 0).all()


def test_everything_noise_and_single_cluster_are_reported(caplog):
    rng = np.random.default_rng(0)
    diffuse = rng.random((N_PROMPTS, 20)).astype(np.float32)  # one blob of 20 similar features
    # HDBSCAN never returns the root as a cluster: 20 < 2 × 15 features leave only noise.
    cfg = clustering_cfg(hdbscan={"min_cluster_size": 15})
    with caplog.at_level(logging.WARNING, logger="saeinverse.cluster.clustering"):
        noise = run_clustering(diffuse, np.arange(20), cfg, seed=0)
    assert (noise.labels == NOISE).all() and noise.noise_fraction == 1.0
    assert noise.n_clusters == 0 and noise.silhouette is None
    assert "every feature in noise" in noise.messages[0] and caplog.records
    single = run_clustering(
        diffuse, np.arange(20), clustering_cfg(method="kmeans", kmeans={"n_clusters": 1}), seed=0
    )
    assert single.n_clusters == 1 and single.silhouette is None
    assert "single cluster" in single.messages[0]


def test_labels_are_numbered_by_size():
    matrix, _ = planted()
    keep = np.r_[0:15, 15:25, 30:45, 45:50]  # groups of 15, 10, 15, 5 features
    cfg = clustering_cfg(method="kmeans", kmeans={"n_clusters": 4})
    result = run_clustering(matrix[:, keep], IDS[keep], cfg, seed=0)
    sizes = [int((result.labels == c).sum()) for c in result.cluster_ids()]
    assert sizes == sorted(sizes, reverse=True)


def test_eps_search_stays_within_data_range():
    matrix, groups = planted()
    vectors, _ = feature_vectors("activation", matrix, IDS)
    eps, grid = search_eps(vectors, "cosine", 5)
    assert 0 < eps <= 2 and grid
    best = max(grid, key=lambda row: row["score"])
    assert best["eps"] == eps and best["n_clusters"] == N_GROUPS


def test_save_and_load_round_trip(tmp_path):
    matrix, _ = planted()
    result = run_clustering(matrix, IDS, clustering_cfg(method="dbscan"), seed=0)
    result.save(tmp_path)
    assert (tmp_path / CLUSTERS_FILE).exists() and (tmp_path / CLUSTER_ARRAYS_FILE).exists()
    loaded = ClusterResult.load(tmp_path)
    assert np.array_equal(loaded.labels, result.labels)
    assert np.array_equal(loaded.feature_ids, result.feature_ids)
    assert np.allclose(loaded.embedding_2d, result.embedding_2d)
    assert np.allclose(loaded.vectors, result.vectors)
    assert loaded.summary() == result.summary()


def test_cohesion_is_mean_pairwise_cosine():
    vectors = np.array([[1.0, 0.0], [0.0, 2.0], [1.0, 1.0]])
    pairs = [0.0, np.sqrt(0.5), np.sqrt(0.5)]
    assert cohesion(vectors) == pytest.approx(np.mean(pairs))
    assert cohesion(vectors[:1]) is None


def test_analysis_from_a_plain_matrix_finds_each_groups_prompts(tmp_path):
    matrix, groups = planted()
    result = run_clustering(matrix, IDS, clustering_cfg(), seed=0)
    prompts = [f"prompt {i}" for i in range(N_PROMPTS)]
    analysis = analyze_clusters(result, matrix, prompts, n_prompts=5)
    assert len(analysis) == result.n_clusters + int((result.labels == NOISE).any())
    for record in analysis.records:
        members = np.isin(IDS, record["feature_ids"])
        assert record["size"] == members.sum()
        planted_group = np.bincount(groups[members]).argmax()
        group_prompts = matrix[:, groups == planted_group].max(axis=1) > 1
        assert all(group_prompts[i] for i in record["top_prompt_ids"])
        assert record["top_prompts"] == [prompts[i] for i in record["top_prompt_ids"]]
        assert record["cohesion"] > 0.3
    analysis.save(tmp_path)
    assert (tmp_path / ANALYSIS_FILE).exists()
    assert ClusterAnalysis.load(tmp_path).to_frame().equals(analysis.to_frame())
    with pytest.raises(DataError):
        analyze_clusters(result, matrix[:, :5])


@pytest.mark.parametrize("metric", ["cosine", "euclidean"])
def test_exact_neighbours_match_sklearn(metric):
    from sklearn.neighbors import NearestNeighbors

    vectors = np.random.default_rng(0).normal(size=(300, 12)).astype(np.float32)
    indices, distances = nearest_neighbors(vectors, 6, metric, block=128)
    ref_dist, ref_idx = NearestNeighbors(n_neighbors=6, metric=metric).fit(vectors).kneighbors()
    assert (indices[:, 0] == np.arange(300)).all() and np.allclose(distances[:, 0], 0, atol=1e-6)
    assert np.array_equal(indices[:, 1:], ref_idx[:, :5])
    assert np.allclose(distances[:, 1:], ref_dist[:, :5], atol=1e-5)
    assert nearest_neighbors(vectors, 6, "correlation") is None
