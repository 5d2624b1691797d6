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
import functools
import json
import logging
import math
import shutil
import time
import uuid
import warnings
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

if TYPE_CHECKING:
    from sae_lens import SAE, LanguageModelSAERunnerConfig, TopKTrainingSAE
    from transformer_lens import HookedTransformer

logger = logging.getLogger(__name__)

STORE_BATCH_PROMPTS = 16
"""Contexts per LLM forward pass while SAELens collects activations."""
BUFFER_BATCHES = 8
"""SAELens's mixing buffer holds at least this many training batches."""
DEAD_FEATURE_WINDOW = 100
"""Steps without firing after which SAELens calls a feature dead (its TopK aux loss revives it)."""
WARM_UP_STEPS = 10
"""Learning-rate warm-up steps (then constant)."""


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
        cfg = _runner_config(
            model, hook_name, sae, context_size, batch_size_tokens, training_tokens, lr, seed, tmp
        )
        try:
            started = time.perf_counter()
            _run_trainer(cfg, model, train_texts, sae, progress)
            seconds = time.perf_counter() - started
            inference_sae = SAE.load_from_disk(tmp, device=device).eval()
            quality = evaluate_sae(
                model, inference_sae, heldout_texts, hook_name=hook_name, context_size=context_size
            )
            info = _training_info(cfg, seconds, estimate, len(train_texts))
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


def _runner_config(
    model: HookedTransformer,
    hook_name: str,
    sae: TopKTrainingSAE,
    context_size: int,
    batch_size_tokens: int,
    training_tokens: int,
    lr: float,
    seed: int,
    output_path: Path,
) -> LanguageModelSAERunnerConfig[Any]:
    """The SAELens runner config: offline, no wandb, no checkpoints, position 0 dropped."""
    from sae_lens import LanguageModelSAERunnerConfig, LoggingConfig

    positions = context_size - 1  # seqpos_slice=(1, None)
    return LanguageModelSAERunnerConfig(
        sae=sae.cfg,
        model_name=model.cfg.model_name,
        model_class_name="HookedTransformer",
        model_from_pretrained_kwargs={},  # the model is given, not loaded by name
        hook_name=hook_name,
        dataset_trust_remote_code=False,
        is_dataset_tokenized=False,
        streaming=False,
        context_size=context_size,
        prepend_bos=bool(model.cfg.default_prepend_bos),
        seqpos_slice=(1, None),
        exclude_special_tokens=True,
        store_batch_size_prompts=STORE_BATCH_PROMPTS,
        n_batches_in_buffer=math.ceil(BUFFER_BATCHES * batch_size_tokens / positions),
        training_tokens=training_tokens,
        train_batch_size_tokens=batch_size_tokens,
        lr=lr,
        lr_warm_up_steps=WARM_UP_STEPS,
        lr_scheduler_name="constant",
        dead_feature_window=DEAD_FEATURE_WINDOW,
        feature_sampling_window=DEAD_FEATURE_WINDOW,
        device=str(sae.cfg.device),
        llm_device=str(model.cfg.device),
        dtype="float32",
        seed=seed,
        logger=LoggingConfig(log_to_wandb=False),
        n_checkpoints=0,
        checkpoint_path=None,
        output_path=str(output_path),
        verbose=False,
    )


def _run_trainer(
    cfg: LanguageModelSAERunnerConfig[Any],
    model: HookedTransformer,
    train_texts: list[str],
    sae: TopKTrainingSAE,
    progress: bool,
) -> None:
    """Run SAELens's training runner; it saves the inference SAE to `cfg.output_path`."""
    import datasets

    dataset = datasets.Dataset.from_dict({"text": [t for t in train_texts if t.strip()]})
    with _quiet_sae_lens():
        runner = _runner_class()(
            cfg, override_dataset=dataset, override_model=model, override_sae=sae
        )
        runner.progress = progress
        runner.run()


def _runner_class() -> type:
    """SAELens's runner with a per-step progress bar, built on first use (heavy import)."""
    from sae_lens import LanguageModelSAETrainingRunner

    class Runner(LanguageModelSAETrainingRunner):
        """Shows a bar that moves every step (SAELens's moves every 100) and leaves the
        process's SIGINT/SIGTERM handlers alone (SAELens's replaces them for good, to save a
        checkpoint on interrupt; saeinverse keeps no checkpoints)."""

        progress: bool = True

        def run_trainer_with_interruption_handling(self, trainer: Any) -> Any:
            from tqdm.auto import tqdm

            batch_size = trainer.cfg.train_batch_size_samples
            bar = tqdm(
                total=math.ceil(trainer.cfg.total_training_samples / batch_size) * batch_size,
                desc="Training SAE",
                unit="tok",
                unit_scale=True,
                disable=not self.progress,
            )
            step = trainer.step

            def step_with_progress(batch: torch.Tensor) -> Any:
                output = step(batch)
                bar.update(batch.shape[0])
                mse = output.losses.get("mse_loss")
                if mse is not None and trainer.n_training_steps % 10 == 0:
                    bar.set_postfix(mse=f"{float(torch.as_tensor(mse).detach()):.4g}")
                return output

            trainer.step = step_with_progress
            try:
                return trainer.fit()
            finally:
                bar.close()

    return Runner


@contextlib.contextmanager
def _quiet_sae_lens() -> Iterator[None]:
    """Silence SAELens's notices that do not apply here (override dataset/model "not
    reproducible", text tokenized on the fly, texts fewer than tokens) and its progress bar,
    which moves only every 100 steps (`_runner_class` shows one of ours)."""
    import sae_lens
    import sae_lens.training.sae_trainer as sae_trainer

    sae_logger = logging.getLogger(sae_lens.logger.name)
    saved_level, saved_tqdm = sae_logger.level, sae_trainer.tqdm
    sae_logger.setLevel(logging.ERROR)
    sae_trainer.tqdm = functools.partial(saved_tqdm, disable=True)  # no switch for it
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Dataset is not tokenized")
            warnings.filterwarnings("ignore", message="The training dataset contains fewer")
            yield
    finally:
        sae_logger.setLevel(saved_level)
        sae_trainer.tqdm = saved_tqdm


def _training_info(
    cfg: LanguageModelSAERunnerConfig[Any], seconds: float, estimate: float, n_texts: int
) -> dict[str, Any]:
    """What `quality.json` records about the training run."""
    import sae_lens

    info = {key: getattr(cfg, key) for key in ("model_name", "hook_name", "training_tokens")}
    info |= {key: getattr(cfg.sae, key) for key in ("d_in", "d_sae", "k")}
    info |= {key: getattr(cfg, key) for key in ("context_size", "lr", "lr_warm_up_steps")}
    info |= {key: getattr(cfg, key) for key in ("seed", "prepend_bos", "device")}
    return info | {
        "architecture": cfg.sae.architecture(),
        "batch_size_tokens": cfg.train_batch_size_tokens,
        "seqpos_slice": list(cfg.seqpos_slice),
        "n_train_texts": n_texts,
        "seconds": round(seconds, 2),
        "estimated_seconds": round(estimate, 2),
        "sae_lens_version": sae_lens.__version__,
    }


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
