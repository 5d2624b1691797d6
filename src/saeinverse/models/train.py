"""Train a TopK SAE on a subject model with SAELens's own trainer (`saeinverse train-sae`).

No pretrained SAE exists offline for the embedded default model, so saeinverse trains one with
SAELens's `LanguageModelSAETrainingRunner` and saves the inference SAE in SAELens's format
(`cfg.json` + `sae_weights.safetensors`, for `SAE.load_from_disk`) with `quality.json`: its
quality on held-out text (`evaluate_sae`) and how it was trained. The folder appears complete or
not at all: training writes to a temporary folder beside it, renamed at the end.

SAELens settings chosen here (see notes/offline-default.md §3.3):
- position 0 is dropped (`seqpos_slice=(1, None)`) and SAELens's document separators are
  excluded (`exclude_special_tokens=True`): both are start tokens that take the attention sink;
- `prepend_bos` follows the model's `default_prepend_bos`, so SAELens's contexts start with the
  token that `model.to_tokens` puts in front of a prompt;
- the mixing buffer holds `n_batches_in_buffer * (context_size - 1)` tokens in SAELens 6.54 and
  must hold a training batch, so `n_batches_in_buffer` is derived from the batch size;
- `b_dec` starts at the mean activation of the first training texts: the best constant
  reconstruction, which the SAE would otherwise spend its first steps finding.
"""

from __future__ import annotations

import contextlib
import copy
import json
import logging
import math
import shutil
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from saeinverse.errors import CompatibilityError, ConfigError, DataError
from saeinverse.models.evaluate import (
    QUALITY_FILENAME,
    SAEQuality,
    evaluate_sae,
    tokenize_for_eval,
)
from saeinverse.models.hooks import hook_activations
from saeinverse.models.sae_lens_runner import (
    STORE_BATCH_PROMPTS,
    run_trainer,
    runner_config,
    training_info,
)

if TYPE_CHECKING:
    from sae_lens import SAE, TopKTrainingSAE
    from transformer_lens import HookedTransformer

logger = logging.getLogger(__name__)


def train_sae(
    model: HookedTransformer,
    train_texts: list[str],
    heldout_texts: list[str],
    *,
    hook_name: str,
    d_sae: int,
    k: int,
    training_tokens: int,
    context_size: int = 128,
    batch_size_tokens: int = 1024,
    lr: float = 1e-3,
    seed: int = 0,
    device: str = "cpu",
    out_dir: Path,
    progress: bool = True,
) -> tuple[SAE[Any], SAEQuality]:
    """Train a TopK SAE (`d_sae` features, `k` active) at `hook_name` and save it to `out_dir`.

    Trains on `training_tokens` activations from `train_texts` (cycled if they hold fewer), in
    contexts of `context_size` tokens, batches of `batch_size_tokens`, Adam at `lr` after a short
    warm-up. Then measures the SAE on `heldout_texts` with `evaluate_sae`. Returns the saved
    inference SAE (a `TopKSAE` whose `cfg.metadata.hook_name == hook_name`) and its quality.
    `out_dir` is replaced only once everything succeeded. Before training it logs an estimate of
    the time training will take (from a trial forward pass and SAE step); `progress` shows a
    progress bar (tokens trained, rate, time left, current MSE).
    """
    from sae_lens import SAE

    out_dir = Path(out_dir)
    _check_inputs(model, train_texts, heldout_texts, hook_name, d_sae, k, context_size)
    if training_tokens < 1 or batch_size_tokens < 1:
        raise ConfigError("training_tokens and batch_size_tokens must be positive.")
    with _seeded(seed, device):
        d_in, lm_tokens_per_s, mean_activation = _probe(model, train_texts, hook_name, context_size)
        sae = _new_training_sae(d_in, mean_activation, d_sae, k, device)
        step_s = _time_sae_step(sae, batch_size_tokens)
        estimate = _log_estimate(
            lm_tokens_per_s, step_s, training_tokens, batch_size_tokens, context_size
        )
        tmp = out_dir.parent / f".{out_dir.name}.tmp-{uuid.uuid4().hex[:8]}"
        cfg = runner_config(
            model, hook_name, sae, context_size, batch_size_tokens, training_tokens, lr, seed, tmp
        )
        try:
            started = time.perf_counter()
            run_trainer(cfg, model, train_texts, sae, progress)
            seconds = time.perf_counter() - started
            inference_sae = SAE.load_from_disk(tmp, device=device).eval()
            quality = evaluate_sae(
                model, inference_sae, heldout_texts, hook_name=hook_name, context_size=context_size
            )
            info = training_info(cfg, seconds, estimate, len(train_texts))
            _write_json(tmp / QUALITY_FILENAME, {"quality": quality.to_dict(), "training": info})
            _replace_dir(tmp, out_dir)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    logger.info("Trained SAE saved to %s (%.0f s of training)", out_dir, seconds)
    return inference_sae, quality


def _check_inputs(
    model: HookedTransformer,
    train_texts: list[str],
    heldout_texts: list[str],
    hook_name: str,
    d_sae: int,
    k: int,
    context_size: int,
) -> None:
    """Raise a clear error for inputs SAELens would reject late or obscurely."""
    if hook_name not in model.hook_dict:
        raise CompatibilityError(
            f"Hook {hook_name!r} does not exist in model {model.cfg.model_name!r} "
            f"(e.g. {', '.join(list(model.hook_dict)[:3])}, ...)."
        )
    if not any(text.strip() for text in train_texts):
        raise DataError("No training texts: train_texts is empty or blank.")
    if not any(text.strip() for text in heldout_texts):
        raise DataError("No held-out texts: heldout_texts is empty or blank.")
    if not 0 < k <= d_sae:
        raise ConfigError(f"k must be in 1..d_sae ({d_sae}), got {k}.")
    if not 2 <= context_size <= model.cfg.n_ctx:
        raise ConfigError(
            f"context_size must be in 2..{model.cfg.n_ctx} (the model's n_ctx), got {context_size}."
        )
    if model.cfg.default_prepend_bos and model.tokenizer.bos_token_id is None:
        raise CompatibilityError("The model prepends a start token but its tokenizer has none.")


@contextlib.contextmanager
def _seeded(seed: int, device: str) -> Iterator[None]:
    """Seed torch for the block (SAE init, buffer shuffles) and restore the caller's RNG after."""
    devices = [torch.device(device)] if torch.device(device).type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        yield


def _probe(
    model: HookedTransformer, texts: list[str], hook_name: str, context_size: int
) -> tuple[int, float, torch.Tensor]:
    """Run the model on the first training texts: hook width, tokens/s and mean activation."""
    sample = [text for text in texts if text.strip()][:STORE_BATCH_PROMPTS]
    tokens, mask = tokenize_for_eval(model, sample, context_size)
    with torch.inference_mode():
        hook_activations(model, tokens[:2], hook_name)  # warm-up
        started = time.perf_counter()
        acts = hook_activations(model, tokens, hook_name)
        elapsed = time.perf_counter() - started
    acts = acts[mask].flatten(1).float()
    return acts.shape[-1], tokens.numel() / max(elapsed, 1e-9), acts.mean(0).cpu()


def _new_training_sae(
    d_in: int, mean_activation: torch.Tensor, d_sae: int, k: int, device: str
) -> TopKTrainingSAE:
    """A fresh SAELens TopK training SAE with `b_dec` at the mean activation."""
    from sae_lens import TopKTrainingSAE, TopKTrainingSAEConfig

    sae = TopKTrainingSAE(
        TopKTrainingSAEConfig(d_in=d_in, d_sae=d_sae, k=k, dtype="float32", device=device)
    )
    with torch.no_grad():
        sae.b_dec.copy_(mean_activation.to(sae.b_dec))
    return sae


def _time_sae_step(sae: TopKTrainingSAE, batch_size_tokens: int) -> float:
    """Seconds per training step (forward, TopK aux loss, backward, Adam), on a copy of the SAE.

    Every feature counts as dead here, so the aux loss runs as it will once features die. The
    second of two steps is timed (the first allocates).
    """
    from sae_lens.saes.sae import TrainStepInput

    trial = copy.deepcopy(sae)
    optimizer = torch.optim.Adam(trial.parameters(), lr=1e-9)
    batch = sae.b_dec.detach().expand(batch_size_tokens, -1)
    step = TrainStepInput(
        sae_in=batch + torch.randn_like(batch),
        coefficients={},
        dead_neuron_mask=torch.ones(sae.cfg.d_sae, dtype=torch.bool, device=batch.device),
        n_training_steps=0,
        is_logging_step=False,
    )
    for _ in range(2):
        started = time.perf_counter()
        optimizer.zero_grad()
        trial.training_forward_pass(step).loss.backward()
        optimizer.step()
        elapsed = time.perf_counter() - started
    return elapsed


def _log_estimate(
    lm_tokens_per_s: float, sae_step_s: float, training_tokens: int, batch_size: int, context: int
) -> float:
    """Log (and return) the expected training time in seconds, from the measured speeds."""
    # SAELens runs the LLM on whole contexts but trains on positions 1.. only.
    lm_s = training_tokens * context / (context - 1) / lm_tokens_per_s
    estimate = lm_s + math.ceil(training_tokens / batch_size) * sae_step_s
    logger.info(
        "Training the SAE on %d tokens: %s (LLM %.0f tokens/s, SAE step %.2f s).",
        training_tokens,
        _about(estimate),
        lm_tokens_per_s,
        sae_step_s,
    )
    return estimate


def _about(seconds: float) -> str:
    """A rough duration in words: "under a minute", "about 1 minute", "about 12 minutes"."""
    minutes = round(seconds / 60)
    if minutes < 1:
        return "under a minute"
    return f"about {minutes} minute{'s' if minutes > 1 else ''}"


def _write_json(path: Path, data: dict[str, Any]) -> None:
    """Write `data` as indented JSON (NaN allowed: a degenerate CE gap gives a NaN ratio)."""
    path.write_text(json.dumps(data, indent=2) + "\n")


def _replace_dir(tmp: Path, out_dir: Path) -> None:
    """Move the finished folder `tmp` to `out_dir`, replacing any folder there."""
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    if out_dir.exists():
        old = out_dir.parent / f".{out_dir.name}.old-{uuid.uuid4().hex[:8]}"
        out_dir.rename(old)
        tmp.rename(out_dir)
        shutil.rmtree(old, ignore_errors=True)
    else:
        tmp.rename(out_dir)
