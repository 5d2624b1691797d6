"""SAELens's training runner as saeinverse drives it: its config, a per-step progress bar, its
notices silenced, and what ``quality.json`` records about the run (see ``models.train``)."""

from __future__ import annotations

import contextlib
import functools
import logging
import math
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

if TYPE_CHECKING:
    from sae_lens import LanguageModelSAERunnerConfig, TopKTrainingSAE
    from transformer_lens import HookedTransformer

STORE_BATCH_PROMPTS = 16
"""Contexts per LLM forward pass while SAELens collects activations."""
BUFFER_BATCHES = 8
"""SAELens's mixing buffer holds at least this many training batches."""
DEAD_FEATURE_WINDOW = 100
"""Steps without firing after which SAELens calls a feature dead (its TopK aux loss revives it)."""
WARM_UP_STEPS = 10
"""Learning-rate warm-up steps (then constant)."""


def runner_config(
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


def run_trainer(
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


def training_info(
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
