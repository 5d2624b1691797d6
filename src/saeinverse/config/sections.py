"""The config tree's sections: one dataclass per stage or concern, each field documented by the
string after it (that string is the README's config reference and ``saeinverse config keys``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from saeinverse.config.tree import Section


@dataclass
class PipelineConfig(Section):
    run_data_collection: bool = True
    """Collect feature activations over the prompts and compute per-feature statistics."""
    run_filtering: bool = True
    """Filter features by density and entropy (needs collection)."""
    run_clustering: bool = True
    """Cluster the surviving features (UMAP + HDBSCAN / DBSCAN / KMeans)."""
    run_feature_selection: bool = True
    """Choose target features from the clusters (or the explicit list)."""
    run_prompt_optimization: bool = True
    """Invert the selected features: soft prompts, projection, discrete refinement."""
    run_explanations: bool = True
    """Explain each selected feature in words and score the explanations."""
    run_visualization: bool = True
    """Write the self-contained report.html."""


@dataclass
class HardwareConfig(Section):
    device: Literal["auto", "cpu", "cuda"] = "auto"
    """Where tensors live; 'auto' picks cuda when available, else cpu (resolved at run time)."""
    dtype: Literal["float32", "float16", "bfloat16"] = "float32"
    """Floating-point type of the subject model and SAE."""
    threads: int | None = None
    """CPU threads for torch; None leaves torch's default."""


@dataclass
class ModelConfig(Section):
    name: str = "smollm2-135m"
    """Subject model: 'smollm2-135m' (embedded, offline) or any TransformerLens model name."""
    n_ctx: int = 2048
    """Context length the model is built with (SmolLM2's 8192 would allocate large masks)."""


@dataclass
class SAETrainConfig(Section):
    hook_name: str = "blocks.9.hook_resid_post"
    """Hook the default SAE is trained at."""
    d_sae: int = 4608
    """Number of SAE features."""
    k: int = 32
    """TopK: active features per token."""
    training_tokens: int = 200_000
    """Tokens of the default corpus to train on."""
    context_size: int = 128
    """Tokens per training sequence."""
    batch_size_tokens: int = 1024
    """Tokens per optimizer step."""
    lr: float = 1e-3
    """Learning rate."""


@dataclass
class SAEConfig(Section):
    release: str | None = None
    """SAELens registry release (with sae_id), e.g. 'pythia-70m-deduped-mlp-sm'."""
    sae_id: str | None = None
    """SAE id inside the release, e.g. 'blocks.3.hook_mlp_out'."""
    path: str | None = None
    """A local SAELens directory (cfg.json + sae_weights.safetensors) or a Hugging Face repo path."""
    train: SAETrainConfig = field(default_factory=SAETrainConfig)
    """How the default SAE is trained when no release / path is given (cached after first use)."""


@dataclass
class FilteringConfig(Section):
    sparsity_min: float = 1e-4
    """Lowest firing density kept (fraction of tokens on which the feature is > 0)."""
    sparsity_max: float = 0.05
    """Highest firing density kept; denser features are flagged 'dense'."""
    entropy_threshold_low: float = 0.2
    """Lowest normalised prompt entropy kept (below: fires on a handful of prompts)."""
    entropy_threshold_high: float = 1.0
    """Highest normalised prompt entropy kept."""
    min_token_entropy: float = 0.1
    """Below this token entropy a feature is flagged 'single-token'."""
    max_positional_share: float = 0.8
    """Above this share of activation mass in the first positions a feature is 'positional'."""
    positional_window: int = 3
    """How many leading (non-masked) positions count as 'first positions'."""
    drop_single_token: bool = False
    """Drop single-token features (else only flag them)."""
    drop_positional: bool = True
    """Drop positional features (else only flag them)."""


@dataclass
class DataConfig(Section):
    source: str = "default"
    """'default' (bundled corpus), a .txt / .jsonl / .parquet path, or a Hugging Face dataset name."""
    split: str = "train"
    """Dataset split (HF datasets) or corpus split ('train' / 'heldout') of the default corpus."""
    text_column: str = "text"
    """Column holding the text (jsonl / parquet / HF datasets)."""
    n_prompts: int = 500
    """Prompts drawn at random (with the seed) from the source."""
    n_tokens: int | None = None
    """Token budget instead of n_prompts: prompts drawn at random until their collected tokens reach it; null: n_prompts."""
    max_length: int = 64
    """Tokens per prompt, the start token included."""
    batch_size: int = 16
    """Prompts per forward pass."""
    exclude_bos: bool = True
    """Mask position 0 (the start token / attention sink) from every statistic."""
    top_k_exemplars: int = 20
    """Top activating contexts kept per feature."""
    context_window: int = 8
    """Tokens kept either side of an exemplar's position."""
    histogram_bins: int = 32
    """Log-spaced bins of the per-feature activation histogram."""
    use_cached_data: bool = True
    """Reuse saved activations when the data config and models are unchanged."""
    filtering: FilteringConfig = field(default_factory=FilteringConfig)
    """Which features survive to clustering."""


@dataclass
class UMAPConfig(Section):
    n_components: int = 5
    """Dimensions UMAP reduces to for clustering (0: cluster the cosine vectors directly); a 2-D map is always made."""
    n_neighbors: int = 15
    """UMAP neighbourhood size."""
    min_dist: float = 0.1
    """UMAP minimum distance."""
    metric: str = "cosine"
    """Distance between feature vectors."""


@dataclass
class HDBSCANConfig(Section):
    min_cluster_size: int = 5
    """Smallest cluster HDBSCAN reports."""
    min_samples: int | None = None
    """HDBSCAN's density parameter (None: min_cluster_size)."""


@dataclass
class DBSCANConfig(Section):
    eps: float | None = None
    """Neighbourhood radius; None searches it by silhouette within the metric's range."""
    min_samples: int = 5
    """Points needed to form a dense region."""


@dataclass
class KMeansConfig(Section):
    n_clusters: int = 8
    """Number of clusters."""


@dataclass
class SelectionConfig(Section):
    rule: Literal["spread", "per_cluster"] = "spread"
    """How clusters give features: 'spread' takes at most one per cluster, clusters spread over the map (the largest first, then each farthest from those taken), preferring features whose top exemplars come from a corpus genre not yet covered; 'per_cluster' takes the top features_per_cluster of every cluster, best first."""
    features_per_cluster: int = 2
    """Features chosen from each cluster (rule 'per_cluster')."""
    score: Literal["max_activation", "density", "selectivity"] = "max_activation"
    """How features are ranked inside a cluster."""
    include_noise: bool = False
    """Also choose from the noise points (as one extra group)."""
    feature_ids: list[int] | None = None
    """Explicit SAE feature ids; when given, clustering does not choose."""
    max_features: int = 8
    """Cap on the number of selected features."""


@dataclass
class ClusteringConfig(Section):
    vectors: Literal["activation", "decoder", "cooccurrence"] = "activation"
    """Feature vectors: activation profile over prompts, decoder direction, or co-occurrence."""
    method: Literal["hdbscan", "dbscan", "kmeans"] = "hdbscan"
    """Clustering algorithm."""
    umap: UMAPConfig = field(default_factory=UMAPConfig)
    """Dimensionality reduction before clustering."""
    hdbscan: HDBSCANConfig = field(default_factory=HDBSCANConfig)
    """HDBSCAN settings."""
    dbscan: DBSCANConfig = field(default_factory=DBSCANConfig)
    """DBSCAN settings."""
    kmeans: KMeansConfig = field(default_factory=KMeansConfig)
    """KMeans settings."""
    selection: SelectionConfig = field(default_factory=SelectionConfig)
    """How target features are chosen."""
    visualize_clusters: bool = True
    """Draw the UMAP cluster map in the report."""


@dataclass
class OptimizationConfig(Section):
    length: int = 12
    """Prompt tokens optimised (the start token is added in front)."""
    max_length: int = 48
    """A feature none of whose exemplar windows fires at length tokens (it needs more context) is searched at the shortest of 2x, 4x, ... length tokens up to this at which one of its exemplars' contexts fires (0: always length)."""
    max_steps: int = 75
    """Adam steps on the soft prompts."""
    lr: float = 0.05
    """Adam learning rate."""
    position: Literal["max", "last"] = "last"
    """Where the target activation is read: the max over positions, or the last one."""
    init: Literal["random", "exemplar"] = "exemplar"
    """Where the soft stage starts: 'exemplar', the feature's top exemplar window (its length tokens ending at the peak) where one is known, else random vocabulary embeddings; 'random': always random."""
    selectivity_weight: float = 0.0
    """Penalty weight on other features' activation."""
    embedding_distance_weight: float = 0.0
    """Penalty weight on the distance to the nearest token embedding."""
    patience: int = 50
    """Steps without improvement before stopping early."""
    refine_steps: int = 40
    """Discrete refinement iterations (token swaps)."""
    refine_candidates: int = 64
    """Candidate swaps evaluated per refinement step."""
    merge_swaps: int = 4
    """Each refinement step also screens the row's best improving one-token swaps at distinct positions merged into one prompt (the best two, the best three, ... up to this many swaps), so a step can take several independent improvements at once; 0 or 1: no merges."""
    edit_moves: bool = True
    """Besides single-token swaps, every fourth refinement candidate inserts or deletes a token (the prompt keeps its length and last token)."""
    proposals: Literal["both", "gradient", "model", "model_only"] = "both"
    """Where a fluent row's candidate tokens come from: the feature's gradient and the model's own next-token predictions alternately, or one of them only (the unconstrained row uses the gradient; with 'model' the fluent rows skip the gradient's backward and pay none); 'model_only': every row's tokens, the unconstrained row's included, from the model's predictions, no gradient at all (FLRT's moves, a bench arm)."""
    fluency_weight: float = 4.0
    """A fluent row's score = activation ÷ reference max − fluency_weight × max(cross-entropy − fluency_target, 0), cross-entropy in nats per byte (about a quarter of nats per token for English); 0: no fluent rows, an unconstrained search only."""
    project_in_loop: bool = True
    """Forward the nearest tokens while optimising soft prompts and step the continuous copy (PEZ); false: free embeddings, projected once at the end."""
    refine_top_k: int = 64
    """Tokens per position ranked by the one-hot gradient, from which swaps are drawn."""
    fluency_candidates: int = 8
    """Candidates per feature and step scored exactly for cross-entropy when fluency_weight > 0."""
    fluency_target: float | None = None
    """The fluent rows' hinge in nats per byte (cross-entropy above it is penalised); null: the real-text bound (fluency_quantile) for the row from text, and real text's p90 (at least the bound) for the row from the soft prompt, so the front has a point at each."""
    fluency_quantile: float = 0.5
    """The headline bound: this quantile of real windows' cross-entropy in nats per byte (0.5 the median, 0.9 the 90th percentile)."""
    fluency_windows: int = 300
    """Random real text windows of the prompt's length the bound is measured on."""
    fluent_start: Literal["text", "soft", "both"] = "both"
    """Where the fluent row starts: text (the most active of the feature's exemplar windows within the hinge when a collection ran, else the best prompt of a left-to-right beam, see beam_width, or without one the most active of random real windows), the soft prompt's best projection (as the unconstrained row), or both (two fluent rows: two thirds of fluent_share to the one from text, a third to the one from the soft prompt)."""
    beam_width: int = 8
    """Prompts per feature in the left-to-right beam that builds a fluent start from scratch for a feature without an exemplar window within the hinge (0: no beam, random real windows instead)."""
    beam_proposals: int = 16
    """Next tokens each beam prompt proposes per step: half drawn from the model's own next-token distribution, half ranked by the feature's gradient; each costs one cached token forwarded to the hook."""
    population: int = 1
    """Fluent rows from text per feature (EPO's population over fluency weights): they share that row's budget, member i weighs fluency by fluency_weight x 2^k (k = 0, -1, 1, -2, 2, ...), and each step every member picks its next prompt among all members' exactly scored candidates; 1: one row at fluency_weight."""
    fluent_share: float = 0.75
    """Share of each feature's refinement budget spent by its fluent row(s) (the rest: its unconstrained row)."""
    pareto_size: int = 8
    """About this many (activation, cross-entropy) prompts kept per feature on its front."""
    max_sequences: int | None = 1500
    """Budget per feature for the whole search (soft stage, starts, every refinement row), in sequence-equivalents: token positions x layers forwarded (a backward counts as two forwards) / (prompt tokens x layers to the hook); null: only the step limits stop it."""
    reference_tokens: int | None = 150000
    """Tokens of the bundled corpus's train split the reference maximum is taken over (null: the whole split, about 495k tokens); ratios divide by it."""


@dataclass
class ExplanationConfig(Section):
    explainer: Literal["context", "tokens", "llm", "openai"] = "context"
    """Who writes explanations: tokens with the context they fire in (chosen on the explain split), a plain token list, a local HF LM, or an HTTP endpoint."""
    llm_name: str = "smollm2-135m"
    """Local explanation LM: 'smollm2-135m' (embedded; any alias of model.name's embedded default) or a Hugging Face model name."""
    base_url: str | None = None
    """OpenAI-compatible endpoint for the 'openai' explainer."""
    api_model: str | None = None
    """Model name sent to that endpoint."""
    api_key_env: str = "OPENAI_API_KEY"
    """Environment variable holding the endpoint's key (the key is never stored)."""
    max_new_tokens: int = 48
    """Length limit of a generated explanation."""
    n_heldout: int = 50
    """Held-out windows per kind for scoring: positives, random negatives and hard negatives (each)."""
    heldout_prompts: int = 2000
    """Bundled-corpus prompts (never collected) forwarded at most to top up the held-out side; 0: the run's prompts only."""
    explain_prompts: int = 2000
    """Prompts the explaining side draws firing windows from, the run's included: bundled-corpus texts outside the run and the held-out side top it up; at most the run's prompts when smaller."""
    n_bootstrap: int = 1000
    """Bootstrap resamples for every score's 95% interval (seeded)."""
    judge: bool = True
    """Also score with the embedding judge (all-MiniLM-L6-v2, offline): ROC AUC of similarity."""
    fit_sentence: bool = True
    """'context' and 'tokens' explainers: choose the sentence's parts (examples, context words, genre, targets listed) by how well its all-MiniLM-L6-v2 embedding matches the explaining side's firing windows against its silent ones; false: a fixed order of parts."""
    scorer: Literal["context", "tokens", "llm", "openai"] | None = None
    """Who scores the explanations; null: the explainer's own backend."""
    n_exemplars: int = 8
    """Top exemplars shown to the explainer."""
    n_decile_samples: int = 2
    """Prompts shown to the explainer per activation decile."""
    n_top_tokens: int = 8
    """Top tokens by activation mass shown to the explainer."""
    context_window: int | None = None
    """Tokens either side of an evidence window's peak; null: data.context_window."""
    score: bool = True
    """Score explanations (detection, fuzzing) and their shuffled baseline."""
    request_timeout: float = 30.0
    """Seconds per HTTP request to the 'openai' endpoint."""
    max_retries: int = 3
    """Retries (by the openai SDK: 0.5 s doubling, or the server's Retry-After) on 408 / 409 / 429 / 5xx, timeouts and connection errors."""
    batch_size: int = 8
    """Prompts per batch for the local explanation LM."""


@dataclass
class ScaleConfig(Section):
    engine: Literal["local", "ray"] = "local"
    """Who runs collection, inversion and explanation: this process, or Ray workers (extra 'ray')."""
    address: str | None = None
    """Ray cluster to join: null starts a local Ray; 'auto' or 'ray://host:10001' joins one."""
    workers: int = 2
    """Ray actors, each loading the model and SAE once."""
    gpus_per_worker: float = 0.0
    """GPUs reserved per worker (1 on a GPU cluster; 0: CPU workers)."""
    threads_per_worker: int = 1
    """torch CPU threads (and Ray CPUs reserved) per worker."""
    shard_prompts: int = 256
    """Prompts per collection unit (a shard: saved as it finishes, redone alone if lost)."""
    feature_batch: int = 8
    """Features per inversion / explanation unit."""


@dataclass
class OutputConfig(Section):
    dir: str = "runs"
    """Folder holding run directories."""
    name: str = "default"
    """Run name: the run lives in <dir>/<name>."""


@dataclass
class Config(Section):
    seed: int = 0
    """Fixes every random choice (prompt sampling, training, UMAP, initialisation)."""
    pipeline: PipelineConfig = field(default_factory=PipelineConfig)
    """Which stages run."""
    hardware: HardwareConfig = field(default_factory=HardwareConfig)
    """Device and dtype."""
    model: ModelConfig = field(default_factory=ModelConfig)
    """The subject model."""
    sae: SAEConfig = field(default_factory=SAEConfig)
    """The sparse autoencoder."""
    data: DataConfig = field(default_factory=DataConfig)
    """Prompts, collection and filtering."""
    clustering: ClusteringConfig = field(default_factory=ClusteringConfig)
    """Feature clustering and selection."""
    optimization: OptimizationConfig = field(default_factory=OptimizationConfig)
    """Inversion."""
    explanation: ExplanationConfig = field(default_factory=ExplanationConfig)
    """Explanations and their scores."""
    output: OutputConfig = field(default_factory=OutputConfig)
    """Where runs are written."""
    scale: ScaleConfig = field(default_factory=ScaleConfig)
    """Where the work runs: this process or Ray workers."""
