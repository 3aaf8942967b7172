"""The built-in demo upstream: an OpenAI-compatible endpoint that calls no model.

It is used only when ``TALLY_UPSTREAM_URL`` is unset, so a fresh install answers
without any account. It behaves like OpenRouter where that matters to Tally: SSE
comments while "thinking", usage with ``cost``, a generation id, and a usage-only
chunk when ``stream_options.include_usage`` is set. Its answers say plainly that they
come from the demo, and repeat the upstream identifier Tally attached, so a newcomer
can see the tracking at work.

Tally's upstream client reaches it in-process through :class:`DemoPool` (no loopback
hop, no worker waiting on another worker), whose answers are real urllib3 responses,
so the client's reading and streaming code is the production one; ``/demo/v1/...``
serves the same answers over HTTP for anyone who wants to call it directly.
"""

from __future__ import annotations

import io
import json
import secrets
import time
from collections.abc import Iterator
from http import HTTPStatus
from typing import Any

from urllib3 import HTTPResponse

BASE_URL = "http://demo-upstream.tally.invalid/v1"
BASE_PATH = "/v1"
MODELS = ("tally/demo/upstream-echo", "tally/demo/upstream-mini")
PROMPT_PRICE = 0.5 / 1_000_000  # dollars per token, like a small hosted model
COMPLETION_PRICE = 1.5 / 1_000_000
CREATED = 1735689600


def respond(
    method: str, path: str, body: Any, token_delay: float = 0.03
) -> tuple[int, dict[str, str], Iterator[bytes]]:
    """Answer one demo request: status, headers and the body as an iterator of bytes."""
    if method == "GET" and path == "/models":
        data = [
            {"id": m, "object": "model", "created": CREATED, "owned_by": "tally-demo"}
            for m in MODELS
        ]
        return json_answer(200, {"object": "list", "data": data})
    if method == "POST" and path == "/chat/completions":
        problem = _check(body)
        if problem:
            return json_answer(
                400,
                {
                    "error": {
                        "message": problem,
                        "type": "invalid_request_error",
                        "param": None,
                        "code": None,
                    }
                },
            )
        return _chat(body, token_delay)
    if method == "POST" and path in ("/responses", "/embeddings"):
        from tally.demo import endpoints as demo_endpoints  # the Responses API and embeddings

        return demo_endpoints.respond(path, body, token_delay)
    return json_answer(
        404,
        {
            "error": {
                "message": f"The demo upstream has no {method} {path}.",
                "type": "invalid_request_error",
                "param": None,
                "code": None,
            }
        },
    )


def _check(body: Any) -> str | None:
    if not isinstance(body, dict):
        return "The request body must be a JSON object."
    if not isinstance(body.get("model"), str):
        return "model is required."
    if not isinstance(body.get("messages"), list) or not body["messages"]:
        return "messages must be a non-empty list."
    return None


def _chat(body: dict, token_delay: float):
    generation_id = "gen-demo-" + secrets.token_hex(12)
    words = answer(text_of(body["messages"][-1]), body).split(" ")
    pieces = [w if i == 0 else " " + w for i, w in enumerate(words)]
    prompt_tokens = max(1, sum(len(text_of(m).split()) + 3 for m in body["messages"]))
    usage = {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": len(pieces),
        "total_tokens": prompt_tokens + len(pieces),
        "cost": round(prompt_tokens * PROMPT_PRICE + len(pieces) * COMPLETION_PRICE, 10),
    }
    headers = {"X-Generation-Id": generation_id}
    base = {"id": generation_id, "created": int(time.time()), "model": body["model"]}
    if not body.get("stream"):
        message = {"role": "assistant", "content": "".join(pieces)}
        choice = {"index": 0, "message": message, "finish_reason": "stop"}
        return json_answer(
            200, {**base, "object": "chat.completion", "choices": [choice], "usage": usage}, headers
        )
    include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
    headers["Content-Type"] = "text/event-stream"
    headers["Cache-Control"] = "no-cache"
    return 200, headers, _stream(base, pieces, usage if include_usage else None, token_delay)


def _stream(base: dict, pieces: list[str], usage: dict | None, delay: float) -> Iterator[bytes]:
    chunk = {**base, "object": "chat.completion.chunk"}

    def event(choices: list, **extra) -> bytes:
        return b"data: " + json.dumps({**chunk, "choices": choices, **extra}).encode() + b"\n\n"

    yield b": TALLY DEMO PROCESSING\n\n"
    yield event(
        [{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}]
    )
    for piece in pieces:
        if delay:
            time.sleep(delay)
        yield event([{"index": 0, "delta": {"content": piece}, "finish_reason": None}])
    yield event([{"index": 0, "delta": {}, "finish_reason": "stop"}])
    if usage is not None:
        yield event([], usage=usage)
    yield b"data: [DONE]\n\n"


def answer(said: str, body: dict) -> str:
    """The demo's reply to ``said``: it names the upstream identifier Tally attached."""
    said = " ".join(said.split())
    if len(said) > 200:
        said = said[:200] + "…"
    identity = body.get("identity")
    upstream_id = (
        identity.get("id")
        if isinstance(identity, dict)
        else body.get("safety_identifier") or body.get("user")
    )
    seen = (
        f"Tally attached the upstream identifier {upstream_id}."
        if upstream_id
        else ("No upstream identifier was attached.")
    )
    return (
        f"Hello from Tally's demo upstream: no model was called. {seen} "
        f"You said: {said or '(nothing)'}"
    )


def text_of(message: Any) -> str:
    """The text of a chat message or a Responses API input item."""
    content = message.get("content") if isinstance(message, dict) else None
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(p.get("text", "") for p in content if isinstance(p, dict))
    return ""


def json_answer(status: int, payload: dict, headers: dict | None = None):
    """A whole JSON answer as :func:`respond` returns it."""
    data = json.dumps(payload).encode()
    return status, {**(headers or {}), "Content-Type": "application/json"}, iter([data])


class DemoPool:
    """Stands in for urllib3's connection pool when no upstream is configured: answers
    from :func:`respond` with a real ``urllib3.HTTPResponse`` over the demo's pieces, so
    Tally's upstream client reads the demo exactly as it reads a real upstream."""

    def __init__(self, token_delay: float = 0.03):
        self.token_delay = token_delay

    def urlopen(
        self,
        method: str,
        url: str,
        body: bytes | None = None,
        preload_content: bool = True,
        decode_content: bool = True,
        **_: Any,
    ) -> HTTPResponse:
        """Answer one request; ``url`` is a path under :data:`BASE_URL`'s."""
        try:
            payload = json.loads(body) if body else None
        except ValueError:
            payload = None
        path = url.removeprefix(BASE_PATH)
        status, headers, pieces = respond(method, path, payload, self.token_delay)
        return HTTPResponse(
            body=_Pieces(pieces),
            headers=headers,
            status=status,
            reason=HTTPStatus(status).phrase,
            preload_content=preload_content,
            decode_content=decode_content,
            request_method=method,
            request_url=BASE_URL.removesuffix(BASE_PATH) + url,
        )


class _Pieces(io.RawIOBase):
    """The demo's body as a file: ``read1`` hands over the next piece the moment the
    demo makes it (after its token delay), ``read`` all of them."""

    def __init__(self, pieces: Iterator[bytes]):
        self._pieces = pieces
        self._left = b""

    def readable(self) -> bool:
        """A body is read, never written."""
        return True

    def read1(self, size: int = -1) -> bytes:
        """The rest of the current piece, or the next one; b"" at the end."""
        data = self._left or next(self._pieces, b"")
        if 0 <= size < len(data):
            data, self._left = data[:size], data[size:]
        else:
            self._left = b""
        return data

    def readinto(self, buffer) -> int:
        """As :meth:`read1`, into ``buffer``."""
        data = self.read1(len(buffer))
        buffer[: len(data)] = data
        return len(data)

    def readall(self) -> bytes:
        """Every piece left, joined."""
        data = self._left + b"".join(self._pieces)
        self._left = b""
        return data

    def close(self) -> None:
        """Stop the demo's generator (a client that went away mid-stream)."""
        close = getattr(self._pieces, "close", None)
        if close is not None:
            close()
        super().close()
