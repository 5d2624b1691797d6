"""Stage 1: stream prompts through the model to the SAE's hook and keep exact per-feature
statistics (``activations.collect_activations`` -> ``stats.FeatureStats``)."""
