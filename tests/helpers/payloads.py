"""What the fake upstream answers, as OpenRouter and OpenAI send it: chat completions,
their streaming chunks, SSE bytes, Responses API objects and typed events, embeddings."""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Pause:
    """An item among a script's events: the fake upstream goes quiet this long."""

    seconds: float


def completion(content: str = "Hello!", usage: dict | None = None, **extra) -> dict:
    """A non-streaming chat completion as OpenRouter returns it."""
    return {
        "id": "gen-fake-1",
        "object": "chat.completion",
        "created": 1735689600,
        "model": "openai/gpt-4o-mini",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": content},
                "finish_reason": "stop",
            }
        ],
        "usage": usage
        if usage is not None
        else {"prompt_tokens": 12, "completion_tokens": 3, "total_tokens": 15, "cost": 0.00042},
        **extra,
    }


def chunks(words: list[str], usage: dict | None = None, gen_id: str = "gen-fake-2") -> list:
    """Streaming chunks for ``words``, a finish chunk, then a usage-only chunk."""
    base = {
        "id": gen_id,
        "object": "chat.completion.chunk",
        "created": 1735689600,
        "model": "openai/gpt-4o-mini",
    }
    out: list[Any] = [
        {
            **base,
            "choices": [
                {"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}
            ],
        }
    ]
    out += [
        {**base, "choices": [{"index": 0, "delta": {"content": w}, "finish_reason": None}]}
        for w in words
    ]
    out.append({**base, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
    if usage is not False:
        out.append(
            {
                **base,
                "choices": [],
                "usage": usage
                or {
                    "prompt_tokens": 9,
                    "completion_tokens": len(words),
                    "total_tokens": 9 + len(words),
                    "cost": 0.0007,
                },
            }
        )
    return out


def sse(events: list[Any], done: bool = True) -> bytes:
    """The exact bytes of ``events`` as an SSE stream."""
    out = b"".join(sse_event(e) for e in events if not isinstance(e, threading.Event | Pause))
    return out + (b"data: [DONE]\n\n" if done else b"")


def sse_event(item: Any) -> bytes:
    """One event's bytes: a dict as ``data: <json>``, bytes as they are."""
    if isinstance(item, bytes):
        return item
    return b"data: " + json.dumps(item).encode() + b"\n\n"


# --- the Responses API and embeddings -----------------------------------------------

RESPONSE_USAGE = {
    "input_tokens": 11,
    "input_tokens_details": {"cached_tokens": 4},
    "output_tokens": 2,
    "output_tokens_details": {"reasoning_tokens": 0},
    "total_tokens": 13,
    "cost": 0.00031,
}


def response_object(text: str = "Hello!", status: str = "completed", **extra) -> dict:
    """A whole Responses API answer, as OpenAI (and OpenRouter) return it."""
    message = {
        "id": "msg_fake_1",
        "type": "message",
        "status": "completed",
        "role": "assistant",
        "content": [{"type": "output_text", "text": text, "annotations": []}],
    }
    return {
        "id": "resp_fake_1",
        "object": "response",
        "created_at": 1735689600,
        "status": status,
        "error": None,
        "incomplete_details": None,
        "model": "openai/gpt-4o-mini",
        "output": [message] if text else [],
        "usage": RESPONSE_USAGE,
        **extra,
    }


def typed(kind: str, **fields) -> bytes:
    """One typed Responses API event: an ``event:`` line and its JSON ``data``."""
    return f"event: {kind}\ndata: {json.dumps({'type': kind, **fields})}\n\n".encode()


def response_events(words: list[str], final: str = "completed", **final_fields) -> list:
    """A Responses API stream for ``words``: created, the text deltas, then ``final``
    (``response.completed``, ``response.failed`` … with ``final_fields`` in its response),
    each with its sequence number. No [DONE]: reply with ``done=False``."""
    text = "".join(words)
    started = {**response_object(""), "status": "in_progress", "usage": None}
    item = {"item_id": "msg_fake_1", "output_index": 0, "content_index": 0}
    events = [
        ("response.created", {"response": started}),
        ("response.in_progress", {"response": started}),
        (
            "response.output_item.added",
            {
                "output_index": 0,
                "item": {
                    "id": "msg_fake_1",
                    "type": "message",
                    "status": "in_progress",
                    "role": "assistant",
                    "content": [],
                },
            },
        ),
        *[("response.output_text.delta", {**item, "delta": w, "logprobs": []}) for w in words],
        ("response.output_text.done", {**item, "text": text, "logprobs": []}),
    ]
    if final:
        status = final.removeprefix("response.")
        done = {**response_object(text), "status": status, **final_fields}
        events.append((f"response.{status}", {"response": done}))
    return [typed(kind, sequence_number=n, **fields) for n, (kind, fields) in enumerate(events)]


def embedding_answer(count: int = 1, usage: dict | None = None) -> dict:
    """An embeddings answer for ``count`` inputs."""
    return {
        "object": "list",
        "data": [
            {"object": "embedding", "index": i, "embedding": [0.25, -0.5, 0.125]}
            for i in range(count)
        ],
        "model": "openai/text-embedding-3-small",
        "usage": usage or {"prompt_tokens": 5, "total_tokens": 5},
    }


# A call priced by the price table (tests/api/test_accounting.py, test_stream_rows.py):
PRICED_MODEL = "openai/gpt-4o-mini"  # what the fake upstream answers with
PRICED_USAGE = {
    "prompt_tokens": 1000,
    "completion_tokens": 200,
    "total_tokens": 1200,
    "prompt_tokens_details": {"cached_tokens": 400},
}
# 600 uncached x $0.50 + 400 cached x $0.25 + 200 x $2.00, per million tokens
PRICED = (600 * 0.5 + 400 * 0.25 + 200 * 2.0) / 1e6
