"""The OpenAI-compatible client (the openai SDK) against an HTTP server on loopback."""

from __future__ import annotations

import socket
import time

import pytest

from saeinverse.explain.openai_client import EndpointError, OpenAIChat
from tests.explain.conftest import completion

KEY_ENV = "SAEINVERSE_TEST_KEY"
MESSAGES = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Say hi."}]


def client(url: str, **kwargs) -> OpenAIChat:
    kwargs = {"timeout_s": 5.0, "max_retries": 3, **kwargs}
    return OpenAIChat(url, "test-model", KEY_ENV, **kwargs)


def test_request_shape_and_key_from_the_environment(fake_openai, monkeypatch):
    monkeypatch.setenv(KEY_ENV, "sk-secret-123")
    fake_openai.script = [completion("  Hello there.  ")]
    assert client(fake_openai.url).complete(MESSAGES, max_new_tokens=7) == "Hello there."
    (request,) = fake_openai.requests
    assert request["path"] == "/v1/chat/completions"
    assert request["headers"]["Authorization"] == "Bearer sk-secret-123"
    assert request["headers"]["Content-Type"] == "application/json"
    assert request["body"] == {
        "model": "test-model",
        "messages": MESSAGES,
        "max_tokens": 7,
        "temperature": 0,
    }


def test_no_key_no_header_and_the_key_never_shows(fake_openai, monkeypatch):
    monkeypatch.delenv(KEY_ENV, raising=False)
    chat = client(fake_openai.url)
    chat.complete(MESSAGES, 5)
    assert "Authorization" not in fake_openai.requests[0]["headers"]
    monkeypatch.setenv(KEY_ENV, "sk-secret-123")
    assert "sk-secret" not in repr(chat) and "sk-secret" not in str(vars(chat))


def test_server_errors_are_retried_then_succeed(fake_openai):
    fake_openai.script = [
        (500, {}, b"boom"),
        (503, {}, b"busy"),
        completion("third time"),
    ]
    assert client(fake_openai.url).complete(MESSAGES, 5) == "third time"
    assert len(fake_openai.requests) == 3


def test_rate_limit_honours_retry_after(fake_openai):
    fake_openai.script = [(429, {"Retry-After": "0.2"}, b"slow down"), completion("ok")]
    start = time.perf_counter()
    assert client(fake_openai.url).complete(MESSAGES, 5) == "ok"
    assert time.perf_counter() - start >= 0.2


def test_persistent_server_errors_give_a_clear_error(fake_openai):
    fake_openai.respond = lambda body: (502, {}, b"bad gateway")
    with pytest.raises(EndpointError, match=r"HTTP 502 after 3 attempts \(bad gateway\)"):
        client(fake_openai.url, max_retries=2).complete(MESSAGES, 5)
    assert len(fake_openai.requests) == 3


def test_auth_failure_is_not_retried_and_names_the_variable(fake_openai):
    fake_openai.respond = lambda body: (401, {}, b'{"error": "invalid key"}')
    with pytest.raises(EndpointError, match=rf"HTTP 401.*\${KEY_ENV}"):
        client(fake_openai.url).complete(MESSAGES, 5)
    assert len(fake_openai.requests) == 1


@pytest.mark.parametrize(
    ("reply", "message"),
    [
        ((200, {}, b"<html>not json</html>"), "not JSON"),
        ((200, {}, b'{"choices": []}'), r"no choices\[0\].message.content"),
        ((200, {}, b'{"object": "list"}'), r"no choices\[0\].message.content"),
        ((200, {}, b'{"error": {"message": "model overloaded"}}'), "model overloaded"),
        ((200, {}, b'{"choices": [{"message": {"content": 42}}]}'), "content is int"),
    ],
)
def test_malformed_responses_give_clear_errors(fake_openai, reply, message):
    fake_openai.script = [reply]
    with pytest.raises(EndpointError, match="malformed response|returned an error") as err:
        client(fake_openai.url).complete(MESSAGES, 5)
    assert err.match(message)


def test_unreachable_endpoint_gives_a_clear_error():
    with socket.socket() as sock:  # a port that was free a moment ago: nothing listens there
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    start = time.perf_counter()
    with pytest.raises(
        EndpointError, match="nothing answers at .* 2 attempts.*explanation.base_url"
    ):
        OpenAIChat(f"http://127.0.0.1:{port}/v1", "m", KEY_ENV, max_retries=1).complete(MESSAGES, 5)
    assert time.perf_counter() - start < 5.0


def test_a_silent_server_times_out(monkeypatch):
    with socket.socket() as sock:  # accepts connections (backlog) but never answers
        sock.bind(("127.0.0.1", 0))
        sock.listen(8)
        url = f"http://127.0.0.1:{sock.getsockname()[1]}/v1"
        with pytest.raises(EndpointError, match="timed out after 2 attempts"):
            client(url, timeout_s=0.2, max_retries=1).complete(MESSAGES, 5)


def test_missing_settings_are_named():
    with pytest.raises(EndpointError, match="explanation.base_url"):
        OpenAIChat(None, "m")
    with pytest.raises(EndpointError, match="explanation.api_model"):
        OpenAIChat("http://127.0.0.1:1/v1", None)


def test_a_server_echoing_the_key_never_puts_it_in_errors_logs_or_replies(
    fake_openai, monkeypatch, caplog, capsys
):
    import logging

    secret = "sk-live-0123456789abcdef"
    monkeypatch.setenv(KEY_ENV, secret)

    def echo(status):
        def respond(body):
            request = fake_openai.requests[-1]
            echoed = f"bad request; you sent Authorization: {request['headers']['Authorization']}"
            payload = {"error": echoed} if status == 200 else echoed
            return (
                status,
                {},
                (
                    payload if isinstance(payload, str) else __import__("json").dumps(payload)
                ).encode(),
            )

        return respond

    caplog.set_level(logging.DEBUG)
    for status in (400, 503, 200):
        fake_openai.respond = echo(status)
        with pytest.raises(EndpointError) as err:
            client(fake_openai.url, max_retries=1).complete(MESSAGES, 5)
        assert "Bearer ***" in str(err.value)  # the echo is there, the key is not
        assert secret not in str(err.value) and secret[:12] not in str(err.value)
    fake_openai.respond = lambda body: completion(f"Here is your key: {secret}")
    assert client(fake_openai.url).complete(MESSAGES, 5) == "Here is your key: ***"
    captured = capsys.readouterr()
    assert secret not in caplog.text + captured.out + captured.err
    assert all(r["headers"]["Authorization"] == f"Bearer {secret}" for r in fake_openai.requests)
