"""Per-feature statistics of SAE activations: the `FeatureStats` result, exact and mergeable.

`saeinverse.collect.accumulator.StatsAccumulator` folds one batch of feature activations at a
time into fixed-size per-feature tensors (plus the sparse per-prompt and per-token tables); no
`[tokens × d_sae]` tensor outlives its batch. `FeatureStats.merge` combines results collected over disjoint prompt ranges exactly
(counts, sums, maxima, histograms, top-k exemplars, token mass, per-prompt matrix), so collection
shards by prompts (DESIGN §12).

Definitions, as implemented (a "token" is a non-masked position: padding is always masked,
position 0 too when `exclude_bos`; a feature *fires* on a token when its activation is > 0, and
every statistic reads firing activations only):

- `firing_count`: firing tokens. `density` = firing_count / n_tokens.
- `activation_sum`: sum of the activations over firing tokens (the feature's activation *mass*).
- `mean_activation`: activation_sum / firing_count: the mean over firing tokens (0 if dead).
- `max_activation`: the largest activation (0 if dead).
- `histogram`: firing activations counted in fixed log-spaced bins: `histogram_edges` are
  `histogram_bins + 1` edges from 1e-3 to 1e4; column 0 counts 0 < a < 1e-3 (underflow), column
  i (1..bins) counts edges[i-1] <= a < edges[i], the last column a >= 1e4 (overflow).
- `prompt_entropy`: with m_p the feature's mass in prompt p, H = -sum_p (m_p/M) log(m_p/M)
  over prompts, M = sum_p m_p, divided by log(n_prompts): in [0, 1], 0 when it fires in one
  prompt, 1 when its mass is spread equally over all (0 if dead or n_prompts == 1).
- `token_entropy`: the same entropy over token ids (the token at the firing position), divided by
  log(d_vocab): 0 for a single-token feature; 0.1 means exp(0.1 * log d_vocab) effective tokens
  (about 2.9 for a 49k vocabulary).
- `positional_share`: mass at the first `positional_window` tokens of each prompt (positions
  first_position .. first_position + window - 1) / activation_sum (0 if dead).
- exemplars: the top-k (prompt, position) by activation; ties go to the earlier prompt, then the
  earlier position.
- prompt × feature matrix: each prompt's maximum activation of each feature (sparse).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from saeinverse import artifacts
from saeinverse.collect.tables import coalesce, merge_topk
from saeinverse.errors import ArtifactError, SaeInverseError
from saeinverse.io import load_json, load_tensors, save_json, save_tensors

logger = logging.getLogger(__name__)

HISTOGRAM_MIN = 1e-3
"""Lowest histogram edge (activations below it land in the underflow column)."""
HISTOGRAM_MAX = 1e4
"""Highest histogram edge (activations at or above it land in the overflow column)."""
STATS_TENSORS = artifacts.STATS_TENSORS_FILE
STATS_META = artifacts.STATS_FILE
STATS_VERSION = 1


class FeatureIdError(SaeInverseError, IndexError):
    """A feature id outside 0 .. d_sae - 1."""


@dataclass(frozen=True)
class Exemplar:
    """One top-activating context of a feature."""

    feature: int
    activation: float
    prompt_index: int
    position: int
    """Position in the prompt's tokens (the start token is position 0)."""
    context_start: int
    """Position of `context_ids[0]`: the context is tokens[context_start : context_start + len]."""
    context_ids: list[int]
    context_tokens: list[str]

    @property
    def target_index(self) -> int:
        """Index of the activating token inside `context_ids` / `context_tokens`."""
        return self.position - self.context_start

    @property
    def text(self) -> str:
        return "".join(self.context_tokens)


def log_histogram_edges(bins: int) -> Tensor:
    """`bins + 1` log-spaced edges from HISTOGRAM_MIN to HISTOGRAM_MAX (float64)."""
    return torch.logspace(
        math.log10(HISTOGRAM_MIN), math.log10(HISTOGRAM_MAX), bins + 1, dtype=torch.float64
    )


# Field groups, for save / load / merge.
_SUM_FIELDS = ("firing_count", "activation_sum", "histogram", "prompt_mass_xlogx")
_TENSOR_FIELDS = (
    "tokens",
    "lengths",
    "histogram_edges",
    *_SUM_FIELDS,
    "max_activation",
    "position_mass",
    "token_mass_keys",
    "token_mass_values",
    "exemplar_activation",
    "exemplar_prompt",
    "exemplar_position",
    "prompt_feature_index",
    "prompt_feature_values",
)


@dataclass
class FeatureStats:
    """Statistics of every SAE feature over a set of prompts (definitions: module docstring).

    Raw, mergeable state is stored; `density`, `mean_activation`, `prompt_entropy`,
    `token_entropy` and `positional_share` are computed from it on access.
    """

    d_sae: int
    d_vocab: int
    n_tokens: int
    """Non-masked tokens the statistics cover."""
    first_position: int
    """First non-masked position of a prompt: 1 when position 0 was masked (exclude_bos), else 0."""
    positional_window: int
    context_window: int
    prompts: list[str]
    tokens: Tensor  # Int[Tensor, "n_prompts pos"], right-padded (see `lengths`)
    lengths: Tensor  # Int[Tensor, "n_prompts"], tokens per prompt, start token included
    token_strings: dict[int, str]
    """Decoded string of every token id in `tokens`."""
    histogram_edges: Tensor  # Float64[Tensor, "bins+1"]
    firing_count: Tensor  # Int64[Tensor, "d_sae"]
    activation_sum: Tensor  # Float64[Tensor, "d_sae"]
    max_activation: Tensor  # Float[Tensor, "d_sae"]
    histogram: Tensor  # Int64[Tensor, "d_sae bins+2"]
    position_mass: Tensor  # Float64[Tensor, "d_sae pos"], mass by position - first_position
    prompt_mass_xlogx: Tensor  # Float64[Tensor, "d_sae"], sum_p m_p log m_p
    token_mass_keys: Tensor  # Int64[Tensor, "nnz"], sorted feature * d_vocab + token id
    token_mass_values: Tensor  # Float64[Tensor, "nnz"]
    exemplar_activation: Tensor  # Float[Tensor, "d_sae k"], descending, -inf in empty slots
    exemplar_prompt: Tensor  # Int64[Tensor, "d_sae k"], -1 in empty slots
    exemplar_position: Tensor  # Int64[Tensor, "d_sae k"]
    prompt_feature_index: Tensor  # Int64[Tensor, "2 nnz"], (prompt, feature)
    prompt_feature_values: Tensor  # Float[Tensor, "nnz"], per-prompt max activation
    meta: dict[str, Any] = field(default_factory=dict)
    """Provenance: model, SAE hook, data config, cache key."""

    # ------------------------------------------------------------------ derived statistics

    @property
    def n_prompts(self) -> int:
        return len(self.prompts)

    @property
    def top_k(self) -> int:
        return int(self.exemplar_activation.shape[1])

    @property
    def density(self) -> Tensor:
        """Float[Tensor, "d_sae"]: firing tokens / non-masked tokens."""
        return self.firing_count.double() / max(self.n_tokens, 1)

    @property
    def mean_activation(self) -> Tensor:
        """Float[Tensor, "d_sae"]: mean activation over firing tokens (0 for dead features)."""
        return self.activation_sum / self.firing_count.clamp(min=1)

    @property
    def prompt_entropy(self) -> Tensor:
        """Float[Tensor, "d_sae"]: normalised entropy of the mass over prompts, in [0, 1]."""
        return _normalised_entropy(self.activation_sum, self.prompt_mass_xlogx, self.n_prompts)

    @property
    def token_entropy(self) -> Tensor:
        """Float[Tensor, "d_sae"]: entropy of the mass over token ids / log(d_vocab), in [0, 1]."""
        features = torch.div(self.token_mass_keys, self.d_vocab, rounding_mode="floor")
        xlogx = torch.zeros(self.d_sae, dtype=torch.float64)
        values = self.token_mass_values
        xlogx.index_add_(0, features, values * values.log())
        return _normalised_entropy(self.activation_sum, xlogx, self.d_vocab)

    @property
    def positional_share(self) -> Tensor:
        """Float[Tensor, "d_sae"]: share of mass at the first `positional_window` tokens."""
        return self.positional_share_at(self.positional_window)

    def positional_share_at(self, window: int) -> Tensor:
        """Float[Tensor, "d_sae"]: share of mass at the first `window` non-masked positions."""
        early = self.position_mass[:, :window].sum(dim=1)
        return early / self.activation_sum.clamp(min=torch.finfo(torch.float64).tiny)

    @property
    def prompt_feature_matrix(self) -> Tensor:
        """Sparse COO Float[Tensor, "n_prompts d_sae"]: each prompt's max activation per feature."""
        return torch.sparse_coo_tensor(
            self.prompt_feature_index,
            self.prompt_feature_values,
            (self.n_prompts, self.d_sae),
        ).coalesce()

    def prompt_feature_dense(self, feature_ids: Tensor | list[int] | None = None) -> Tensor:
        """Float[Tensor, "n_prompts n_features"]: the per-prompt max, dense, for `feature_ids`."""
        if feature_ids is None:
            ids = torch.arange(self.d_sae)
        else:
            ids = torch.as_tensor(feature_ids, dtype=torch.long).reshape(-1)
            for fid in ids.tolist():
                self._check_feature(fid)
        column = torch.full((self.d_sae,), -1, dtype=torch.long)
        column[ids] = torch.arange(len(ids))
        prompts, features = self.prompt_feature_index
        cols = column[features]
        keep = cols >= 0
        dense = torch.zeros(self.n_prompts, len(ids), dtype=self.prompt_feature_values.dtype)
        dense[prompts[keep], cols[keep]] = self.prompt_feature_values[keep]
        return dense

    # ------------------------------------------------------------------ per-feature views

    def _check_feature(self, feature_id: int) -> int:
        if not 0 <= int(feature_id) < self.d_sae:
            raise FeatureIdError(
                f"feature id {feature_id} is out of range: valid ids are 0..{self.d_sae - 1}"
            )
        return int(feature_id)

    def top_exemplars(self, feature_id: int, n: int | None = None) -> list[Exemplar]:
        """The feature's top activating contexts, highest first (at most `top_k`)."""
        fid = self._check_feature(feature_id)
        found = []
        for slot in range(self.top_k if n is None else min(n, self.top_k)):
            prompt = int(self.exemplar_prompt[fid, slot])
            if prompt < 0:
                break
            position = int(self.exemplar_position[fid, slot])
            start = max(0, position - self.context_window)
            stop = min(int(self.lengths[prompt]), position + self.context_window + 1)
            ids = self.tokens[prompt, start:stop].tolist()
            found.append(
                Exemplar(
                    feature=fid,
                    activation=float(self.exemplar_activation[fid, slot]),
                    prompt_index=prompt,
                    position=position,
                    context_start=start,
                    context_ids=ids,
                    context_tokens=[self.token_strings.get(i, f"<{i}>") for i in ids],
                )
            )
        return found

    def top_tokens(self, feature_id: int, n: int = 10) -> list[tuple[int, str, float]]:
        """The `n` token ids carrying most of the feature's mass: (id, string, share of mass)."""
        fid = self._check_feature(feature_id)
        lo, hi = torch.searchsorted(
            self.token_mass_keys, torch.tensor([fid * self.d_vocab, (fid + 1) * self.d_vocab])
        ).tolist()
        values = self.token_mass_values[lo:hi]
        total = float(self.activation_sum[fid]) or 1.0
        top = values.topk(min(n, len(values)))
        result = []
        for value, index in zip(top.values.tolist(), top.indices.tolist(), strict=True):
            token = int(self.token_mass_keys[lo + index]) - fid * self.d_vocab
            result.append((token, self.token_strings.get(token, f"<{token}>"), value / total))
        return result

    # ------------------------------------------------------------------ merge

    def merge(self, other: FeatureStats) -> FeatureStats:
        """The statistics of `self`'s prompts followed by `other`'s, exactly as one pass gives.

        `other`'s prompt indices are shifted by `self.n_prompts`. Sums are float64, so merged
        sums equal one pass up to float64 rounding; everything else is exact.
        """
        self._check_mergeable(other)
        offset = self.n_prompts
        width = max(self.tokens.shape[1], other.tokens.shape[1])
        merged = {name: getattr(self, name) + getattr(other, name) for name in _SUM_FIELDS}
        values, prompts, positions = merge_topk(
            (self.exemplar_activation, self.exemplar_prompt, self.exemplar_position),
            (
                other.exemplar_activation,
                torch.where(other.exemplar_prompt >= 0, other.exemplar_prompt + offset, -1),
                other.exemplar_position,
            ),
        )
        keys, masses = coalesce(
            torch.cat([self.token_mass_keys, other.token_mass_keys]),
            torch.cat([self.token_mass_values, other.token_mass_values]),
        )
        other_index = other.prompt_feature_index.clone()
        other_index[0] += offset
        return replace(
            self,
            n_tokens=self.n_tokens + other.n_tokens,
            prompts=self.prompts + other.prompts,
            tokens=torch.cat([_pad_cols(self.tokens, width), _pad_cols(other.tokens, width)]),
            lengths=torch.cat([self.lengths, other.lengths]),
            token_strings={**self.token_strings, **other.token_strings},
            max_activation=torch.maximum(self.max_activation, other.max_activation),
            position_mass=_pad_cols(self.position_mass, width)
            + _pad_cols(other.position_mass, width),
            token_mass_keys=keys,
            token_mass_values=masses,
            exemplar_activation=values,
            exemplar_prompt=prompts,
            exemplar_position=positions,
            prompt_feature_index=torch.cat([self.prompt_feature_index, other_index], dim=1),
            prompt_feature_values=torch.cat(
                [self.prompt_feature_values, other.prompt_feature_values]
            ),
            meta={k: v for k, v in self.meta.items() if k != "cache_key"},
            **merged,
        )

    def _check_mergeable(self, other: FeatureStats) -> None:
        for name in ("d_sae", "d_vocab", "first_position", "top_k", "context_window"):
            if getattr(self, name) != getattr(other, name):
                raise ValueError(
                    f"cannot merge FeatureStats with different {name}: "
                    f"{getattr(self, name)} vs {getattr(other, name)}"
                )
        if not torch.equal(self.histogram_edges, other.histogram_edges):
            raise ValueError("cannot merge FeatureStats with different histogram edges")

    # ------------------------------------------------------------------ save / load

    def save(self, folder: str | Path) -> None:
        """Write `feature_stats.safetensors` then `feature_stats.json` (atomically) into `folder`.

        The JSON goes last and is removed first, so it marks a complete save.
        """
        folder = Path(folder)
        (folder / STATS_META).unlink(missing_ok=True)
        save_tensors(folder / STATS_TENSORS, {n: getattr(self, n) for n in _TENSOR_FIELDS})
        scalars = {
            f.name: getattr(self, f.name)
            for f in fields(self)
            if f.name not in _TENSOR_FIELDS and f.name != "token_strings"
        }
        scalars["token_strings"] = [[k, v] for k, v in sorted(self.token_strings.items())]
        save_json(folder / STATS_META, {"version": STATS_VERSION, **scalars})

    @classmethod
    def load(cls, folder: str | Path) -> FeatureStats:
        """Read what `save` wrote; `ArtifactError` naming the file if it is missing or corrupt."""
        folder = Path(folder)
        info = load_json(folder / STATS_META)
        tensors = load_tensors(folder / STATS_TENSORS)
        missing = [n for n in _TENSOR_FIELDS if n not in tensors]
        if not isinstance(info, dict) or info.get("version") != STATS_VERSION or missing:
            raise ArtifactError(
                f"artifact {folder / STATS_TENSORS} is not a saeinverse FeatureStats "
                f"(version {info.get('version') if isinstance(info, dict) else None}, "
                f"missing {missing})"
            )
        try:
            info.pop("version")
            info["token_strings"] = {int(k): v for k, v in info["token_strings"]}
            stats = cls(**info, **{n: tensors[n] for n in _TENSOR_FIELDS})
        except (TypeError, KeyError, ValueError) as err:
            raise ArtifactError(f"artifact {folder / STATS_META} is unreadable: {err}") from err
        if stats.firing_count.shape != (stats.d_sae,) or stats.tokens.shape[0] != stats.n_prompts:
            raise ArtifactError(f"artifact {folder} has inconsistent shapes")
        return stats


def read_stats_meta(folder: str | Path) -> dict[str, Any] | None:
    """The saved FeatureStats' `meta` in `folder`, or None if there is none readable."""
    try:
        info = load_json(Path(folder) / STATS_META)
    except ArtifactError:
        return None
    if not (Path(folder) / STATS_TENSORS).exists() or not isinstance(info, dict):
        return None
    return info.get("meta")


# ----------------------------------------------------------------------------- helpers


def _normalised_entropy(total: Tensor, xlogx: Tensor, n_outcomes: int) -> Tensor:
    """H / log(n) with H = log M - (sum x log x) / M: float64, clamped to [0, 1], 0 where M = 0."""
    if n_outcomes <= 1:
        return torch.zeros_like(total)
    safe = total.clamp(min=torch.finfo(torch.float64).tiny)
    entropy = (safe.log() - xlogx / safe) / math.log(n_outcomes)
    return torch.where(total > 0, entropy.clamp(0.0, 1.0), torch.zeros_like(entropy))


def _pad_cols(tensor: Tensor, width: int) -> Tensor:
    if tensor.shape[1] >= width:
        return tensor
    pad = tensor.new_zeros(tensor.shape[0], width - tensor.shape[1])
    return torch.cat([tensor, pad], dim=1)
