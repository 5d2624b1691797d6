# %% [markdown]
# # A custom saeinverse experiment, stage by stage
#
# The seed notebook's flow: load the models, collect and filter features, cluster them, select
# targets, invert them, explain them and draw the report. Run it as a script
# (`python examples/custom_experiment.py`) or cell by cell in an editor that reads `# %%` cells.
#
# It uses the embedded default (SmolLM2-135M-Instruct + the cached default TopK SAE) in a small
# configuration. `SAEINVERSE_EXAMPLE_MODEL=tiny-char` runs the same cells on a tiny random model
# in seconds (that is how CI runs it).

# %%
import logging
import os
import tempfile
from pathlib import Path

from saeinverse import (
    analyze_clusters,
    collect_activations,
    generate_explanations,
    get_default_config,
    load_experiment_models,
    load_prompts,
    optimize_features,
    run_clustering,
    select_features,
    update_config,
    visualize_results,
)
from saeinverse.filter import filter_features

logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
MODEL = os.environ.get("SAEINVERSE_EXAMPLE_MODEL", "smollm2-135m")
OUT = Path(os.environ.get("SAEINVERSE_EXAMPLE_OUT") or tempfile.mkdtemp(prefix="saeinverse-"))

# %% [markdown]
# ## Configuration
# A nested dict over the defaults; unknown keys are an error that names the valid ones.

# %%
overrides = {
    "seed": 0,
    "hardware": {"device": "auto"},
    "model": {"name": MODEL},
    "data": {"n_prompts": 120, "max_length": 48},
    "clustering": {"selection": {"features_per_cluster": 1, "max_features": 4}},
    "optimization": {"length": 8, "max_steps": 60, "refine_steps": 20, "refine_candidates": 32},
    "explanation": {"explainer": "tokens"},
}
if MODEL == "tiny-char":  # the tiny model has 2 layers: train its SAE at layer 0, briefly
    overrides["sae"] = {
        "train": {
            "hook_name": "blocks.0.hook_resid_post",
            "d_sae": 64,
            "k": 4,
            "training_tokens": 4096,
            "context_size": 32,
            "batch_size_tokens": 256,
        }
    }
    overrides["data"] = {
        "n_prompts": 40,
        "max_length": 24,
        "filtering": {"sparsity_max": 0.9, "entropy_threshold_low": 0.0},
    }
    overrides["clustering"]["hdbscan"] = {"min_cluster_size": 3}
    overrides["optimization"] = {"length": 4, "max_steps": 10, "refine_steps": 3}
config = update_config(get_default_config(), overrides)
print(config["data"]["n_prompts"], config.optimization.max_steps)

# %% [markdown]
# ## Models
# The subject model, its SAE (the default one is trained and cached on first use) and the
# explanation LM (None here: the `tokens` explainer needs none).

# %%
model, sae, lm, tokenizer = load_experiment_models(config)
print(sae.cfg.metadata.hook_name, sae.cfg.d_sae)

# %% [markdown]
# ## 1-2. Collect and filter

# %%
prompts = load_prompts(config["data"], seed=config.seed)
stats = collect_activations(model, sae, prompts, config["data"])
feature_set = filter_features(stats, config["data"]["filtering"])
print(f"{stats.n_tokens} tokens; kept {len(feature_set)} features; {feature_set.summary()}")

# %% [markdown]
# ## 3-4. Cluster, analyse, select

# %%
filtered_acts = stats.prompt_feature_dense(feature_set.kept)
clusters = run_clustering(
    filtered_acts, feature_set.kept, config["clustering"], sae=sae, seed=config.seed
)
analysis = analyze_clusters(clusters, stats)
selection = select_features(clusters, stats, config["clustering"]["selection"])
print(clusters.summary())
print(analysis.to_frame()[["cluster", "size", "cohesion", "top_tokens"]].head())
print(selection.to_frame())

# %% [markdown]
# ## 5. Invert the selected features, all in one batch

# %%
inversions = optimize_features(
    model,
    sae,
    selection.feature_ids,
    config["optimization"],
    seed=config.seed,
    dataset_max=stats.max_activation,
)
for inv in inversions:
    print(
        inv.feature_id,
        repr(inv.refined_text),
        round(inv.refined_activation, 2),
        "dataset max",
        round(inv.dataset_max, 2),
    )

# %% [markdown]
# ## 6. Explanations, scored against a shuffled baseline

# %%
explanations = generate_explanations(
    model, sae, inversions, lm, tokenizer, config["explanation"], stats=stats, seed=config.seed
)
for result in explanations:
    print(
        result.feature_id, result.explanation, result.fuzzing, "baseline", result.baseline_fuzzing
    )

# %% [markdown]
# ## 7. The whole pipeline as one call, and its report
# `run_experiment` runs every stage the `pipeline` section switches on, into a resumable run
# directory; `visualize_results` (re)builds its self-contained `report.html`.

# %%
from saeinverse import run_experiment  # noqa: E402

ctx = run_experiment(config, run_dir=OUT / "run", models=(model, sae, lm, tokenizer))
print("report:", visualize_results(ctx))
