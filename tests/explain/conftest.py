"""Fixtures for the explanation tests: a fake OpenAI-compatible server on loopback, a tiny corpus."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
import torch

Reply = tuple[int, dict[str, str], bytes]
"""(status, headers, body) the fake server answers with."""


def completion(text: str) -> Reply:
    body = {
        "id": "x",
        "object": "chat.completion",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text}}],
    }
    return 200, {"Content-Type": "application/json"}, json.dumps(body).encode()


@dataclass
class FakeOpenAI:
    """Records every request; answers from ``script`` (a queue) first, then with ``respond``."""

    url: str = ""
    requests: list[dict[str, Any]] = field(default_factory=list)
    script: list[Reply] = field(default_factory=list)
    respond: Callable[[dict[str, Any]], Reply] = lambda body: completion("yes")

    def bodies(self) -> list[dict[str, Any]]:
        return [r["body"] for r in self.requests]


@pytest.fixture
def fake_openai():
    server_state = FakeOpenAI()
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802 - http.server's name
            raw = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            try:
                body = json.loads(raw)
            except json.JSONDecodeError:
                body = None
            with lock:
                server_state.requests.append(
                    {
                        "path": self.path,
                        "headers": {k.title(): v for k, v in self.headers.items()},
                        "body": body,
                    }
                )
                reply = server_state.script.pop(0) if server_state.script else None
            status, headers, payload = reply or server_state.respond(body)
            self.send_response(status)
            for key, value in headers.items():
                self.send_header(key, value)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, args=(0.02,), daemon=True)
    thread.start()
    server_state.url = f"http://127.0.0.1:{server.server_address[1]}/v1"
    try:
        yield server_state
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


@pytest.fixture(autouse=True, scope="package")
def one_thread():
    """Tiny models run fastest on one thread."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


LETTERS = "abcdefghijklmnopqrstuvwxyz"


def random_prompts(n: int, seed: int = 0, length: int = 40) -> list[str]:
    """Random lowercase words: no 10-character run repeats across prompts in practice."""
    gen = torch.Generator().manual_seed(seed)
    prompts = []
    for _ in range(n):
        chars = [LETTERS[int(i)] for i in torch.randint(0, 26, (length,), generator=gen)]
        for pos in range(5, length, 6):
            chars[pos] = " "
        prompts.append("".join(chars))
    return prompts


@pytest.fixture(scope="package")
def tiny_stats(tiny_model, tiny_sae):
    """Collection statistics of the tiny model and SAE over 80 random prompts."""
    from saeinverse.collect.activations import collect_activations
    from saeinverse.config import get_default_config

    return collect_activations(
        tiny_model, tiny_sae, random_prompts(80), get_default_config().data, progress=False
    )
