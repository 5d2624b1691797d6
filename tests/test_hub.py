"""Hub access: offline mode from the environment or a probe, and a block that restores it."""

import os

from saeinverse import hub


def test_hub_mode_restores_state(monkeypatch):
    import huggingface_hub.constants as hub_constants

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    before = hub_constants.HF_HUB_OFFLINE
    with hub.hub_mode(offline=True):
        assert hub_constants.HF_HUB_OFFLINE is True
    assert hub_constants.HF_HUB_OFFLINE == before
    assert "HF_HUB_OFFLINE" not in os.environ


def test_unreachable_hub_means_offline(monkeypatch):
    for key in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HTTPS_PROXY", "https_proxy"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setattr(hub, "hub_reachable", lambda: False)
    assert hub.hub_should_be_offline() is True
    monkeypatch.setattr(hub, "hub_reachable", lambda: True)
    assert hub.hub_should_be_offline() is False


def test_explicit_env_decides_offline(monkeypatch):
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    assert hub.hub_should_be_offline() is False
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert hub.hub_should_be_offline() is True
