"""The reference maximum: each feature's maximum activation over a large sample of the corpus.

Inversion ratios divide by it. The run's own collection (500 prompts × ≤ 64 tokens ≈ 31k tokens)
is too small a sample: a smaller sample has a smaller maximum, which flatters every ratio. So
``reference_max`` streams the bundled corpus's train split through the model and the SAE the way
collection does (``models.hooks.hook_activations`` stopped at the SAE's layer, ``encode``,
positions before ``first_readable_position(exclude_bos)`` and padding masked) and keeps only a
running per-feature maximum:

- every text is cut into consecutive windows of ``window - 1`` tokens, each with the model's
  start token in front (the shape of a collection prompt), texts taken in the corpus's (seeded)
  order until ``max_tokens`` counted tokens (all of the split when None);
- windows are forwarded ``batch_size`` at a time, longest first; what is kept is the running
  per-feature maximum and, per feature, its ``TOP_WINDOWS`` most active windows (one position
  each, the window's peak; ``ReferenceWindows``): real text that fires, where inversion's fluent
  search may start (``invert.inputs.reference_windows``).

``cached_reference_max`` stores the result, top windows included, once per model and SAE (keyed
by their identity, ``models.identity``, the corpus seed and the settings above): beside the
default SAE when the SAE is the cached default, else in the saeinverse cache.
``ReferenceMax.name`` is how every ratio names it: "reference max over N tokens".
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from jaxtyping import Float, Int
from torch import Tensor

from saeinverse.errors import DataError
from saeinverse.io import load_tensors, save_tensors
from saeinverse.models.hooks import (
    encode,
    first_readable_position,
    hook_activations,
    sae_hook_name,
    start_token_id,
)

logger = logging.getLogger(__name__)

MIN_TOKENS = 150_000
"""Below this many tokens a reference maximum is logged as too small to compare with peers."""
CACHE_VERSION = 2
TOP_WINDOWS = 8
"""Windows kept per feature by the reference pass (its most active, one per window)."""


@dataclass(frozen=True)
class RealWindow:
    """One feature's window of real text that fires: its tokens up to and including the peak."""

    tokens: tuple[int, ...]
    """Text tokens (start token excluded), the peak last."""
    text: str
    """The corpus text it was cut from, as ``data.corpus.text_hash``."""
    activation: float
    """The feature's activation at the peak, in the window's own context."""

    def to_dict(self) -> dict[str, Any]:
        return {"tokens": list(self.tokens), "text": self.text, "activation": self.activation}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RealWindow:
        return cls(
            tuple(int(t) for t in data["tokens"]), str(data["text"]), float(data["activation"])
        )


@dataclass
class ReferenceWindows:
    """Each feature's most active windows of the reference pass, strongest first."""

    tokens: Int[Tensor, "d_sae k pos"]
    """The windows' tokens (start token included), -1 after a window's end."""
    peak: Int[Tensor, "d_sae k"]
    """Where the feature peaks in each window; -1 for an empty slot (it fired in fewer)."""
    text: Int[Tensor, "d_sae k"]
    """Each window's text: its index in the texts the pass read."""
    value: Float[Tensor, "d_sae k"]
    """The activation at the peak."""

    def tails(self, feature: int, start: int | None) -> list[tuple[int, list[int], float]]:
        """(text index, the tokens up to and including the peak without the start token
        ``start``, activation) of each of the feature's windows, strongest first."""
        out = []
        for j in range(self.peak.shape[1]):
            peak = int(self.peak[feature, j])
            if peak < 0:
                continue
            row = self.tokens[feature, j, : peak + 1].tolist()
            if start is not None and row and row[0] == start:
                row = row[1:]
            if row:
                out.append((int(self.text[feature, j]), row, float(self.value[feature, j])))
        return out

    def real_windows(
        self, feature: int, texts: Sequence[str], start: int | None
    ) -> list[RealWindow]:
        """The feature's windows as ``RealWindow``s (``texts``: those the pass read)."""
        from saeinverse.data.corpus import text_hash

        return [
            RealWindow(tuple(row), text_hash(texts[index]), value)
            for index, row, value in self.tails(feature, start)
        ]

    def to_tensors(self) -> dict[str, Tensor]:
        return {"top_tokens": self.tokens, "top_peak": self.peak, "top_text": self.text,
                "top_value": self.value}  # fmt: skip

    @classmethod
    def from_tensors(cls, data: dict[str, Tensor]) -> ReferenceWindows | None:
        if "top_tokens" not in data:
            return None
        return cls(data["top_tokens"], data["top_peak"], data["top_text"], data["top_value"])


@dataclass
class ReferenceMax:
    """Per-feature maximum activation over ``n_tokens`` counted tokens of ``source``."""

    max_activation: Tensor
    """Float[Tensor, "d_sae"]."""
    n_tokens: int
    source: str
    seconds: float = 0.0
    windows: ReferenceWindows | None = None
    """Each feature's most active windows (None when not kept)."""

    @property
    def name(self) -> str:
        return f"reference max over {self.n_tokens:,} tokens"

    def for_features(self, feature_ids: Sequence[int]) -> dict[int, float]:
        return {int(f): float(self.max_activation[int(f)]) for f in feature_ids}


def token_windows(
    model,
    texts: Sequence[str],
    window: int,
    max_tokens: int | None,
    first: int,
    sources: list[int] | None = None,
):
    """Windows ``[start] + text tokens`` of at most ``window`` tokens; (windows, counted tokens).
    ``sources``, when given, is filled with each window's text index."""
    start = start_token_id(model)
    body = window - (0 if start is None else 1)
    if body < 1:
        raise DataError(f"reference windows of {window} tokens hold no text after the start token")
    windows: list[Tensor] = []
    counted = 0
    for index, text in enumerate(texts):
        ids = model.to_tokens(text, prepend_bos=False, truncate=False, move_to_device=False)[0]
        for lo in range(0, len(ids), body):
            piece = ids[lo : lo + body]
            row = piece if start is None else torch.cat([torch.tensor([start]), piece])
            readable = max(0, len(row) - first)
            if readable == 0:
                continue
            windows.append(row)
            if sources is not None:
                sources.append(index)
            counted += readable
            if max_tokens is not None and counted >= max_tokens:
                return windows, counted
    return windows, counted


def reference_max(
    model,
    sae,
    texts: Sequence[str],
    *,
    max_tokens: int | None = None,
    window: int = 64,
    batch_size: int = 32,
    exclude_bos: bool = True,
    source: str = "texts",
    progress: bool = True,
) -> ReferenceMax:
    """Stream ``texts`` through model and SAE; each feature's maximum (see the module docstring)."""
    from tqdm.auto import tqdm

    began = time.perf_counter()
    first = first_readable_position(exclude_bos)
    sources: list[int] = []
    windows, counted = token_windows(model, texts, window, max_tokens, first, sources)
    if not windows:
        raise DataError("no text to take a reference maximum over")
    hook = sae_hook_name(sae)
    d_sae = int(sae.cfg.d_sae)
    best = torch.zeros(d_sae)
    top = _TopKeeper(d_sae, TOP_WINDOWS)
    lengths = torch.tensor([len(w) for w in windows])
    order = lengths.argsort(descending=True, stable=True)
    bar = tqdm(total=counted, unit="tok", desc="reference max", disable=not progress)
    with torch.inference_mode(), bar:
        for lo in range(0, len(order), batch_size):
            index = order[lo : lo + batch_size]
            width = int(lengths[index].max())
            tokens = torch.zeros((len(index), width), dtype=torch.long)
            for j, i in enumerate(index.tolist()):
                tokens[j, : len(windows[i])] = windows[i]
            positions = torch.arange(width)
            valid = (positions[None, :] < lengths[index][:, None]) & (positions[None, :] >= first)
            acts = encode(sae, hook_activations(model, tokens.to(model.cfg.device), hook))
            acts = acts.float().masked_fill(~valid.to(acts.device)[..., None], 0.0)
            peak_value, peak = acts.max(dim=1)
            best = torch.maximum(best, peak_value.amax(dim=0).cpu())
            top.add(peak_value.cpu(), peak.cpu(), index)
            bar.update(int(valid.sum()))
    seconds = time.perf_counter() - began
    result = ReferenceMax(best, counted, source, seconds, top.windows(windows, sources))
    logger.info(
        "%s of %s in %.0f s (%.0f tokens/s)", result.name, source, seconds, counted / seconds
    )
    if counted < MIN_TOKENS:
        logger.warning("%s is under %d tokens: ratios are flattered", result.name, MIN_TOKENS)
    return result


class _TopKeeper:
    """The running ``k`` most active windows per feature (window index and peak position)."""

    def __init__(self, d_sae: int, k: int):
        self.value = torch.zeros((0, d_sae))
        self.window = torch.zeros((0, d_sae), dtype=torch.long)
        self.peak = torch.zeros((0, d_sae), dtype=torch.long)
        self.k = k

    def add(self, value: Tensor, peak: Tensor, window: Tensor) -> None:
        """One batch: ``value`` and ``peak`` [batch, d_sae], ``window`` [batch] indices."""
        value = torch.cat([self.value, value])
        window = torch.cat([self.window, window[:, None].expand_as(peak)])
        peak = torch.cat([self.peak, peak])
        keep = value.topk(min(self.k, len(value)), dim=0).indices
        self.value, self.window, self.peak = (t.gather(0, keep) for t in (value, window, peak))

    def windows(self, rows: Sequence[Tensor], sources: Sequence[int]) -> ReferenceWindows:
        width = max(len(r) for r in rows)
        padded = torch.full((len(rows), width), -1, dtype=torch.int32)
        for i, r in enumerate(rows):
            padded[i, : len(r)] = r.to(torch.int32)
        fired = self.value > 0
        return ReferenceWindows(
            padded[self.window.T],
            torch.where(fired, self.peak, -1).T.to(torch.int32).contiguous(),
            torch.tensor(sources, dtype=torch.int32)[self.window.T],
            self.value.T.contiguous(),
        )


# ----------------------------------------------------------------------------- the cache


def cache_key(model, sae, settings: dict[str, Any]) -> str:
    """What the cached maximum depends on: the models' identity, the corpus and settings."""
    from saeinverse.models.identity import models_identity

    identity = {"version": CACHE_VERSION, "models": models_identity(model, sae), **settings}
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:16]


def cached_reference_max(
    model,
    sae,
    folder: str | Path,
    *,
    seed: int = 0,
    max_tokens: int | None = None,
    window: int = 64,
    exclude_bos: bool = True,
    progress: bool = True,
) -> ReferenceMax:
    """The reference maximum over the bundled corpus's train split, computed once per SAE.

    ``folder`` is where the file lives (beside the default SAE for the default; see
    ``reference_folder``).
    """
    settings = {
        "corpus": "default/train",
        "seed": int(seed),
        "max_tokens": max_tokens,
        "window": int(window),
        "exclude_bos": bool(exclude_bos),
        "top_windows": TOP_WINDOWS,
    }
    path = Path(folder) / f"reference-max-{cache_key(model, sae, settings)}.safetensors"
    if path.exists():
        data = load_tensors(path)
        n_tokens = int(data["n_tokens"].item())
        logger.info("reference max over %d tokens read from %s", n_tokens, path)
        return ReferenceMax(
            data["max_activation"], n_tokens, "the bundled corpus's train split",
            windows=ReferenceWindows.from_tensors(data),
        )  # fmt: skip
    from saeinverse.data.corpus import default_corpus

    texts = default_corpus(seed=seed).train
    result = reference_max(
        model, sae, texts, max_tokens=max_tokens, window=window, exclude_bos=exclude_bos,
        source="the bundled corpus's train split", progress=progress,
    )  # fmt: skip
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {"max_activation": result.max_activation, "n_tokens": torch.tensor(result.n_tokens)}
    if result.windows is not None:
        tensors.update(result.windows.to_tensors())
    save_tensors(
        path,
        tensors,
        metadata={"settings": json.dumps(settings), "seconds": f"{result.seconds:.1f}"},
    )
    return result


def reference_folder(config) -> Path:
    """Beside the default SAE when ``config`` uses it; else ``<cache>/reference``."""
    from saeinverse.models.from_config import default_sae_path
    from saeinverse.models.paths import cache_dir

    if config.sae.release or config.sae.path:
        return cache_dir() / "reference"
    return default_sae_path(config)


def larger_of(reference: ReferenceMax, stats) -> ReferenceMax:
    """The reference, or the run's collection when it counted more tokens."""
    if stats is not None and int(stats.n_tokens) > reference.n_tokens:
        return ReferenceMax(
            stats.max_activation.float(), int(stats.n_tokens), "the run's collection",
            windows=reference.windows,
        )  # fmt: skip
    return reference
