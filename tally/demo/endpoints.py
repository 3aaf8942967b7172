"""The demo upstream's Responses API and embeddings (see :mod:`tally.demo.upstream`): answers in
OpenAI's shapes, with usage and cost, so every endpoint of Tally can be tried without an
account. A Responses stream is typed events ending with ``response.completed``."""

from __future__ import annotations

import hashlib
import json
import secrets
import struct
import time
from collections.abc import Iterator
from typing import Any

from tally.demo.answers import COMPLETION_PRICE, PROMPT_PRICE, answer, json_answer, text_of

EMBEDDING_DIMENSIONS = 8


def respond(path: str, body: Any, token_delay: float):
    """Answer ``POST /responses`` or ``POST /embeddings``."""
    if not isinstance(body, dict) or not isinstance(body.get("model"), str):
        return _invalid("model is required.")
    if path == "/embeddings":
        return _embeddings(body)
    return _responses(body, token_delay)


def _responses(body: dict, token_delay: float):
    said = _input_text(body.get("input"))
    pieces = _pieces(answer(said, body))
    prompt_tokens = max(1, len(said.split()) + 3)
    usage = {
        "input_tokens": prompt_tokens,
        "input_tokens_details": {"cached_tokens": 0},
        "output_tokens": len(pieces),
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": prompt_tokens + len(pieces),
        "cost": round(prompt_tokens * PROMPT_PRICE + len(pieces) * COMPLETION_PRICE, 10),
    }
    response_id = "resp_demo_" + secrets.token_hex(12)
    base = {
        "id": response_id,
        "object": "response",
        "created_at": int(time.time()),
        "model": body["model"],
        "error": None,
        "incomplete_details": None,
    }
    message = {
        "id": "msg_" + response_id[5:],
        "type": "message",
        "status": "completed",
        "role": "assistant",
        "content": [{"type": "output_text", "text": "".join(pieces), "annotations": []}],
    }
    done = {**base, "status": "completed", "output": [message], "usage": usage}
    if not body.get("stream"):
        return json_answer(200, done)
    headers = {"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
    return 200, headers, _stream(base, message, done, pieces, token_delay)


def _stream(base, message, done, pieces, delay) -> Iterator[bytes]:
    started = {**base, "status": "in_progress", "output": [], "usage": None}
    item = {"item_id": message["id"], "output_index": 0, "content_index": 0}
    opened = {**message, "status": "in_progress", "content": []}
    events: list[tuple[str, dict]] = [
        ("response.created", {"response": started}),
        ("response.in_progress", {"response": started}),
        ("response.output_item.added", {"output_index": 0, "item": opened}),
        ("response.content_part.added", {**item, "part": {"type": "output_text", "text": ""}}),
    ]
    sequence = 0
    for kind, fields in events:
        yield _event(kind, sequence, fields)
        sequence += 1
    for piece in pieces:
        if delay:
            time.sleep(delay)
        yield _event("response.output_text.delta", sequence, {**item, "delta": piece})
        sequence += 1
    text = "".join(pieces)
    for kind, fields in (
        ("response.output_text.done", {**item, "text": text}),
        ("response.output_item.done", {"output_index": 0, "item": message}),
        ("response.completed", {"response": done}),
    ):
        yield _event(kind, sequence, fields)
        sequence += 1


def _embeddings(body: dict):
    value = body.get("input")
    inputs = value if isinstance(value, list) else [value]
    data = [
        {"object": "embedding", "index": i, "embedding": _vector(item)}
        for i, item in enumerate(inputs)
    ]
    tokens = sum(len(str(item).split()) or 1 for item in inputs)
    usage = {
        "prompt_tokens": tokens,
        "total_tokens": tokens,
        "cost": round(tokens * PROMPT_PRICE, 10),
    }
    return json_answer(
        200, {"object": "list", "data": data, "model": body["model"], "usage": usage}
    )


def _vector(item: Any) -> list[float]:
    """A stable pseudo-embedding: the same text always gets the same vector."""
    digest = hashlib.sha256(json.dumps(item).encode()).digest()
    return [
        round(struct.unpack_from(">h", digest, 2 * i)[0] / 32768, 6)
        for i in range(EMBEDDING_DIMENSIONS)
    ]


def _input_text(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, list) and value:
        return text_of(value[-1])
    return ""


def _pieces(text: str) -> list[str]:
    words = text.split(" ")
    return [w if i == 0 else " " + w for i, w in enumerate(words)]


def _event(kind: str, sequence: int, fields: dict) -> bytes:
    data = json.dumps({"type": kind, "sequence_number": sequence, **fields})
    return f"event: {kind}\ndata: {data}\n\n".encode()


def _invalid(message: str):
    error = {"message": message, "type": "invalid_request_error", "param": None, "code": None}
    return json_answer(400, {"error": error})
