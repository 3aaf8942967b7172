"""The built-in demo upstream: an OpenAI-compatible endpoint that calls no model.

It is used only when ``TALLY_UPSTREAM_URL`` is unset, so a fresh install answers
without any account. It behaves like OpenRouter where that matters to Tally: SSE
comments while "thinking", usage with ``cost``, a generation id, and a usage-only
chunk when ``stream_options.include_usage`` is set. Its answers say plainly that they
come from the demo, and repeat the upstream identifier Tally attached, so a newcomer
can see the tracking at work.

Tally's upstream client reaches it in-process through :class:`DemoAdapter` (no
loopback hop, no worker waiting on another worker); ``/demo/v1/...`` serves the same
answers over HTTP for anyone who wants to call it directly.
"""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import requests
from requests.adapters import BaseAdapter
from requests.structures import CaseInsensitiveDict

MODELS = ("tally/demo-echo", "tally/demo-mini")
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
        from tally import demo_endpoints  # the Responses API and embeddings

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


class _ChunkStream:
    """Just enough of urllib3's response for ``requests`` to stream from an iterator."""

    def __init__(self, chunks: Iterator[bytes]):
        self._chunks = chunks

    def stream(self, chunk_size=None, decode_content=True):
        yield from self._chunks

    def read(self, amt=None, **_):
        return b"".join(self._chunks)

    def close(self):
        close = getattr(self._chunks, "close", None)
        if close:
            close()

    def release_conn(self):
        self.close()


class DemoAdapter(BaseAdapter):
    """A requests transport that answers from :func:`respond` without a socket."""

    def __init__(self, token_delay: float = 0.03):
        super().__init__()
        self.token_delay = token_delay

    def send(self, request, stream=False, timeout=None, verify=True, cert=None, proxies=None):
        """Answer ``request`` from the demo."""
        path = urlsplit(request.url).path.removeprefix("/v1")
        try:
            body = json.loads(request.body) if request.body else None
        except ValueError:
            body = None
        status, headers, chunks = respond(request.method, path, body, self.token_delay)
        response = requests.Response()
        response.status_code = status
        response.reason = "OK" if status < 400 else "Error"
        response.headers = CaseInsensitiveDict(headers)
        response.raw = _ChunkStream(chunks)
        response.url = request.url
        response.request = request
        response.encoding = "utf-8"
        response.connection = self
        return response

    def close(self):
        """Nothing to release."""
