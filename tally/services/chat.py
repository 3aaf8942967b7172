"""proxy_chat: one chat completion from the client, through the upstream, and back.

The request is validated, its end user resolved, the upstream identifier derived and
attached in the configured dialect, the call forwarded, the answer relayed (event by
event when streaming) and one request row written when the answer ends, however it
ends: done, upstream error, broken upstream, or a client that went away.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import requests

from tally.errors import InvalidRequest, TallyError, UpstreamError, UpstreamTimeout
from tally.gateway import Gateway
from tally.identity import EndUserClaim, resolve_end_user
from tally.services.keys import AuthenticatedKey
from tally.services.limits import Admission, admit, peek_headers
from tally.services.tracking import active_config
from tally.services.usage import CallRecord, Outcome, record_call_safely
from tally.sse import EventSplitter, encode_event, event_data
from tally.tracking import attach, check_identifier, derive_identifier
from tally.upstream import is_read_timeout

_DONE = object()


@dataclass
class ChatResponse:
    """What the view sends back: a whole body, or an iterator of SSE bytes."""

    status: int
    headers: dict[str, str]
    body: bytes | Iterator[bytes]


def proxy_chat(
    gateway: Gateway,
    key: AuthenticatedKey,
    body: Any,
    header_user: str | None,
    request_id: str,
) -> ChatResponse:
    """Forward one chat completion; raise a TallyError for anything refused up front.
    Answers and errors after the limits' admission carry its X-RateLimit-* headers."""
    admission = Admission()
    try:
        result = _proxy_chat(gateway, key, body, header_user, request_id, admission)
    except TallyError as exc:
        if not admission.headers and exc.status < 500:  # refused before the admission
            admission.headers = _limit_headers(gateway, key, body, header_user)
        exc.headers = {**admission.headers, **exc.headers}
        raise
    result.headers.update(admission.headers)
    return result


def _proxy_chat(gateway, key, body, header_user, request_id, admission) -> ChatResponse:
    started = time.perf_counter()
    validate_chat_body(body)
    claim = resolve_end_user(body, header_user, key.bound_external_id)
    with gateway.sessions() as session:
        config = active_config(session)
    if claim is None and config.require_identity:
        raise InvalidRequest(
            "This gateway requires an end user: send identity.id, user, or the "
            "X-Tally-User header.",
            param="user",
            code="identity_required",
        )
    identifier = None
    if claim is not None and config.enabled:
        identifier = derive_identifier(config, claim.external_id, gateway.hash_key)
        check_identifier(identifier, claim.param)
    upstream_body = attach(body, config, identifier, _profile(claim))
    stream = body.get("stream") is True
    hide_usage = False
    if stream:
        options = body.get("stream_options") or {}
        if not options.get("include_usage"):
            # Ask for usage anyway so streamed calls are costed; the client never sees it.
            upstream_body["stream_options"] = {**options, "include_usage": True}
            hide_usage = True
    call = CallRecord(
        request_id=request_id,
        api_key_id=key.id,
        claim=claim,
        identifier=identifier,
        revision_id=config.revision_id,
        model=body.get("model"),
        stream=stream,
        is_demo=gateway.upstream.is_demo,
    )
    outcome = Outcome()
    admit(gateway, key, claim, admission)  # a 429 here: nothing counted, nothing sent
    outcome.extra["limits"] = admission
    try:
        response = gateway.upstream.post_chat(upstream_body, stream=stream)
    except UpstreamError as exc:
        _finish(gateway, call, outcome, started, exc.status, exc.code, exc.message)
        raise
    content_type = response.headers.get("Content-Type", "")
    if stream and response.status_code < 400 and content_type.startswith("text/event-stream"):
        headers = {
            "Content-Type": "text/event-stream; charset=utf-8",
            "Cache-Control": "no-cache",
            "X-Accel-Buffering": "no",
        }
        if response.headers.get("X-Generation-Id"):
            headers["X-Generation-Id"] = response.headers["X-Generation-Id"]
        relay = _relay(gateway, response, call, outcome, started, hide_usage)
        return ChatResponse(200, headers, relay)
    return _whole(gateway, response, call, outcome, started)


def _limit_headers(gateway, key, body, header_user) -> dict[str, str]:
    """The end user's X-RateLimit-* headers for a request refused before admission,
    when the user can be told from it at all."""
    try:
        claim = resolve_end_user(body, header_user, key.bound_external_id)
    except (TallyError, AttributeError, TypeError):
        return {}
    return peek_headers(gateway, key, claim)


def validate_chat_body(body: Any) -> None:
    """Refuse a body that is not a chat completion request, naming the field."""
    if not isinstance(body, dict):
        raise InvalidRequest("The request body must be a JSON object.")
    if not isinstance(body.get("model"), str) or not body["model"].strip():
        raise InvalidRequest("model is required and must be a non-empty string.", param="model")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise InvalidRequest(
            "messages is required and must be a non-empty array.", param="messages"
        )
    for index, message in enumerate(messages):
        if not isinstance(message, dict) or not isinstance(message.get("role"), str):
            raise InvalidRequest(
                f"messages[{index}] must be an object with a string role.",
                param=f"messages[{index}]",
            )
    if body.get("stream") is not None and not isinstance(body["stream"], bool):
        raise InvalidRequest("stream must be a boolean.", param="stream")
    options = body.get("stream_options")
    if options is not None and not isinstance(options, dict):
        raise InvalidRequest("stream_options must be an object.", param="stream_options")


def list_models(gateway: Gateway) -> ChatResponse:
    """The upstream's model list, passed through."""
    response = gateway.upstream.get_models()
    if response.status_code >= 400:
        raise upstream_error(response.status_code, response.content, gateway)
    try:
        json.loads(response.content)
    except ValueError:
        raise UpstreamError(
            "The upstream's model list is not JSON.", code="upstream_malformed"
        ) from None
    return ChatResponse(200, {"Content-Type": "application/json"}, response.content)


def model_list_headers(gateway: Gateway, key: AuthenticatedKey, header_user: str | None):
    """X-RateLimit-* headers for the model list: the X-Tally-User's (or the key's bound
    user's) quota, else the key's anonymous bucket; nothing is counted."""
    return _limit_headers(gateway, key, {}, header_user)


def upstream_error(status: int, content: bytes, gateway: Gateway) -> UpstreamError:
    """The upstream's own error (status and message kept), in OpenAI's shape."""
    message, kind, code, param = f"The upstream answered with status {status}.", None, None, None
    try:
        error = json.loads(content).get("error")
    except (ValueError, AttributeError):
        error = None
    if isinstance(error, dict):
        message = error.get("message") if isinstance(error.get("message"), str) else message
        kind, code, param = error.get("type"), error.get("code"), error.get("param")
    elif isinstance(error, str):
        message = error
    err = UpstreamError(
        gateway.upstream.scrub(message),
        status=status,
        param=param,
        code=str(code) if code is not None else f"upstream_{status}",
    )
    if isinstance(kind, str):
        err.type = kind
    return err


def _whole(gateway, response, call, outcome, started) -> ChatResponse:
    try:
        content = response.content
    except requests.RequestException as exc:
        err = _broken(exc)
        _finish(gateway, call, outcome, started, err.status, err.code, err.message)
        raise err from None
    finally:
        response.close()
    if response.status_code >= 400:
        err = upstream_error(response.status_code, content, gateway)
        _finish(gateway, call, outcome, started, err.status, err.code, err.message)
        raise err
    try:
        data = json.loads(content)
    except ValueError:
        data = None
    if not isinstance(data, dict):
        err = UpstreamError(
            "The upstream's answer is not a JSON object.", code="upstream_malformed"
        )
        _finish(gateway, call, outcome, started, err.status, err.code, err.message)
        raise err
    if isinstance(data.get("error"), dict) and "choices" not in data:
        code = data["error"].get("code")
        status = code if isinstance(code, int) and 400 <= code <= 599 else 502
        err = upstream_error(status, content, gateway)
        _finish(gateway, call, outcome, started, err.status, err.code, err.message)
        raise err
    outcome.usage = data.get("usage") if isinstance(data.get("usage"), dict) else None
    outcome.generation_id = response.headers.get("X-Generation-Id") or _str(data.get("id"))
    outcome.model = _str(data.get("model"))
    _finish(gateway, call, outcome, started)
    headers = {"Content-Type": "application/json"}
    if outcome.generation_id:
        headers["X-Generation-Id"] = outcome.generation_id
    return ChatResponse(200, headers, content)


def _relay(gateway, response, call, outcome, started, hide_usage) -> Iterator[bytes]:
    """Relay SSE events as they arrive; write the request row when the stream ends."""
    splitter = EventSplitter()
    done = False
    outcome.generation_id = response.headers.get("X-Generation-Id")
    try:
        for chunk in response.iter_content(chunk_size=None):
            # Events that arrived in one read leave in one write: no added latency, and
            # a relay that falls behind catches up with fewer syscalls, not more.
            parts = []
            for event in splitter.feed(chunk):
                out = _inspect(event, outcome, started, hide_usage)
                if out is _DONE:
                    done = True
                    parts.append(event)
                elif out is not None:
                    parts.append(out)
            if parts:
                yield parts[0] if len(parts) == 1 else b"".join(parts)
        rest = splitter.rest()
        if rest.strip():
            yield rest + b"\n\n"
        if not done and outcome.error_code is None:
            err = UpstreamError(
                "The upstream ended the stream before [DONE].", code="stream_incomplete"
            )
            outcome.fail(err.status, err.code, err.message)
            yield encode_event(json.dumps(err.to_dict()))
    except requests.RequestException as exc:
        err = _broken(exc)
        outcome.fail(err.status, err.code, err.message)
        yield encode_event(json.dumps(err.to_dict()))
    except GeneratorExit:
        if not done:
            outcome.fail(499, "client_disconnected", "The client went away mid-stream.")
        raise
    finally:
        response.close()
        outcome.latency_ms = _ms(started)
        record_call_safely(gateway.sessions, call, outcome)


def _inspect(event: bytes, outcome: Outcome, started: float, hide_usage: bool):
    """Look at one event: note usage, ids and errors; say whether to relay it."""
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
        return event
    data = event_data(event)
    if data is None:
        return event  # a comment such as ": OPENROUTER PROCESSING": harmless, pass it on
    if data.strip() == "[DONE]":
        return _DONE
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
        status = code if isinstance(code, int) and 400 <= code <= 599 else 502
        outcome.fail(status, str(code) if code is not None else "upstream_error", message)
        return event
    outcome.generation_id = outcome.generation_id or _str(chunk.get("id"))
    outcome.model = outcome.model or _str(chunk.get("model"))
    usage = chunk.get("usage")
    if isinstance(usage, dict):
        outcome.usage = usage
    choices = chunk.get("choices")
    if hide_usage and usage and not choices:
        return None
    if choices and outcome.ttft_ms is None:
        outcome.ttft_ms = _ms(started)
    return event


def _finish(gateway, call, outcome, started, status=None, code=None, message=None) -> None:
    if status is not None:
        outcome.fail(status, code, message)
    outcome.latency_ms = _ms(started)
    record_call_safely(gateway.sessions, call, outcome)


def _broken(exc: requests.RequestException) -> UpstreamError:
    if is_read_timeout(exc):
        return UpstreamTimeout("The upstream stopped sending before the answer was complete.")
    return UpstreamError(
        "The upstream connection broke before the answer was complete.",
        code="upstream_disconnected",
    )


def _profile(claim: EndUserClaim | None) -> dict[str, Any] | None:
    return claim.profile if claim is not None and claim.source == "identity" else None


def _ms(started: float) -> float:
    return round((time.perf_counter() - started) * 1000, 3)


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) else None
