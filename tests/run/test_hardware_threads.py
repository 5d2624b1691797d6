"""``hardware.threads``: the torch CPU threads set where the models are loaded from the config."""

from __future__ import annotations

import pytest
import torch

from saeinverse.models.from_config import load_experiment_models
from tests import builders


@pytest.fixture
def restore_threads():
    threads = torch.get_num_threads()
    yield threads
    torch.set_num_threads(threads)


def tiny_config(threads):
    return builders.tiny_config(
        hardware={"device": "cpu", "threads": threads}, pipeline={"run_explanations": False}
    )


def test_hardware_threads_sets_torch_threads_when_models_load(restore_threads):
    torch.set_num_threads(1)
    model, sae, _, _ = load_experiment_models(tiny_config(2))
    assert torch.get_num_threads() == 2
    assert sae.cfg.d_in == model.cfg.d_model
    load_experiment_models(tiny_config(1))
    assert torch.get_num_threads() == 1
    torch.set_num_threads(2)
    load_experiment_models(tiny_config(None))  # None: left as it is
    assert torch.get_num_threads() == 2
