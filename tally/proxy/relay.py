"""An upstream answer passed on to the client: a whole JSON answer read, checked and
recorded before it is sent, or a stream relayed event by event and recorded when it ends
(done, broken by the upstream, or cut by a client that went away)."""

from __future__ import annotations

import json
from collections.abc import Iterator

from tally.errors import UpstreamError
from tally.proxy.answers import ProxyResponse, upstream_error
from tally.proxy.call import Call
from tally.proxy.openai_errors import status_of
from tally.proxy.sse import EventSplitter
from tally.proxy.upstream import UpstreamResponse

STREAM_HEADERS = {
    "Content-Type": "text/event-stream; charset=utf-8",
    "Cache-Control": "no-cache",
    "X-Accel-Buffering": "no",  # nginx: relay each event as it comes
}


def answer(call: Call, response: UpstreamResponse) -> ProxyResponse:
    """The client's answer to ``response``: relayed as a stream when the call streams and
    the upstream streams, else read whole."""
    content_type = response.headers.get("Content-Type", "")
    if call.stream and response.status < 400 and content_type.startswith("text/event-stream"):
        headers = dict(STREAM_HEADERS)
        call.streaming = True
        call.outcome.generation_id = response.headers.get("X-Generation-Id")
        if call.outcome.generation_id:
            headers["X-Generation-Id"] = call.outcome.generation_id
        return ProxyResponse(200, headers, relay(call, response))
    return whole(call, response)


def whole(call: Call, response: UpstreamResponse) -> ProxyResponse:
    """A whole answer: read, checked, recorded, then sent."""
    try:
        content = response.read()
    except UpstreamError as exc:
        call.finish(exc)
        raise
    finally:
        response.close()
    upstream = call.pipeline.upstream
    if response.status >= 400:
        err = upstream_error(response.status, content, upstream)
        call.finish(err)
        raise err
    try:
        data = json.loads(content)
    except ValueError:
        data = None
    if not isinstance(data, dict):
        err = UpstreamError(
            "The upstream's answer is not a JSON object.", code="upstream_malformed"
        )
        call.finish(err)
        raise err
    status = call.endpoint.read_answer(data, call.outcome)
    if status is not None:
        err = upstream_error(status, content, upstream)
        call.finish(err)
        raise err
    outcome = call.outcome
    outcome.generation_id = response.headers.get("X-Generation-Id") or outcome.generation_id
    call.finish()
    headers = {"Content-Type": "application/json"}
    if outcome.generation_id:
        headers["X-Generation-Id"] = outcome.generation_id
    return ProxyResponse(200, headers, content)


def relay(call: Call, response: UpstreamResponse) -> Iterator[bytes]:
    """Relay SSE events as they arrive; record the row when the stream ends."""
    splitter = EventSplitter()
    watcher = call.endpoint.watch(call.outcome, call.started, call.hide_usage)
    try:
        for chunk in response.stream():
            # Events that arrived in one read leave in one write: no added latency, and
            # a relay that falls behind catches up with fewer syscalls, not more.
            parts = []
            for event in splitter.feed(chunk):
                out = watcher.see(event)
                if out is not None:
                    parts.append(out)
            if parts:
                yield parts[0] if len(parts) == 1 else b"".join(parts)
        rest = splitter.rest()
        if rest.strip():
            yield rest + b"\n\n"
        if not watcher.done and call.outcome.error_code is None:
            err = UpstreamError(call.endpoint.incomplete_message, code="stream_incomplete")
            call.outcome.fail(status_of(err), err.code, err.message)
            yield watcher.error_event(err)
    except UpstreamError as err:
        call.outcome.fail(status_of(err), err.code, err.message)
        yield watcher.error_event(err)
    except GeneratorExit:
        if not watcher.done:
            call.outcome.fail(499, "client_disconnected", "The client went away mid-stream.")
        raise
    finally:
        response.close()
        call.finish()
