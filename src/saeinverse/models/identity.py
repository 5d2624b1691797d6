"""The one identity of a subject model and its SAE, used by every stage hash, unit plan and cache.

``models_identity`` digests each model's name, the SAE's hook and a weights fingerprint of both
(``weights_fingerprint``: name, shape and a strided sample of every parameter), plus the dtype
and the device type the model runs on: two loads of the same weights on the same kind of device
have the same identity, whatever config named them; retrained or other weights never do.
"""

from __future__ import annotations

from typing import Any

from saeinverse.io import digest
from saeinverse.models.weights import weights_fingerprint


def models_identity(model: Any, sae: Any) -> str:
    """The identity of ``model`` and ``sae`` (see the module docstring)."""
    device = str(getattr(model.cfg, "device", "cpu")).split(":")[0]
    return digest(
        [str(model.cfg.model_name), weights_fingerprint(model)],
        [str(sae.cfg.metadata.hook_name), weights_fingerprint(sae)],
        str(getattr(model.cfg, "dtype", "")),
        device,
    )
