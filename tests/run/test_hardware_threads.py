"""``hardware.threads``: the torch CPU threads set where the models are loaded from the config."""

from __future__ import annotations

import pytest
import torch

from saeinverse.config import get_default_config, update_config
from saeinverse.models.from_config import load_experiment_models
from tests import builders


@pytest.fixture
def restore_threads():
    threads = torch.get_num_threads()
    yield threads
    torch.set_num_threads(threads)


def tiny_config(sae_path, threads):
    return update_config(
        get_default_config(),
        {
            "model": {"name": "tiny-char"},
            "sae": {"path": str(sae_path)},
            "hardware": {"device": "cpu", "threads": threads},
            "pipeline": {"run_explanations": False},
        },
    )


def test_hardware_threads_sets_torch_threads_when_models_load(tmp_path, restore_threads):
    builders.tiny_sae(k=4).save_model(tmp_path / "sae")
    torch.set_num_threads(1)
    model, sae, _, _ = load_experiment_models(tiny_config(tmp_path / "sae", 2))
    assert torch.get_num_threads() == 2
    assert sae.cfg.d_in == model.cfg.d_model
    load_experiment_models(tiny_config(tmp_path / "sae", 1))
    assert torch.get_num_threads() == 1
    torch.set_num_threads(2)
    load_experiment_models(tiny_config(tmp_path / "sae", None))  # None: left as it is
    assert torch.get_num_threads() == 2
