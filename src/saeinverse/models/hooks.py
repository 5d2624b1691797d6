"""Where an SAE reads the model, in one place: hook names, the forward to the hook, the encode.

Every stage that runs the subject model for an SAE goes through here:

- ``hook_layer`` / ``stop_at_layer_for``: the block a hook lives in, and the ``stop_at_layer``
  that still computes it (the forward never runs past the SAE's layer);
- ``sae_hook_name``: the hook an SAE reads (SAELens 6 keeps it in ``cfg.metadata``);
- ``start_token_id`` / ``first_readable_position``: the start token collection prepends, and the
  first position any statistic or objective reads (position 0 when it holds the start token and
  ``exclude_bos`` is on; else 0);
- ``hook_activations``: one forward up to the hook, returning its activations, optionally with
  extra forward hooks (inversion replaces the embeddings through ``hook_embed``);
- ``sae_input``: those activations as the SAE takes them (``hook_z``'s ``[batch pos heads d_head]``
  flattened to ``[batch pos heads*d_head]`` unless the SAE reshapes them itself);
- ``encode`` / ``encode_with_pre``: the SAE's feature activations, and with them the
  pre-activations and (for gated SAEs) the gate's pre-activation;
- ``sae_kind``: which activation rule an SAE applies, decided by its SAELens class.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from saeinverse.errors import CompatibilityError

if TYPE_CHECKING:
    from torch import Tensor

_BLOCK_HOOK = re.compile(r"^blocks\.(\d+)\.")


# ----------------------------------------------------------------------------- hook names


def hook_layer(hook_name: str) -> int:
    """The block index of a hook (``blocks.N.…`` -> N); -1 for embedding hooks before block 0.

    Raises ValueError for hooks after the last block (``ln_final.…``, ``unembed.…``), which need
    the full forward.
    """
    match = _BLOCK_HOOK.match(hook_name)
    if match:
        return int(match.group(1))
    if hook_name.startswith("hook_"):  # hook_embed, hook_pos_embed, hook_tokens
        return -1
    raise ValueError(f"Hook {hook_name!r} is not inside a transformer block.")


def stop_at_layer_for(hook_name: str) -> int | None:
    """The ``stop_at_layer`` that still runs ``hook_name`` (None: the whole forward)."""
    try:
        return hook_layer(hook_name) + 1
    except ValueError:
        return None


def resume_layer_for(hook_name: str) -> int | None:
    """The ``start_at_layer`` that continues a forward from ``hook_name``'s activations.

    Only the residual stream can be resumed from: ``blocks.N.hook_resid_pre`` -> N,
    ``blocks.N.hook_resid_post`` -> N + 1; None for any other hook.
    """
    match = re.fullmatch(r"blocks\.(\d+)\.hook_resid_(pre|post)", hook_name)
    if not match:
        return None
    return int(match.group(1)) + (1 if match.group(2) == "post" else 0)


def sae_hook_name(sae: Any) -> str:
    """The model hook an SAE reads."""
    metadata = getattr(sae.cfg, "metadata", None)
    name = getattr(metadata, "hook_name", None) or getattr(sae.cfg, "hook_name", None)
    if not name:
        raise CompatibilityError("The SAE records no hook name (sae.cfg.metadata.hook_name).")
    return str(name)


# ----------------------------------------------------------------------------- positions


def start_token_id(model: Any) -> int | None:
    """The token ``to_tokens`` prepends (the model's BOS / start token); None when it adds none."""
    tokenizer = getattr(model, "tokenizer", None)
    if tokenizer is None or not model.cfg.default_prepend_bos:
        return None
    bos = tokenizer.bos_token_id
    return None if bos is None else int(bos)


def first_readable_position(exclude_bos: bool) -> int:
    """The first position collection counts and inversion reads.

    Position 0 is skipped when ``exclude_bos`` is on, whether or not the model prepends a start
    token (without one, the first real word carries the attention sink); inversion puts the
    start token there when the model has one and otherwise reads from the first prompt token on,
    so both read exactly the positions collection counts.
    """
    return 1 if exclude_bos else 0


# ----------------------------------------------------------------------------- forward


def hook_activations(
    model: Any,
    tokens: Tensor,
    hook_name: str,
    hooks: Sequence[tuple[str, Any]] = (),
    **kwargs: Any,
) -> Tensor:
    """The activations at ``hook_name`` for ``tokens``, running the model only up to its block.

    ``[batch pos d_in]`` (``hook_z``: ``[batch pos heads d_head]``). ``hooks`` are extra
    ``(name, fn)`` forward hooks; ``kwargs`` go to ``run_with_hooks`` (e.g. a key/value cache).
    """
    captured: dict[str, Tensor] = {}

    def capture(act: Tensor, hook: Any) -> Tensor:
        captured["act"] = act
        return act

    model.run_with_hooks(
        tokens,
        fwd_hooks=[*hooks, (hook_name, capture)],
        stop_at_layer=stop_at_layer_for(hook_name),
        return_type=None,
        **kwargs,
    )
    if "act" not in captured:
        raise CompatibilityError(
            f"Hook {hook_name!r} exists in model {model.cfg.model_name!r} but does not fire with "
            "its current config (e.g. hook_attn_in needs cfg.use_attn_in)."
        )
    return captured["act"]


def sae_input(sae: Any, acts: Tensor) -> Tensor:
    """``acts`` in the SAE's dtype and device, ``hook_z`` heads flattened unless it reshapes."""
    if acts.ndim == 4 and not getattr(sae, "hook_z_reshaping_mode", False):
        acts = acts.flatten(2)
    parameter = next(sae.parameters())
    return acts.to(device=parameter.device, dtype=parameter.dtype)


def hook_width(model: Any, hook_name: str) -> int:
    """The width of one position's activation at ``hook_name`` (heads × d_head for ``hook_z``)."""
    import torch

    tokens = torch.zeros((1, 2), dtype=torch.long, device=model.cfg.device)
    with torch.inference_mode():
        acts = hook_activations(model, tokens, hook_name)
    return int(acts.shape[2:].numel())


# ----------------------------------------------------------------------------- encode


@dataclass
class Encoded:
    """One ``sae.encode`` with what decides firing (see ``sae_kind``)."""

    pre: Tensor
    """``[batch pos d_sae]``: the pre-activations the activation rule is applied to."""
    acts: Tensor
    """``[batch pos d_sae]``: the feature activations (``sae.encode``)."""
    gate_pre: Tensor | None = None
    """``[batch pos d_sae]``: a gated SAE's gate pre-activation (fires where > 0); else None."""


def encode(sae: Any, acts: Tensor) -> Tensor:
    """The feature activations of hook activations ``acts`` (``[batch pos d_sae]``)."""
    return sae.encode(sae_input(sae, acts))


def encode_with_pre(sae: Any, acts: Tensor) -> Encoded:
    """Feature activations plus the pre-activations (captured from ``hook_sae_acts_pre``)."""
    captured: dict[str, Tensor] = {}

    def keep(module: Any, args: Any, output: Tensor) -> None:
        captured["pre"] = output

    x = sae_input(sae, acts)
    handle = sae.hook_sae_acts_pre.register_forward_hook(keep)
    try:
        feature_acts = sae.encode(x)
    finally:
        handle.remove()
    pre = captured["pre"]
    if getattr(sae.cfg, "rescale_acts_by_decoder_norm", False):
        pre = pre * sae.W_dec.norm(dim=-1)
    gate_pre = None
    if sae_kind(sae) == "gated":
        gate_pre = sae.process_sae_in(x) @ sae.W_enc + sae.b_gate
    return Encoded(pre=pre, acts=feature_acts, gate_pre=gate_pre)


# ----------------------------------------------------------------------------- SAE kinds


def _kind_classes() -> list[tuple[tuple[type, ...], str]]:
    from sae_lens import saes

    def present(*names: str) -> tuple[type, ...]:
        return tuple(getattr(saes, n) for n in names if hasattr(saes, n))

    return [
        (present("TopKSAE", "TopKTrainingSAE", "BatchTopKTrainingSAE"), "topk"),
        (present("JumpReLUSAE", "JumpReLUTrainingSAE"), "jumprelu"),
        (present("GatedSAE", "GatedTrainingSAE"), "gated"),
        (present("StandardSAE", "StandardTrainingSAE"), "relu"),
    ]


SAE_KINDS = ("topk", "jumprelu", "gated", "relu")
"""What decides firing, per SAELens class:

- ``topk`` (TopKSAE): the feature is among the k largest pre-activations at its position;
- ``jumprelu`` (JumpReLUSAE): its pre-activation exceeds its threshold;
- ``gated`` (GatedSAE): its gate pre-activation is > 0 (the magnitude path gives the value);
- ``relu`` (StandardSAE): its pre-activation is > 0.
"""


def sae_kind(sae: Any) -> str:
    """Which activation rule ``sae`` applies, decided by its SAELens class (see ``SAE_KINDS``)."""
    for classes, kind in _kind_classes():
        if classes and isinstance(sae, classes):
            return kind
    raise CompatibilityError(
        f"SAE class {type(sae).__name__} is not supported; supported SAELens classes: "
        "TopKSAE, JumpReLUSAE, GatedSAE, StandardSAE (and their training variants)."
    )
