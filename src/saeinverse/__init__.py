"""saeinverse: what makes a sparse-autoencoder feature fire, from both directions.

The notebook API is importable from here; heavy modules load on first use, not at import.
"""

from saeinverse.config import get_default_config, load_config, update_config

__version__ = "0.1.0"

_LAZY = {
    "load_experiment_models": "saeinverse.api",
    "train_default_sae": "saeinverse.models.from_config",
    "run_experiment": "saeinverse.run.pipeline",
    "collect_activations": "saeinverse.collect.activations",
    "collect_and_filter_data": "saeinverse.api",
    "load_prompts": "saeinverse.data.sources",
    "filter_features": "saeinverse.filter",
    "run_clustering": "saeinverse.api",
    "analyze_clusters": "saeinverse.api",
    "select_features": "saeinverse.api",
    "optimize_feature": "saeinverse.api",
    "optimize_features": "saeinverse.invert",
    "generate_explanations": "saeinverse.explain",
    "visualize_results": "saeinverse.api",
    "build_report": "saeinverse.report",
    "compute_cards": "saeinverse.cards",
    "feature_cards": "saeinverse.cards",
    "export_neuronpedia": "saeinverse.export",
}

__all__ = ["get_default_config", "update_config", "load_config", *_LAZY]


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'saeinverse' has no attribute {name!r}")
