"""Turning a config into loaded models: the subject model, its SAE (trained on first use for the
embedded default) and, when explanations use a local LM, the explanation model."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from saeinverse.config import Config, HardwareConfig, get_default_config, update_config

logger = logging.getLogger(__name__)


def as_config(config: Config | Mapping[str, Any] | None) -> Config:
    """Accept a full ``Config``, a nested dict, the seed's ``config['hardware']`` alone, or None."""
    if config is None:
        return get_default_config()
    if isinstance(config, Config):
        return config
    if isinstance(config, HardwareConfig) or (
        isinstance(config, Mapping) and config and set(config) <= set(HardwareConfig._field_names())
    ):
        return update_config(get_default_config(), {"hardware": dict(config)})
    return update_config(get_default_config(), config)


def default_sae_path(config: Config) -> Path:
    """Where the default SAE for ``config.model`` and ``config.sae.train`` is cached."""
    from saeinverse.models.loading import model_source
    from saeinverse.models.paths import default_sae_dir

    name = config.model.name
    if model_source(name) == "embedded":
        from saeinverse.models.default import MODEL_NAME

        name = MODEL_NAME  # one cache folder for every alias of the embedded default
    train = config.sae.train
    return default_sae_dir(name, train.hook_name, train.d_sae, train.k)


def train_default_sae(
    config: Config, model=None, out_dir: str | Path | None = None, progress: bool = True
):
    """Train the TopK SAE that ``config.sae.train`` describes on the default corpus; save and return it.

    Returns ``(sae, quality)``; quality holds L0, explained variance, CE-loss recovered and the
    dead fraction measured on held-out text.
    """
    from saeinverse.data.corpus import default_corpus
    from saeinverse.models.train import train_sae

    if model is None:
        model = load_subject_model(config)
    corpus = default_corpus(seed=config.seed)
    train = config.sae.train
    return train_sae(
        model,
        corpus.train,
        corpus.heldout,
        hook_name=train.hook_name,
        d_sae=train.d_sae,
        k=train.k,
        training_tokens=train.training_tokens,
        context_size=train.context_size,
        batch_size_tokens=train.batch_size_tokens,
        lr=train.lr,
        seed=config.seed,
        device=str(model.cfg.device),
        out_dir=Path(out_dir) if out_dir is not None else default_sae_path(config),
        progress=progress,
    )


def load_subject_model(config: Config):
    """The subject HookedTransformer named by ``config.model`` on the resolved device."""
    from saeinverse.models.loading import load_model, resolve_device

    device = resolve_device(config.hardware.device)
    return load_model(
        config.model.name, device=device, dtype=config.hardware.dtype, n_ctx=config.model.n_ctx
    )


def load_experiment_sae(config: Config, model):
    """The SAE named by ``config.sae``; the cached default (trained now if missing) when none is named."""
    from saeinverse.models.loading import check_compatible, load_sae

    device = str(model.cfg.device)
    sae_cfg = config.sae
    if sae_cfg.release or sae_cfg.path:
        sae = load_sae(
            release=sae_cfg.release, sae_id=sae_cfg.sae_id, path=sae_cfg.path, device=device
        )
    else:
        path = default_sae_path(config)
        if not (path / "cfg.json").exists():
            logger.info("no cached default SAE at %s: training one now (first use only)", path)
            train_default_sae(config, model=model, out_dir=path)
        sae = load_sae(path=str(path), device=device)
    check_compatible(model, sae)
    return sae


def weights_stamp(config: Config) -> dict[str, Any]:
    """What says, without loading them, that the config's models are the ones fingerprinted
    before: the model and SAE settings, dtype and device, and the SAE weights' file time (a
    retrained default or a replaced local SAE changes it)."""
    sae_cfg = config.sae
    folder = Path(sae_cfg.path) if sae_cfg.path else None
    if not (sae_cfg.release or sae_cfg.path):
        folder = default_sae_path(config)
    from saeinverse.models.loading import SAE_FILES

    files = [folder / name for name in SAE_FILES] if folder is not None else []
    files = [path for path in files if path.is_file()]
    return {
        "model": config.model.to_dict(),
        "sae": sae_cfg.to_dict(),
        "hardware": [config.hardware.dtype, config.hardware.device],
        "files": [[p.name, p.stat().st_mtime_ns, p.stat().st_size] for p in files],
    }


def load_explanation_lm(config: Config):
    """``(lm, tokenizer)`` for the 'llm' explainer, or ``(None, None)`` when it is not used."""
    if not config.pipeline.run_explanations:
        return None, None
    return load_lm(config.explanation, config.hardware.device)


def load_lm(explanation_cfg, device: str = "auto"):
    """``(lm, tokenizer)`` for ``explanation_cfg``'s explainer on ``device`` (a ``hardware.device``
    value), or ``(None, None)`` when that explainer uses no local LM."""
    if explanation_cfg.explainer != "llm":
        return None, None
    from saeinverse.models.default import is_embedded, load_default_hf
    from saeinverse.models.loading import resolve_device

    name = explanation_cfg.llm_name
    if is_embedded(name):
        lm, tokenizer = load_default_hf()
    else:
        lm, tokenizer = load_hf_lm(name)
    return lm.to(resolve_device(device)).eval(), tokenizer


def load_experiment_models(config: Config | Mapping[str, Any] | None = None):
    """The seed's entry point: ``(model, sae, lm, tokenizer)`` for ``config``.

    ``config`` may be the full config, a nested dict, or the seed's ``config['hardware']`` alone
    (defaults for the rest). ``lm`` and ``tokenizer`` are the explanation LM, or None when
    explanations are off or use no local LM.
    """
    config = as_config(config)
    apply_threads(config.hardware)
    model = load_subject_model(config)
    sae = load_experiment_sae(config, model)
    lm, tokenizer = load_explanation_lm(config)
    return model, sae, lm, tokenizer


def apply_threads(hardware: HardwareConfig) -> None:
    """``torch.set_num_threads(hardware.threads)`` when it is set (None leaves torch's default).

    Applied where the pipeline and the notebook calls load their models; a Ray worker uses
    ``scale.threads_per_worker`` instead.
    """
    import torch

    if hardware.threads is not None and torch.get_num_threads() != hardware.threads:
        logger.info("torch CPU threads: %d (hardware.threads)", hardware.threads)
        torch.set_num_threads(int(hardware.threads))


def load_hf_lm(name: str):
    """A Hugging Face causal LM and its tokenizer by hub name or local path (fails fast offline)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from saeinverse.errors import ModelLoadError
    from saeinverse.hub import hub_mode, hub_should_be_offline

    offline = hub_should_be_offline() and not Path(name).exists()
    try:
        with hub_mode(offline):
            tokenizer = AutoTokenizer.from_pretrained(name)
            lm = AutoModelForCausalLM.from_pretrained(name)
    except OSError as err:
        raise ModelLoadError(
            f"explanation LM {name!r} could not be loaded: a hub name needs network access "
            f"(or the weights in the Hugging Face cache); give a local path instead ({err})"
        ) from err
    return lm, tokenizer
