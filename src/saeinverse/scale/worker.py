"""A Ray worker: the config's model and SAE loaded once, running units on them.

``ModelsActor.run(fn, *args)`` is ``fn(models, *args)`` over its ``saeinverse.units.Models``:
the same unit functions the in-process pool runs, so the engine changes where work runs, not
what it computes. The explanation LM is loaded on the first unit that needs it.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from typing import Any

from saeinverse.config import Config


class ModelsActor:
    """One Ray worker process: ``config``'s model and SAE on its device, ``threads`` torch threads."""

    def __init__(self, config: Config, threads: int, env: Mapping[str, str]) -> None:
        import functools

        import torch

        os.environ.update(env)  # caches and hub mode, as the driver has them
        torch.set_num_threads(int(threads))
        from saeinverse.models.from_config import load_experiment_sae, load_lm, load_subject_model
        from saeinverse.units import Models

        model = load_subject_model(config)
        sae = load_experiment_sae(config, model)
        self.models = Models(model, sae, functools.partial(load_lm, device=config.hardware.device))

    def run(self, fn: Callable[..., Any], *args: Any) -> Any:
        return fn(self.models, *args)

    def ready(self) -> str:
        """Where this worker runs (for logs): host, pid and device."""
        import socket

        return f"{socket.gethostname()} pid {os.getpid()} on {self.models.model.cfg.device}"

    def cpu_seconds(self) -> float:
        """CPU time this worker process has used (benchmarks: cores actually obtained)."""
        import time

        return time.process_time()
