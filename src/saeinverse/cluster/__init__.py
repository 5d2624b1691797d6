"""Stage 3: feature vectors, reduction (UMAP), clustering (a registry of clusterers) and the
per-cluster analysis."""
