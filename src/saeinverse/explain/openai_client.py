"""Any OpenAI-compatible chat endpoint, through the official ``openai`` SDK.

``base_url`` follows the SDK's convention: it ends with the API version, e.g.
``https://api.openai.com/v1`` or ``http://127.0.0.1:8000/v1``. The key is read from the
environment variable ``api_key_env`` at each call and sent as ``Authorization: Bearer``; without
the variable no key is sent (local servers need none). The SDK times each request out after
``timeout_s`` and retries 408 / 409 / 429 / 5xx answers, timeouts and connection errors
``max_retries`` times with exponential backoff (0.5 s doubling, jittered, at most 8 s) or the
server's ``Retry-After``. Every failure raises ``EndpointError`` saying what to check.

The key never leaves this module in clear: it is not stored on the object, and every message
this module raises or logs has it replaced by ``***`` — an endpoint that echoes the request
(headers included) in its error body cannot put the key on a terminal or in a log.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from typing import Any

from saeinverse.errors import SaeInverseError

logger = logging.getLogger(__name__)

REDACTED = "***"
SNIPPET_CHARS = 200


class EndpointError(SaeInverseError):
    """The OpenAI-compatible endpoint is unreachable, refused the request or answered nonsense."""


def redact(text: str, secret: str | None) -> str:
    """``text`` with every occurrence of ``secret`` replaced by ***."""
    if not secret:
        return text
    return text.replace(secret, REDACTED)


class OpenAIChat:
    """Chat completions from an OpenAI-compatible endpoint, greedy (temperature 0)."""

    def __init__(
        self,
        base_url: str | None,
        model: str | None,
        api_key_env: str = "OPENAI_API_KEY",
        *,
        timeout_s: float = 30.0,
        max_retries: int = 3,
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
        self.base_url = url.removesuffix("/chat/completions")
        self.url = self.base_url + "/chat/completions"
        self.model, self.api_key_env = model, api_key_env
        self.timeout_s, self.max_retries = float(timeout_s), int(max_retries)

    def __repr__(self) -> str:
        return f"OpenAIChat(url={self.url!r}, model={self.model!r}, key from ${self.api_key_env})"

    def complete_many(
        self, conversations: Sequence[list[dict[str, str]]], max_new_tokens: int
    ) -> list[str]:
        client, key = self._client()
        with client:
            return [self._complete(client, key, c, max_new_tokens) for c in conversations]

    def complete(self, conversation: list[dict[str, str]], max_new_tokens: int) -> str:
        """The reply's text (``choices[0].message.content``), stripped."""
        return self.complete_many([conversation], max_new_tokens)[0]

    # ------------------------------------------------------------------ transport

    def _key(self) -> str | None:
        return (os.environ.get(self.api_key_env) or None) if self.api_key_env else None

    def _client(self) -> tuple[Any, str | None]:
        from openai import OpenAI

        key = self._key()
        client = OpenAI(
            base_url=self.base_url,
            api_key=key or "unused",  # no key: the request omits the header (below)
            timeout=self.timeout_s,
            max_retries=self.max_retries,
        )
        return client, key

    def _complete(
        self, client: Any, key: str | None, conversation: list[dict[str, str]], max_new: int
    ) -> str:
        import openai

        try:
            raw = client.chat.completions.with_raw_response.create(
                model=self.model,
                messages=list(conversation),
                max_tokens=int(max_new),
                temperature=0,
                extra_headers=None if key else {"Authorization": _omit()},
            )
        except openai.APIStatusError as err:
            detail = _snippet(redact(err.response.content.decode("utf-8", "replace"), key).encode())
            message = self._status_message(err.status_code, detail)
            raise EndpointError(redact(message, key)) from None
        except openai.APITimeoutError:
            raise EndpointError(
                f"the endpoint {self.url} timed out after {self.max_retries + 1} attempts of "
                f"{self.timeout_s:g} s; check that the server is running and explanation.request_timeout"
            ) from None
        except openai.APIConnectionError as err:
            cause = err.__cause__ or err
            raise EndpointError(
                redact(
                    f"nothing answers at {self.url} after {self.max_retries + 1} attempts "
                    f"({type(cause).__name__}: {cause}); start the server or fix explanation.base_url",
                    key,
                )
            ) from None
        content = redact(raw.http_response.content.decode("utf-8", "replace"), key)
        return _reply_text(_decode_json(content.encode(), self.url), self.url)

    def _status_message(self, code: int, detail: str) -> str:
        hint = {
            401: f"the key in ${self.api_key_env} is missing or wrong",
            403: f"the key in ${self.api_key_env} may not use model {self.model!r}",
            404: "explanation.base_url usually ends with /v1, and explanation.api_model must exist there",
        }.get(
            code, "check that the server is running, explanation.base_url and explanation.api_model"
        )
        retried = code in (408, 409, 429) or code >= 500
        tries = f" after {self.max_retries + 1} attempts" if retried else ""
        return f"the endpoint {self.url} answered HTTP {code}{tries} ({detail}): {hint}"


def _omit() -> Any:
    """The SDK's marker that drops a default header (no Authorization without a key)."""
    from openai import Omit

    return Omit()


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
            error = _snippet(json.dumps(answer["error"]).encode())
            raise EndpointError(f"the endpoint {url} returned an error: {error}") from err
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


def _snippet(raw: bytes, limit: int = SNIPPET_CHARS) -> str:
    text = raw.decode("utf-8", "replace").strip().replace("\n", " ")
    return text if len(text) <= limit else text[:limit] + "…"
