"""Hugging Face Hub access: whether hub calls run offline, and switching it for a block.

A machine without network fails in seconds instead of retrying for half a minute: offline mode
follows HF_HUB_OFFLINE / TRANSFORMERS_OFFLINE when the user set them, else a quick TCP probe.
Models, SAEs, datasets and explanation LMs all load through this one module.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import socket
import threading
from collections.abc import Iterator

logger = logging.getLogger(__name__)

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
