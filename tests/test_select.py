from dataclasses import replace

import numpy as np
import pytest
import torch

from saeinverse import get_default_config, update_config
from saeinverse.cluster.analysis import analyze_clusters
from saeinverse.cluster.clustering import NOISE, ClusterResult, run_clustering
from saeinverse.errors import ConfigError
from saeinverse.select import SELECTION_FILE, Selection, select_features, selectivity


class FakeStats:
    """Duck-typed FeatureStats: d_sae, max_activation, density, the per-prompt max matrix."""

    def __init__(self, prompt_max: np.ndarray, density: np.ndarray):
        self.d_sae = prompt_max.shape[1]
        self.prompt_max = prompt_max
        self.max_activation = torch.from_numpy(prompt_max.max(axis=0))
        self.density = torch.from_numpy(density)
        self.prompts = [f"p{i}" for i in range(prompt_max.shape[0])]

    def prompt_feature_dense(self, feature_ids):
        return torch.from_numpy(self.prompt_max[:, feature_ids])

    def top_tokens(self, feature_id, n=10):
        return [(feature_id % 3, f"tok{feature_id % 3}", 0.5)][:n]


def selection_cfg(**overrides):
    overrides.setdefault("rule", "per_cluster")
    return update_config(get_default_config(), {"clustering": {"selection": overrides}}).clustering


def result_of(feature_ids, labels) -> ClusterResult:
    n = len(feature_ids)
    return ClusterResult(
        feature_ids=np.asarray(feature_ids),
        labels=np.asarray(labels),
        embedding_2d=np.zeros((n, 2), np.float32),
        embedding=np.zeros((n, 2), np.float32),
        vectors=np.eye(n, dtype=np.float32),
        vectors_kind="activation",
        method="hdbscan",
        metric="euclidean",
        n_clusters=len(set(labels) - {NOISE}),
    )


# 20 prompts × 20 SAE features: feature f's peak (on prompt 0) is PEAK[f]; DENSITY[f] given.
PEAK = np.array([0, 0, 1, 0, 0, 4, 0, 3, 0, 2, 0, 5, 1, 6, 0, 9, 8, 0, 0, 0], np.float64)
DENSITY = np.linspace(0.001, 0.020, 20)[::-1].copy()  # feature 0 densest


def constructed_stats() -> FakeStats:
    prompt_max = np.zeros((20, 20))
    prompt_max[0] = PEAK
    prompt_max[1:, 7] = 1.0  # feature 7 also fires weakly everywhere: unselective
    return FakeStats(prompt_max, DENSITY)


CLUSTERED = result_of([2, 5, 7, 9, 11, 12, 13, 15, 16], [0, 0, 0, 0, 1, 1, 1, NOISE, NOISE])


def test_selectivity_definition_on_known_columns():
    columns = np.zeros((20, 3))
    columns[0] = 10.0  # k = ceil(0.05 × 20) = 1 top prompt
    columns[1:, 1] = 1.0
    columns[:, 2] = 5.0
    values = selectivity(columns)
    assert values[0] == pytest.approx(1000.0)  # fires only on its top prompt: the cap
    assert values[1] == pytest.approx(10 / (1 + 1e-3 * 10))
    assert values[2] == pytest.approx(5 / (5 + 5e-3))  # fires alike everywhere: ~1
    assert selectivity(np.zeros((20, 1)))[0] == 0.0


@pytest.mark.parametrize(
    ("score", "expected"),
    [
        ("max_activation", {0: [5, 7], 1: [13, 11]}),
        ("density", {0: [2, 5], 1: [11, 12]}),
        # selectivity: every feature fires only on prompt 0 (1000) except 7; ties → max act
        ("selectivity", {0: [5, 9], 1: [13, 11]}),
    ],
)
def test_top_features_per_cluster_by_each_score(score, expected):
    stats = constructed_stats()
    selection = select_features(CLUSTERED, stats, selection_cfg(score=score).selection)
    picked = {c: [f.feature_id for f in selection.features if f.cluster == c] for c in (0, 1)}
    assert picked == expected
    assert NOISE not in {f.cluster for f in selection.features}
    for feature in selection.features:
        assert feature.score_name == score
        assert feature.score == getattr(feature, score)  # the real score, not a placeholder
        assert feature.max_activation == PEAK[feature.feature_id]
        assert feature.density == pytest.approx(DENSITY[feature.feature_id])
    assert [f.rank for f in selection.features] == [0, 1, 0, 1]


def test_noise_is_an_extra_group_when_asked():
    selection = select_features(
        CLUSTERED, constructed_stats(), selection_cfg(include_noise=True).selection
    )
    noise = [f.feature_id for f in selection.features if f.cluster == NOISE]
    assert noise == [15, 16] and selection.features[-1].cluster == NOISE


def test_max_features_takes_each_groups_best_first():
    cfg = selection_cfg(include_noise=True, max_features=4).selection
    selection = select_features(CLUSTERED, constructed_stats(), cfg)
    # rank-0 picks 5, 13, 15 first; then the best rank-1 pick: 16 (8) over 7 (3) and 11 (5)
    assert sorted(selection.feature_ids) == [5, 13, 15, 16]
    assert "capped" in selection.messages[0]


def test_no_cluster_falls_back_to_the_noise():
    all_noise = result_of([2, 5, 7], [NOISE] * 3)
    selection = select_features(all_noise, constructed_stats(), selection_cfg().selection)
    assert selection.feature_ids == [5, 7] and "noise" in selection.messages[0]


def test_nothing_to_choose_from_is_an_empty_selection():
    selection = select_features(result_of([], []), constructed_stats(), selection_cfg().selection)
    assert len(selection) == 0 and "empty" in selection.messages[0]


def test_explicit_ids_are_taken_with_real_scores():
    cfg = selection_cfg(feature_ids=[16, 5, 1, 5], score="density").selection
    selection = select_features(CLUSTERED, constructed_stats(), cfg)
    assert selection.source == "explicit"
    assert selection.feature_ids == [16, 5, 1]
    assert [f.cluster for f in selection.features] == [NOISE, 0, None]
    assert [f.score for f in selection.features] == pytest.approx(DENSITY[[16, 5, 1]])
    assert selection.features[0].max_activation == 8.0
    assert select_features(None, constructed_stats(), cfg).feature_ids == [16, 5, 1]


def test_out_of_range_ids_are_a_clear_error():
    cfg = selection_cfg(feature_ids=[3, 20, 99]).selection
    with pytest.raises(ConfigError, match=r"\[20, 99\] are outside the SAE's range \[0, 20\)"):
        select_features(CLUSTERED, constructed_stats(), cfg)
    with pytest.raises(ConfigError, match="feature_ids must be ≥ 0, got -1"):
        selection_cfg(feature_ids=[3, -1])


def test_an_empty_explicit_list_is_an_error_not_an_empty_selection():
    """Nothing selected must not pass silently (max_features=0 is a range error)."""
    cfg = selection_cfg(feature_ids=[]).selection
    with pytest.raises(ConfigError, match="feature_ids is an empty list"):
        select_features(CLUSTERED, constructed_stats(), cfg)
    with pytest.raises(ConfigError, match="max_features must be ≥ 1, got 0"):
        selection_cfg(max_features=0)


def test_selection_round_trips(tmp_path):
    selection = select_features(CLUSTERED, constructed_stats(), selection_cfg().selection)
    selection.save(tmp_path)
    assert (tmp_path / SELECTION_FILE).exists()
    loaded = Selection.load(tmp_path)
    assert loaded == selection
    frame = loaded.to_frame()
    assert list(frame["feature_id"]) == selection.feature_ids
    assert {"cluster", "score_name", "score", "selectivity"} <= set(frame.columns)


def real_stats(n_groups=4, per_group=15, n_prompts=80, seed=0):
    """A real FeatureStats from StatsAccumulator: group g fires on prompts p with p % 4 == g,
    at the token 10 + g; two features stay dead."""
    from saeinverse.collect.accumulator import StatsAccumulator

    rng = np.random.default_rng(seed)
    d_sae, n_pos = n_groups * per_group + 2, 6
    acts = torch.zeros(n_prompts, n_pos, d_sae)
    tokens = torch.randint(20, 40, (n_prompts, n_pos))
    for p in range(n_prompts):
        group = p % n_groups
        position = 1 + p % (n_pos - 1)
        tokens[p, position] = 10 + group
        members = slice(group * per_group, (group + 1) * per_group)
        acts[p, position, members] = torch.from_numpy(rng.uniform(1, 5, per_group)).float()
    acts[:, 1:, : n_groups * per_group] += (torch.rand(n_prompts, n_pos - 1, 60) < 0.01) * 0.3
    accumulator = StatsAccumulator(d_sae, 50, n_pos, 1, 5, 8)
    accumulator.add(acts, tokens, torch.full((n_prompts,), n_pos), torch.arange(n_prompts))
    strings = {i: f"t{i}" for i in range(50)}
    prompts = [f"prompt {p}" for p in range(n_prompts)]
    stats = accumulator.finish(
        prompts,
        tokens,
        torch.full((n_prompts,), n_pos),
        token_strings=strings,
        positional_window=1,
        context_window=2,
    )
    return stats, np.repeat(np.arange(n_groups), per_group)


def test_with_real_feature_stats_cluster_analyse_select():
    stats, groups = real_stats()
    kept = torch.arange(len(groups))
    cfg = update_config(
        get_default_config(),
        {"clustering": {"selection": {"score": "selectivity", "rule": "per_cluster"}}},
    )
    result = run_clustering(stats.prompt_feature_dense(kept), kept, cfg.clustering, seed=0)
    assert result.n_clusters == 4
    analysis = analyze_clusters(result, stats, n_tokens=3)
    for record in analysis.records[:4]:
        group = groups[record["feature_ids"][0]]
        assert record["top_tokens"][0] == f"t{10 + group}"
        assert all(p % 4 == group for p in record["top_prompt_ids"])
        assert record["top_prompts"][0] == stats.prompts[record["top_prompt_ids"][0]]
    spread = select_features(result, stats, replace(cfg.clustering.selection, rule="spread"))
    assert sorted(f.cluster for f in spread.features) == [0, 1, 2, 3]
    selection = select_features(result, stats, cfg.clustering.selection)
    assert len(selection) == 8
    for feature in selection.features:
        assert feature.max_activation == pytest.approx(
            float(stats.max_activation[feature.feature_id])
        )
        assert feature.density == pytest.approx(float(stats.density[feature.feature_id]))
        assert feature.score == feature.selectivity > 1


@pytest.mark.parametrize("vectors", ["activation", "decoder", "cooccurrence"])
def test_end_to_end_on_the_tiny_model(tiny_model, tiny_sae, vectors):
    """Real collection and filtering on a random model and SAE, then cluster, analyse, select."""
    from saeinverse.collect.activations import collect_activations
    from saeinverse.filter import filter_features

    config = update_config(
        get_default_config(),
        {
            "data": {
                "max_length": 16,
                "filtering": {
                    "sparsity_min": 0.0,
                    "sparsity_max": 1.0,
                    "entropy_threshold_low": 0.0,
                },
            },
            "clustering": {"vectors": vectors, "selection": {"score": "selectivity"}},
        },
    )
    prompts = [
        f"{word} number {i}: the quick brown fox"
        for i, word in enumerate(["alpha", "beta", "gamma", "delta"] * 8)
    ]
    stats = collect_activations(tiny_model, tiny_sae, prompts, config.data, progress=False)
    kept = filter_features(stats, config.data.filtering).kept
    result = run_clustering(
        stats.prompt_feature_dense(kept), kept, config.clustering, sae=tiny_sae, seed=0
    )
    assert result.feature_ids.tolist() == kept.tolist() and len(kept) > 5
    analysis = analyze_clusters(result, stats)
    assert sum(r["size"] for r in analysis.records) == len(kept)
    assert all(r["top_tokens"] for r in analysis.records)
    selection = select_features(result, stats, config.clustering.selection)
    assert 0 < len(selection) <= config.clustering.selection.max_features
    assert set(selection.feature_ids) <= set(kept.tolist())
    for feature in selection.features:
        assert feature.max_activation == pytest.approx(
            float(stats.max_activation[feature.feature_id])
        )


# ----------------------------------------------------------------------------- rule 'spread'


class GenreStats(FakeStats):
    """FakeStats whose features' top exemplars sit on prompts of known genres."""

    def __init__(self, prompt_max, density, exemplar_prompts: dict[int, list[int]]):
        super().__init__(prompt_max, density)
        k = max(len(v) for v in exemplar_prompts.values())
        self.exemplar_prompt = torch.full((self.d_sae, k), -1, dtype=torch.long)
        for f, prompts in exemplar_prompts.items():
            self.exemplar_prompt[f, : len(prompts)] = torch.tensor(prompts)


def spread_case(monkeypatch):
    """4 clusters on a line of the map (sizes 4, 2, 2, 2); prompts 0-3 are genres a, b, c, d."""
    import saeinverse.select as select

    monkeypatch.setattr(select, "corpus_genres", lambda: {f"p{i}": "abcd"[i] for i in range(4)})
    ids = list(range(10))
    labels = [0, 0, 0, 0, 1, 1, 2, 2, 3, 3]
    x = [0, 0, 0, 0, 1, 1, 10, 10, 5, 5]  # centres: 0, 1, 10, 5
    result = result_of(ids, labels)
    result.embedding_2d = np.array([[v, 0.0] for v in x], np.float32)
    peak = np.array([9, 8, 1, 1, 7, 6, 5, 4, 3, 2], np.float64)
    prompt_max = np.zeros((20, 10))
    prompt_max[0] = peak
    genre_of = {0: 0, 1: 1, 2: 2, 3: 3, 4: 0, 5: 2, 6: 1, 7: 3, 8: 0, 9: 0}
    exemplars = {f: [g, g] for f, g in genre_of.items()}
    return result, GenreStats(prompt_max, np.full(10, 0.01), exemplars)


def test_spread_orders_clusters_largest_first_then_farthest(monkeypatch):
    from saeinverse.select import spread_order

    result, _ = spread_case(monkeypatch)
    assert spread_order(result, [0, 1, 2, 3]) == [0, 2, 3, 1]


def test_spread_takes_one_per_cluster_preferring_new_genres(monkeypatch):
    result, stats = spread_case(monkeypatch)
    selection = select_features(
        result, stats, selection_cfg(rule="spread", max_features=4).selection
    )
    # cluster 0: feature 0 (genre a); cluster 2: feature 6 (b); cluster 3: 8 and 9 are both 'a',
    # already covered, so it waits; cluster 1: 4 is 'a', 5 is 'c'; cluster 3 then fills with 8.
    assert selection.feature_ids == [0, 6, 5, 8]
    assert [f.cluster for f in selection.features] == [0, 2, 1, 3]
    assert [f.genre for f in selection.features] == ["a", "b", "c", "a"]
    assert selection.rule == "spread" and "one per cluster" in selection.description
    assert "3 genres: a, b, c" in selection.description


def test_spread_is_capped_and_round_trips(monkeypatch, tmp_path):
    result, stats = spread_case(monkeypatch)
    selection = select_features(
        result, stats, selection_cfg(rule="spread", max_features=2).selection
    )
    assert selection.feature_ids == [0, 6]
    selection.save(tmp_path)
    back = Selection.load(tmp_path)
    assert back.features == selection.features and back.description == selection.description


def test_per_cluster_stays_available_by_name(monkeypatch):
    result, stats = spread_case(monkeypatch)
    selection = select_features(
        result, stats, selection_cfg(rule="per_cluster", max_features=8).selection
    )
    assert selection.rule == "per_cluster"
    assert sorted(selection.feature_ids) == [0, 1, 4, 5, 6, 7, 8, 9]
