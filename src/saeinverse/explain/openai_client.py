"""A client for any OpenAI-compatible chat endpoint (``POST {base_url}/chat/completions``).

``base_url`` follows the OpenAI SDK convention: it ends with the API version, e.g.
``https://api.openai.com/v1`` or ``http://localhost:8000/v1``. The key is read from the
environment variable ``api_key_env`` at each request and sent as ``Authorization: Bearer``; it is
never stored, logged or put in an error message. Without the variable no header is sent (local
servers need none). Requests time out after ``timeout_s``; 429, 5xx, timeouts and refused or
dropped connections are retried ``max_retries`` times with exponential backoff (``backoff_s``,
doubled each time, or the server's ``Retry-After`` when it gives one, capped at 30 s); a refused
connection (nothing listening) is retried once; other errors fail at once. Every failure raises ``EndpointError`` saying what to check.
"""

from __future__ import annotations

import http.client
import json
import logging
import os
import socket
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from typing import Any

from saeinverse.errors import SaeInverseError

logger = logging.getLogger(__name__)

RETRY_STATUS = frozenset({408, 409, 429, 500, 502, 503, 504})
MAX_RETRY_AFTER_S = 30.0
REFUSED_RETRIES = 1
"""A refused connection (nothing listening) is retried once only: fail fast when it is down."""


class EndpointError(SaeInverseError):
    """The OpenAI-compatible endpoint is unreachable, refused the request or answered nonsense."""


class OpenAIChat:
    """Chat completions from an OpenAI-compatible endpoint, greedy (temperature 0)."""

    def __init__(
        self,
        base_url: str,
        model: str,
        api_key_env: str = "OPENAI_API_KEY",
        *,
        timeout_s: float = 30.0,
        max_retries: int = 3,
        backoff_s: float = 0.5,
    ):
        if not base_url:
            raise EndpointError(
                "the 'openai' explainer needs explanation.base_url "
                "(e.g. https://api.openai.com/v1 or http://localhost:8000/v1)"
            )
        if not model:
            raise EndpointError(
                "the 'openai' explainer needs explanation.api_model (the model name)"
            )
        url = base_url.rstrip("/")
        self.url = url if url.endswith("/chat/completions") else url + "/chat/completions"
        self.model, self.api_key_env = model, api_key_env
        self.timeout_s, self.max_retries, self.backoff_s = timeout_s, int(max_retries), backoff_s

    def __repr__(self) -> str:
        return f"OpenAIChat(url={self.url!r}, model={self.model!r}, key from ${self.api_key_env})"

    def complete_many(
        self, conversations: Sequence[list[dict[str, str]]], max_new_tokens: int
    ) -> list[str]:
        return [self.complete(c, max_new_tokens) for c in conversations]

    def complete(self, conversation: list[dict[str, str]], max_new_tokens: int) -> str:
        """The reply's text (``choices[0].message.content``), stripped."""
        body = {
            "model": self.model,
            "messages": list(conversation),
            "max_tokens": int(max_new_tokens),
            "temperature": 0,
        }
        return _reply_text(self._post(body), self.url)

    # ------------------------------------------------------------------ transport

    def _request(self, body: dict[str, Any]) -> urllib.request.Request:
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        key = os.environ.get(self.api_key_env) if self.api_key_env else None
        if key:
            headers["Authorization"] = f"Bearer {key}"
        data = json.dumps(body).encode()
        return urllib.request.Request(self.url, data=data, headers=headers, method="POST")

    def _post(self, body: dict[str, Any]) -> Any:
        """POST with retries; the decoded JSON answer."""
        last = ""
        for attempt in range(self.max_retries + 1):
            delay = self.backoff_s * 2**attempt
            try:
                with urllib.request.urlopen(self._request(body), timeout=self.timeout_s) as resp:
                    raw = resp.read()
                return _decode_json(raw, self.url)
            except urllib.error.HTTPError as err:
                detail = _snippet(err.read())
                if err.code not in RETRY_STATUS:
                    raise EndpointError(self._status_message(err.code, detail)) from err
                last = f"HTTP {err.code}: {detail}"
                delay = _retry_after(err.headers, delay)
            except (urllib.error.URLError, http.client.HTTPException, OSError) as err:
                reason = getattr(err, "reason", err)
                if isinstance(reason, socket.gaierror):
                    raise EndpointError(
                        f"cannot resolve the host of {self.url} ({reason}); check explanation.base_url"
                    ) from err
                last = f"{type(reason).__name__}: {reason}"
                if isinstance(reason, ConnectionRefusedError) and attempt >= REFUSED_RETRIES:
                    raise EndpointError(
                        f"nothing answers at {self.url} (connection refused, {attempt + 1} "
                        "attempts); start the server or fix explanation.base_url"
                    ) from err
            if attempt < self.max_retries:
                logger.warning(
                    "%s failed (%s); retry %d of %d in %.1f s",
                    self.url, last, attempt + 1, self.max_retries, delay,
                )  # fmt: skip
                time.sleep(delay)
        raise EndpointError(
            f"the OpenAI-compatible endpoint {self.url} failed after {self.max_retries + 1} "
            f"attempts ({last}); check that the server is running and explanation.base_url"
        )

    def _status_message(self, code: int, detail: str) -> str:
        hint = {
            401: f"the key in ${self.api_key_env} is missing or wrong",
            403: f"the key in ${self.api_key_env} may not use model {self.model!r}",
            404: "explanation.base_url usually ends with /v1, and explanation.api_model must exist there",
        }.get(code, "check explanation.base_url and explanation.api_model")
        return f"the endpoint {self.url} answered HTTP {code} ({detail}): {hint}"


def _decode_json(raw: bytes, url: str) -> Any:
    try:
        return json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise EndpointError(f"malformed response from {url}: not JSON ({_snippet(raw)})") from err


def _reply_text(answer: Any, url: str) -> str:
    """``choices[0].message.content`` of a chat completion, or ``EndpointError`` saying what is off."""
    try:
        content = answer["choices"][0]["message"]["content"]
    except (KeyError, IndexError, TypeError) as err:
        if isinstance(answer, dict) and "error" in answer:
            raise EndpointError(f"the endpoint {url} returned an error: {answer['error']}") from err
        raise EndpointError(
            f"malformed response from {url}: no choices[0].message.content in "
            f"{_snippet(json.dumps(answer).encode())}"
        ) from err
    if content is None:
        return ""
    if not isinstance(content, str):
        raise EndpointError(
            f"malformed response from {url}: message content is {type(content).__name__}"
        )
    return content.strip()


def _retry_after(headers, default: float) -> float:
    value = headers.get("Retry-After") if headers is not None else None
    try:
        return min(max(float(value), 0.0), MAX_RETRY_AFTER_S) if value is not None else default
    except ValueError:
        return default


def _snippet(raw: bytes, limit: int = 200) -> str:
    text = raw.decode("utf-8", "replace").strip().replace("\n", " ")
    return text if len(text) <= limit else text[:limit] + "…"
