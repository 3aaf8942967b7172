"""What the mock upstream (bench/mock_upstream.py) answers on ``/responses`` and
``/embeddings``: canned, mostly preformatted bytes, as OpenAI's APIs shape them."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from functools import lru_cache
from typing import Any

TEXT = "Hello from the mock upstream."
MESSAGE = {
    "type": "message",
    "id": "msg_bench",
    "status": "completed",
    "role": "assistant",
    "content": [{"type": "output_text", "text": TEXT, "annotations": []}],
}


def _usage(output_tokens: int) -> dict[str, Any]:
    return {
        "input_tokens": 12,
        "input_tokens_details": {"cached_tokens": 4},
        "output_tokens": output_tokens,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": 12 + output_tokens,
    }


def _response(status: str, output: list, usage: dict | None) -> dict[str, Any]:
    return {
        "id": "resp_bench",
        "object": "response",
        "created_at": 1735689600,
        "status": status,
        "model": "bench/mock",
        "output": output,
        "usage": usage,
    }


def _dumps(data: Any) -> bytes:
    return json.dumps(data, separators=(",", ":")).encode()


RESPONSE = _dumps(_response("completed", [MESSAGE], _usage(6)))
_DELTA = (
    "event: response.output_text.delta\n"
    'data: {"type":"response.output_text.delta","item_id":"msg_bench","output_index":0,'
    '"content_index":0,"delta":"w%d ","sequence_number":%d,"sent_ns":%d}\n\n'
)


def _event(kind: str, sequence: int, **fields: Any) -> bytes:
    data = _dumps({"type": kind, "sequence_number": sequence, **fields})
    return b"event: %s\ndata: %s\n\n" % (kind.encode(), data)


def response_stream(tokens: int) -> Iterator[tuple[bytes, bool]]:
    """A Responses stream of ``tokens`` text deltas, event by event, each made when it is
    asked for (so ``sent_ns`` is its send time): ``(event, pause after it)``."""
    started = _response("in_progress", [], None)
    part = {"type": "output_text", "text": "", "annotations": []}
    item = {**MESSAGE, "status": "in_progress", "content": []}
    yield _event("response.created", 0, response=started), False
    yield _event("response.in_progress", 1, response=started), False
    yield _event("response.output_item.added", 2, output_index=0, item=item), False
    yield _event("response.content_part.added", 3, item_id="msg_bench", part=part), False
    for index in range(tokens):
        yield (_DELTA % (index, 4 + index, time.time_ns())).encode(), True
    text = "".join(f"w{index} " for index in range(tokens))
    sequence = 4 + tokens
    place = {"item_id": "msg_bench", "output_index": 0, "content_index": 0}
    yield _event("response.output_text.done", sequence, text=text, **place), False
    part = {**part, "text": text}
    yield _event("response.content_part.done", sequence + 1, part=part, **place), False
    message = {**MESSAGE, "content": [part]}
    yield _event("response.output_item.done", sequence + 2, output_index=0, item=message), False
    done = _response("completed", [message], _usage(tokens))
    yield _event("response.completed", sequence + 3, response=done, sent_ns=time.time_ns()), False


@lru_cache(maxsize=8)
def _vector(dims: int) -> str:
    return "[" + ",".join(f"{((i * 7919) % 2001 - 1000) / 31250:.8f}" for i in range(dims)) + "]"


def embeddings(value: Any, dims: int) -> bytes:
    """The embeddings answer for ``input`` (a string, token ids, or a list of either)."""
    listed = isinstance(value, list) and value and not isinstance(value[0], int)
    inputs = len(value) if listed else 1
    items = ",".join(
        f'{{"object":"embedding","index":{index},"embedding":{_vector(dims)}}}'
        for index in range(inputs)
    )
    usage = f'"usage":{{"prompt_tokens":{8 * inputs},"total_tokens":{8 * inputs}}}'
    return f'{{"object":"list","data":[{items}],"model":"bench/mock",{usage}}}'.encode()
