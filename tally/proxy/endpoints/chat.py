"""``POST /v1/chat/completions``: what Chat Completions contributes to the pipeline.

Usage is in the answer's ``usage`` (streams: a last chunk with ``choices: []``, which
Tally asks for when the client did not, and then hides); a stream ends with
``data: [DONE]``; an error can arrive mid-stream as a chunk with an ``error`` field.
"""

from __future__ import annotations

import json
from typing import Any

from tally.errors import InvalidInput
from tally.proxy.endpoints.base import (
    Endpoint,
    StreamWatcher,
    error_status,
    optional_bool,
    optional_object,
    require_model,
    require_object,
    text,
    usage_of,
)
from tally.proxy.sse import event_data
from tally.usage.call import Outcome


class ChatCompletions(Endpoint):
    """OpenAI's Chat Completions API."""

    name = "chat.completions"
    path = "/chat/completions"
    streams = True
    incomplete_message = "The upstream ended the stream before [DONE]."
    prompt_fields = ("messages", "tools")
    cap_fields = ("max_completion_tokens", "max_tokens")

    def validate(self, body: Any) -> None:
        """Refuse a body that is not a chat completion request, naming the field."""
        require_object(body)
        require_model(body)
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            raise InvalidInput(
                "messages is required and must be a non-empty array.", field="messages"
            )
        for index, message in enumerate(messages):
            if not isinstance(message, dict) or not isinstance(message.get("role"), str):
                raise InvalidInput(
                    f"messages[{index}] must be an object with a string role.",
                    field=f"messages[{index}]",
                )
        optional_bool(body, "stream")
        optional_object(body, "stream_options")

    def prepare_stream(self, upstream_body: dict[str, Any]) -> bool:
        """Ask for usage so streamed calls are costed; hide it when the client did not ask
        (clients that did not ask may choke on a chunk with empty ``choices``)."""
        options = upstream_body.get("stream_options") or {}
        if options.get("include_usage"):
            return False
        upstream_body["stream_options"] = {**options, "include_usage": True}
        return True

    def watch(self, outcome: Outcome, started: float, hide_usage: bool) -> StreamWatcher:
        """A watcher for one chat stream."""
        return _ChatWatcher(outcome, started, hide_usage)


class _ChatWatcher(StreamWatcher):
    def see(self, event: bytes) -> bytes | None:
        outcome = self.outcome
        if (
            outcome.ttft_ms is not None
            and outcome.generation_id is not None
            and outcome.model is not None
            and b'"usage"' not in event
            and b'"error"' not in event
            and b"[DONE]" not in event
        ):
            # A content delta once the ids and the first token are known: nothing in it to
            # note (usage and errors always spell their key), so it is relayed unparsed.
            outcome.streamed += 1  # about a token each: what a cut stream is costed by
            return event
        data = event_data(event)
        if data is None:
            return event  # a comment such as ": OPENROUTER PROCESSING": harmless, pass it on
        if data.strip() == "[DONE]":
            self.done = True
            return event
        try:
            chunk = json.loads(data)
        except ValueError:
            return event
        if not isinstance(chunk, dict):
            return event
        error = chunk.get("error")
        if error is not None:
            message = error.get("message") if isinstance(error, dict) else str(error)
            code = error.get("code") if isinstance(error, dict) else None
            outcome.fail(
                error_status(code), str(code) if code is not None else "upstream_error", message
            )
            return event
        outcome.generation_id = outcome.generation_id or text(chunk.get("id"))
        outcome.model = outcome.model or text(chunk.get("model"))
        usage = chunk.get("usage")
        if isinstance(usage, dict):
            outcome.usage = usage_of(usage)
        choices = chunk.get("choices")
        if self.hide_usage and usage and not choices:
            return None
        if choices:
            self.first_token()
        return event
