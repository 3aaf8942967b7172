"""What each API endpoint contributes to the shared request pipeline
(:mod:`tally.proxy.pipeline`): how its body is validated, where its usage is found,
and how its stream ends. Everything else — end user, identifier, limits, forwarding,
relaying, recording — is the pipeline's, the same for every endpoint.
"""

from __future__ import annotations

import json
import math
import time
from typing import Any

from tally.db import UNSTORABLE_TEXT, storable
from tally.errors import InvalidInput, TallyError
from tally.proxy.openai_errors import error_object
from tally.proxy.sse import encode_event
from tally.usage.call import Outcome

MAX_MODEL_LENGTH = 255  # request_log.model and the price table's model are String(255)


class StreamWatcher:
    """Looks at each event of one stream as it goes by: notes ids, usage and errors in
    the call's :class:`Outcome`, and says what to relay."""

    def __init__(self, outcome: Outcome, started: float, hide_usage: bool = False):
        self.outcome = outcome
        self.started = started
        self.hide_usage = hide_usage
        self.done = False  # the stream reached its proper end (Chat's [DONE], a final event)

    def see(self, event: bytes) -> bytes | None:
        """The bytes to relay for ``event`` (usually the event itself), or None to drop it."""
        raise NotImplementedError

    def error_event(self, error: TallyError) -> bytes:
        """The SSE event that tells the client its stream failed (Chat's shape)."""
        return encode_event(json.dumps(error_object(error)))

    def first_token(self) -> None:
        """Note the time to first token, once."""
        if self.outcome.ttft_ms is None:
            self.outcome.ttft_ms = elapsed_ms(self.started)
        self.outcome.streamed += 1


class Endpoint:
    """One OpenAI-compatible endpoint as the pipeline sees it. Subclasses fill in the
    differences; the defaults suit an endpoint that never streams."""

    name: str  # as request rows record it, e.g. "chat.completions"
    path: str  # the upstream path, e.g. "/chat/completions"
    operation = "chat"  # OpenTelemetry's gen_ai.operation.name (tally.traces)
    streams = False  # whether ``"stream": true`` in the body asks for SSE
    content_field = "choices"  # a whole answer without it but with ``error`` is an error
    embeddings = False  # embeddings have neither safety_identifier nor prompt_cache_key
    incomplete_message = "The upstream ended the stream before its end."

    prompt_fields: tuple[str, ...] = ()  # where the prompt's text is
    cap_fields: tuple[str, ...] = ()  # the completion's cap, first given wins

    def validate(self, body: Any) -> None:
        """Refuse a body this endpoint cannot take, naming the field (InvalidInput)."""
        require_object(body)
        require_model(body)

    def prompt_tokens(self, body: dict[str, Any]) -> int:
        """The prompt's tokens, estimated from its text (:func:`estimate_tokens`)."""
        return sum(estimate_tokens(body.get(name)) for name in self.prompt_fields)

    def completion_cap(self, body: dict[str, Any]) -> int | None:
        """The most tokens the answer may have, when the request sets it (embeddings: 0)."""
        if not self.cap_fields:
            return 0
        for name in self.cap_fields:
            value = body.get(name)
            if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
                return min(value, MAX_CAP)
        return None

    def prepare_stream(self, upstream_body: dict[str, Any]) -> bool:
        """Adjust a streaming request before it goes upstream; True when usage was asked
        for on the client's behalf and must be hidden from it."""
        return False

    def read_answer(self, data: dict[str, Any], outcome: Outcome) -> int | None:
        """Note a whole JSON answer's usage, model and id in ``outcome``; return the HTTP
        status to answer with when the answer is really an error (None otherwise): an
        ``error`` object without the endpoint's content, whatever the HTTP status said."""
        if isinstance(data.get("error"), dict) and self.content_field not in data:
            return error_status(data["error"].get("code"))
        outcome.usage = usage_of(data.get("usage"))
        outcome.generation_id = text(data.get("id"))
        outcome.model = text(data.get("model"))
        return None

    def watch(self, outcome: Outcome, started: float, hide_usage: bool) -> StreamWatcher:
        """A watcher for one stream of this endpoint."""
        raise NotImplementedError


CHARS_PER_TOKEN = 4  # OpenAI's rule of thumb for English text
# a completion cap held at most (no model answers more; keeps every amount exact in a
# double, and in the Redis script's numbers, whatever a client sends)
MAX_CAP = 100_000_000
PER_ITEM = 4  # tokens each message (or input item) adds around its text
# parts that are not text: an image's or a file's bytes say nothing of its tokens
NOT_TEXT = frozenset({"image_url", "input_audio", "file", "file_data", "image", "audio"})


def estimate_tokens(value: Any) -> int:
    """A rough count of the tokens in ``value``: its strings at about four characters a
    token, its token ids (embeddings' integer inputs) one each, four per object (a
    message's overhead); images, audio and files are left out. Reservations and cut
    streams use it (PRODUCT.md, Limits): cheap, and close enough to hold a budget."""
    chars = tokens = 0
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            chars += len(item)
        elif isinstance(item, dict):
            tokens += PER_ITEM
            stack.extend(v for k, v in item.items() if k not in NOT_TEXT)
        elif isinstance(item, list):
            stack.extend(item)
        elif isinstance(item, int) and not isinstance(item, bool):
            tokens += 1
    return tokens + math.ceil(chars / CHARS_PER_TOKEN)


def require_object(body: Any) -> None:
    """The body must be a JSON object."""
    if not isinstance(body, dict):
        raise InvalidInput("The request body must be a JSON object.")


def require_model(body: dict[str, Any]) -> None:
    """``model`` must be a non-empty string that every backend can store in a row."""
    model = body.get("model")
    if not isinstance(model, str) or not model.strip():
        raise InvalidInput("model is required and must be a non-empty string.", field="model")
    if len(model) > MAX_MODEL_LENGTH:
        raise InvalidInput(
            f"model must be at most {MAX_MODEL_LENGTH} characters, got {len(model)}.",
            field="model",
        )
    if not storable(model):
        raise InvalidInput(f"model {UNSTORABLE_TEXT}.", field="model")


def optional_bool(body: dict[str, Any], name: str) -> None:
    """``name``, when present, must be a boolean."""
    if body.get(name) is not None and not isinstance(body[name], bool):
        raise InvalidInput(f"{name} must be a boolean.", field=name)


def optional_object(body: dict[str, Any], name: str) -> None:
    """``name``, when present, must be an object."""
    if body.get(name) is not None and not isinstance(body[name], dict):
        raise InvalidInput(f"{name} must be an object.", field=name)


def usage_of(
    usage: Any, prompt: str = "prompt_tokens", completion: str = "completion_tokens"
) -> dict[str, Any] | None:
    """An upstream's ``usage`` object in the request log's terms: ``prompt_tokens``,
    ``completion_tokens``, ``total_tokens``, ``cached_tokens`` (prompt tokens served from
    the provider's cache) and ``cost`` (when the upstream reports it, as OpenRouter does).
    ``prompt``/``completion`` name the upstream's own keys (the Responses API says
    ``input_tokens``/``output_tokens``)."""
    if not isinstance(usage, dict):
        return None
    details = usage.get(f"{prompt}_details")  # prompt_tokens_details, input_tokens_details
    cached = details.get("cached_tokens") if isinstance(details, dict) else None
    return {
        "prompt_tokens": usage.get(prompt),
        "completion_tokens": usage.get(completion),
        "total_tokens": usage.get("total_tokens"),
        "cached_tokens": cached,
        "cost": usage.get("cost"),
    }


def text(value: Any) -> str | None:
    """``value`` if it is a string."""
    return value if isinstance(value, str) else None


def error_status(code: Any) -> int:
    """The status an upstream error object's ``code`` stands for (502 unless it is one)."""
    return code if isinstance(code, int) and 400 <= code <= 599 else 502


def elapsed_ms(started: float) -> float:
    """Milliseconds since ``started`` (a perf_counter reading)."""
    return round((time.perf_counter() - started) * 1000, 3)
