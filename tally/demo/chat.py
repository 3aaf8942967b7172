"""The demo upstream's Chat Completions (see tally.demo.upstream): a whole answer, or an
OpenRouter-like stream (a comment while "thinking", a usage-only chunk when
``stream_options.include_usage`` is set, then ``[DONE]``)."""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Iterator
from typing import Any

from tally.demo.answers import COMPLETION_PRICE, PROMPT_PRICE, answer, json_answer, text_of


def problem(body: Any) -> str | None:
    """What is wrong with a chat request body (None: nothing)."""
    if not isinstance(body, dict):
        return "The request body must be a JSON object."
    if not isinstance(body.get("model"), str):
        return "model is required."
    if not isinstance(body.get("messages"), list) or not body["messages"]:
        return "messages must be a non-empty list."
    return None


def respond(body: dict, token_delay: float):
    """Answer ``POST /chat/completions`` for a body :func:`problem` found nothing wrong with."""
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
