"""``POST /v1/responses``: what OpenAI's Responses API contributes to the pipeline.

The Vercel AI SDK's OpenAI provider calls it by default. Its stream is typed events
(``event: response.output_text.delta`` …), each ``data`` a JSON object whose ``type``
repeats the event's name; there is no ``[DONE]``: a stream ends with
``response.completed`` (usage in ``response.usage``: ``input_tokens``, ``output_tokens``,
``input_tokens_details.cached_tokens``), ``response.incomplete``, ``response.failed``
(``response.error``) or an ``error`` event. Usage always comes with the final event, so
nothing has to be asked for or hidden.
"""

from __future__ import annotations

import json
from typing import Any

from tally.errors import InvalidInput, TallyError
from tally.proxy.endpoints.base import (
    Endpoint,
    StreamWatcher,
    error_status,
    optional_bool,
    require_model,
    require_object,
    text,
    usage_of,
)
from tally.proxy.openai_errors import type_of
from tally.proxy.sse import event_data
from tally.usage.call import Outcome

FINAL_EVENTS = frozenset({"response.completed", "response.incomplete", "response.failed"})
_DELTA = b"event: response.output_text.delta"


class Responses(Endpoint):
    """OpenAI's Responses API."""

    name = "responses"
    path = "/responses"
    streams = True
    incomplete_message = "The upstream ended the stream before response.completed."
    prompt_fields = ("input", "instructions", "tools")
    cap_fields = ("max_output_tokens",)

    def validate(self, body: Any) -> None:
        """Refuse a body that is not a Responses request, naming the field."""
        require_object(body)
        require_model(body)
        if body.get("input") is not None and not isinstance(body["input"], str | list):
            raise InvalidInput("input must be a string or an array of input items.", field="input")
        if body.get("instructions") is not None and not isinstance(body["instructions"], str):
            raise InvalidInput("instructions must be a string.", field="instructions")
        optional_bool(body, "stream")

    def read_answer(self, data: dict[str, Any], outcome: Outcome) -> int | None:
        """Usage, model and id of a whole response. A response whose ``status`` is
        ``failed`` is relayed as the upstream sent it, and recorded as an error."""
        if isinstance(data.get("error"), dict) and "output" not in data and "status" not in data:
            return error_status(data["error"].get("code"))
        _note_response(data, outcome)
        return None

    def watch(self, outcome: Outcome, started: float, hide_usage: bool) -> StreamWatcher:
        """A watcher for one Responses stream."""
        return _ResponsesWatcher(outcome, started)


class _ResponsesWatcher(StreamWatcher):
    sequence = 0  # events seen so far: the sequence_number of an event Tally adds

    def see(self, event: bytes) -> bytes | None:
        if self.outcome.ttft_ms is not None and event.startswith(_DELTA):
            self.sequence += 1  # a text delta once the first token is known: relayed unparsed
            self.outcome.streamed += 1  # about a token each: what a cut stream is costed by
            return event
        data = event_data(event)
        if data is None:
            return event  # a comment: pass it on
        self.sequence += 1
        try:
            payload = json.loads(data)
        except ValueError:
            return event
        if not isinstance(payload, dict):
            return event
        kind = payload.get("type")
        if not isinstance(kind, str):
            return event
        response = payload.get("response")
        if isinstance(response, dict):
            _note_response(response, self.outcome)
        if kind.endswith(".delta"):
            self.first_token()
        elif kind in FINAL_EVENTS:
            self.done = True
        elif kind == "error":
            # OpenAI's reference puts code and message on the event, its streams nest
            # them in ``error``; read either.
            error = payload.get("error") if isinstance(payload.get("error"), dict) else payload
            code = error.get("code")
            self.outcome.fail(
                error_status(code),
                str(code) if code is not None else "upstream_error",
                text(error.get("message")),
            )
            self.done = True
        return event

    def error_event(self, error: TallyError) -> bytes:
        """An ``error`` event for a failed stream, readable by every client: the fields
        flat as OpenAI's reference has them, and nested in ``error`` as its streams send
        them (the openai SDK raises on that, the Vercel AI SDK parses it)."""
        fields = {"code": error.code, "message": error.message, "param": error.field}
        kind = type_of(error)
        return _typed_event(
            "error",
            {**fields, "sequence_number": self.sequence, "error": {"type": kind, **fields}},
        )


def _note_response(response: dict[str, Any], outcome: Outcome) -> None:
    """Id, model and usage of a response object; a failed one is recorded as an error."""
    outcome.generation_id = outcome.generation_id or text(response.get("id"))
    outcome.model = outcome.model or text(response.get("model"))
    usage = usage_of(response.get("usage"), "input_tokens", "output_tokens")
    if usage is not None:
        outcome.usage = usage
    if response.get("status") == "failed":
        error = response.get("error") if isinstance(response.get("error"), dict) else {}
        code = error.get("code")
        outcome.fail(
            502,
            str(code) if code is not None else "response_failed",
            text(error.get("message")) or "The upstream reported the response as failed.",
        )


def _typed_event(kind: str, fields: dict[str, Any]) -> bytes:
    data = json.dumps({"type": kind, **fields}, separators=(",", ":"))
    return f"event: {kind}\ndata: {data}\n\n".encode()
