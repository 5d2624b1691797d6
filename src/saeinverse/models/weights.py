"""Weights as saeinverse handles them: loaded unprocessed, and fingerprinted for stage hashes."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from saeinverse.errors import ModelLoadError, one_line

if TYPE_CHECKING:
    from transformer_lens import HookedTransformer


def load_unprocessed(model: HookedTransformer, state_dict: dict[str, Any]) -> None:
    """Load converted weights as they are: no LayerNorm folding, centring or refactoring, so the
    activations match the Hugging Face model (and SAELens's `from_pretrained_no_processing`).

    A state dict that does not fit the model (missing keys, other shapes) is a `ModelLoadError`.
    """
    try:
        model.load_and_process_state_dict(
            state_dict,
            fold_ln=False,
            center_writing_weights=False,
            center_unembed=False,
            fold_value_biases=False,
            refactor_factored_attn_matrices=False,
        )
    except (RuntimeError, KeyError) as err:
        raise ModelLoadError(
            f"the weights do not fit model {model.cfg.model_name!r}: {one_line(err)}"
        ) from err


def weights_fingerprint(module: Any, samples: int = 256) -> list[Any]:
    """Name, shape and the sum of a strided sample of each parameter: cheap, and changes with
    retraining."""
    import torch

    rows = []
    with torch.no_grad():
        for name, param in module.named_parameters():
            flat = param.detach().reshape(-1)
            step = max(1, flat.numel() // samples)
            rows.append([name, list(param.shape), round(float(flat[::step].double().sum()), 6)])
    return rows
