"""The `openai` explainer and scorer end to end against a real OpenAI-compatible server:
llama-cpp-python's server on 127.0.0.1, serving the embedded SmolLM2-135M-Instruct GGUF.

Skipped where `llama-cpp-python[server]` is not installed (it builds from source: ~18 min on
2 busy cores, so CI keeps the fake server of `conftest.py`; see the README).
"""

from __future__ import annotations

import socket
import subprocess
import sys
import time
import urllib.request

import pytest

pytest.importorskip("llama_cpp.server")
pytestmark = pytest.mark.slow

MODEL_ALIAS = "smollm2-gguf"


@pytest.fixture(scope="module")
def llama_server(tmp_path_factory):
    from saeinverse.models.paths import gguf_path

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    command = [
        sys.executable, "-m", "llama_cpp.server", "--model", str(gguf_path()),
        "--host", "127.0.0.1", "--port", str(port), "--n_ctx", "2048", "--n_threads", "2",
        "--model_alias", MODEL_ALIAS, "--seed", "0",
    ]  # fmt: skip
    log = tmp_path_factory.mktemp("llama") / "server.log"  # a file: a full pipe would block it
    handle = log.open("wb")
    server = subprocess.Popen(command, stdout=handle, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/v1"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                with urllib.request.urlopen(f"{url}/models", timeout=2) as reply:
                    if reply.status == 200:
                        break
            except OSError:
                if server.poll() is not None or time.monotonic() > deadline:
                    err = log.read_text(errors="replace")[-2000:]
                    pytest.fail(f"llama-cpp server did not start: {err}")
                time.sleep(0.5)
        yield url
    finally:
        server.terminate()
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()
        handle.close()


def test_the_sdk_client_talks_to_a_real_server(llama_server, monkeypatch):
    from saeinverse.explain.openai_client import OpenAIChat

    monkeypatch.setenv("SAEINVERSE_TEST_KEY", "sk-local-unused")
    chat = OpenAIChat(llama_server, MODEL_ALIAS, "SAEINVERSE_TEST_KEY", timeout_s=120)
    question = [{"role": "user", "content": "Is water wet? Answer yes or no."}]
    replies = chat.complete_many([question, question], max_new_tokens=4)
    assert replies[0] and replies[0] == replies[1]  # temperature 0: the same reply twice


def test_openai_explainer_and_scorer_end_to_end(llama_server):
    from saeinverse.explain import generate_explanations
    from tests.explain.planted import planted_model_and_sae, planted_stats

    model, sae = planted_model_and_sae()
    stats = planted_stats(model, sae)
    settings = {
        "explainer": "openai", "base_url": llama_server, "api_model": MODEL_ALIAS,
        "n_heldout": 3, "heldout_prompts": 0, "judge": False, "max_new_tokens": 24,
        "request_timeout": 120,
    }  # fmt: skip
    results = generate_explanations(model, sae, [0, 1], None, None, settings, stats=stats)
    for r in results:
        assert r.explainer == r.scorer == "openai" and r.explanation
        record = r.scores["detection"]
        assert record["n_positive"] == 3 and record["n_negative"] == 3
        assert 0.0 <= r.detection <= 1.0 and record["low"] <= r.detection <= record["high"]
        assert r.verdict in ("beats", "undecided", "worse")
