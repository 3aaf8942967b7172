"""One API call through the gateway, whatever its endpoint.

Every endpoint goes through the same steps: validate the body (the endpoint's rules),
resolve the end user, derive the upstream identifier and attach it in the configured
dialect, admit the call under the limits that apply (tally.limits.admission: a 429 here
costs nothing), forward, relay the answer (event by event when streaming) and record one
request row when the answer ends, however it ends: done, upstream error, broken
upstream, or a client that went away. What differs between endpoints (body rules, where
usage is found, how a stream ends) is an :class:`~tally.proxy.endpoints.base.Endpoint`.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from tally import metrics
from tally.end_users.claims import EndUserClaim, resolve_end_user
from tally.errors import InvalidRequest, TallyError, UpstreamError
from tally.keys.api_keys import AuthenticatedKey
from tally.limits.admission import (
    Admission,
    StaleConfig,
    admit,
    checks_config,
    count_usage,
    peek_headers,
)
from tally.proxy.answers import ProxyResponse, upstream_error
from tally.proxy.endpoints.base import Endpoint, elapsed_ms
from tally.proxy.sse import EventSplitter
from tally.proxy.upstream import UpstreamResponse
from tally.runtime.process import Runtime
from tally.tracking.config import (
    TrackingConfig,
    active_config,
    attach,
    check_identifier,
    derive_identifier,
)
from tally.usage.costs import cached_prices, settle_cost
from tally.usage.records import CallRecord, Outcome, record_call_safely

STREAM_HEADERS = {
    "Content-Type": "text/event-stream; charset=utf-8",
    "Cache-Control": "no-cache",
    "X-Accel-Buffering": "no",  # nginx: relay each event as it comes
}


@dataclass
class _Call:
    """One call in flight: what the pipeline carries from step to step."""

    runtime: Runtime
    endpoint: Endpoint
    record: CallRecord
    outcome: Outcome
    started: float
    admission: Admission
    reconcilable: bool = False  # an OpenRouter stream: a cut one is costed later

    def finish(self, error: UpstreamError | None = None) -> None:
        """Settle the call's cost (tally.usage.costs), then record its row, and its
        tokens and cost in its limits' counters (once its answer has ended)."""
        if error is not None:
            self.outcome.fail(error.status, error.code, error.message)
        out = self.outcome
        out.latency_ms = elapsed_ms(self.started)
        runtime = self.runtime
        settle_cost(
            out,
            (out.model, self.record.model),
            lambda: cached_prices(runtime.cache, runtime.sessions),
            # the usage never arrived: OpenRouter's generation endpoint will say
            estimate=self.reconcilable and out.usage is None and bool(out.generation_id),
        )
        count_usage(self.runtime.limits, self.admission, self.outcome.usage)
        record_call_safely(self.runtime, self.record, self.outcome)
        metrics.record_call(
            self.endpoint.name,
            out.model or self.record.model,
            out.status,
            out.latency_ms,
            out.ttft_ms,
            out.usage,
            out.error_code,
        )


def proxy(
    runtime: Runtime,
    endpoint: Endpoint,
    key: AuthenticatedKey,
    body: Any,
    header_user: str | None,
    request_id: str,
    verified: EndUserClaim | None = None,
) -> ProxyResponse:
    """Forward one call to ``endpoint``; raise a TallyError for anything refused up front.
    ``verified``: the end user of a verified end-user token (tally.verification.tokens), if any.
    Answers and errors carry the end user's X-RateLimit-* headers."""
    admission = Admission()
    try:
        result = _proxy(runtime, endpoint, key, body, header_user, request_id, verified, admission)
    except TallyError as exc:
        if exc.status == 429:  # a limit or budget refused it
            metrics.record_refusal(exc.code)
        if not admission.headers and exc.status < 500:  # refused before the admission
            admission.headers = limit_headers(runtime, key, body, header_user, verified)
        exc.headers = {**admission.headers, **exc.headers}
        raise
    result.headers.update(admission.headers)
    return result


def limit_headers(
    runtime: Runtime,
    key: AuthenticatedKey,
    body: Any,
    header_user: str | None,
    verified: EndUserClaim | None = None,
) -> dict[str, str]:
    """The end user's X-RateLimit-* headers for an answer that does not go upstream (a
    request refused before admission, the model list), when the user can be told from
    the request at all; nothing is counted."""
    try:
        claim = resolve_end_user(
            body if isinstance(body, dict) else {}, header_user, key.bound_external_id, verified
        )
    except TallyError:
        return {}
    return peek_headers(runtime, key, claim)


def _proxy(runtime, endpoint, key, body, header_user, request_id, verified, admission):
    started = time.perf_counter()
    endpoint.validate(body)
    claim = resolve_end_user(body, header_user, key.bound_external_id, verified)
    # limits on Redis: the admission's round trip checks the cached config's version
    peeked = runtime.cache.peek("config") if checks_config(runtime, key, claim) else None
    prepare = (runtime, endpoint, key, body, claim, request_id, started, admission)
    try:
        call, upstream_body, stream, hide_usage = _admitted(*prepare, peeked)
    except StaleConfig:  # only with a peeked config: read it as usual, once
        call, upstream_body, stream, hide_usage = _admitted(*prepare, None)
    try:
        response = runtime.upstream.post(endpoint.path, upstream_body, stream=stream)
    except UpstreamError as exc:
        call.finish(exc)
        raise
    content_type = response.headers.get("Content-Type", "")
    if stream and response.status < 400 and content_type.startswith("text/event-stream"):
        headers = dict(STREAM_HEADERS)
        call.outcome.generation_id = response.headers.get("X-Generation-Id")
        if call.outcome.generation_id:
            headers["X-Generation-Id"] = call.outcome.generation_id
        return ProxyResponse(200, headers, _relay(call, response, hide_usage))
    return _whole(call, response)


def _admitted(runtime, endpoint, key, body, claim, request_id, started, admission, peeked):
    """The call prepared under the tracking config (``peeked``: the cached one and its
    version, checked by the admission) and admitted; a 429 here: nothing counted."""
    if peeked is not None:
        config, version = peeked
    else:
        with runtime.sessions() as session:
            config, version = active_config(session, runtime.cache), None
    prepared = _prepare(runtime, endpoint, key, body, claim, config, request_id, started, admission)
    admit(runtime, key, claim, admission, version=version)
    return prepared


def _prepare(runtime, endpoint, key, body, claim, config, request_id, started, admission):
    """The call under ``config``: its upstream identifier (or its refusal), the body
    for the upstream, and what the pipeline carries to the end."""
    identifier = stamp(config, claim, runtime.hash_key)
    upstream_body = attach(
        body, config, identifier, _profile(claim), embeddings=endpoint.embeddings
    )
    stream = endpoint.streams and body.get("stream") is True
    hide_usage = endpoint.prepare_stream(upstream_body) if stream else False
    call = _Call(
        runtime,
        endpoint,
        CallRecord(
            request_id=request_id,
            api_key_id=key.id,
            claim=claim,
            identifier=identifier,
            revision_id=config.revision_id,
            model=body.get("model"),
            stream=stream,
            endpoint=endpoint.name,
            is_demo=runtime.upstream.is_demo,
        ),
        Outcome(),
        started,
        admission,
        reconcilable=stream and config.dialect == "openrouter" and not runtime.upstream.is_demo,
    )
    return call, upstream_body, stream, hide_usage


def stamp(config: TrackingConfig, claim: EndUserClaim | None, hash_key: bytes) -> str | None:
    """The upstream identifier for the request's end user (None when nothing identifying
    goes upstream); refuses a request without one when the config requires it, and an
    identifier the dialect cannot carry."""
    if claim is None:
        if config.require_identity:
            raise InvalidRequest(
                "This gateway requires an end user: send identity.id, user, "
                "safety_identifier, or the X-Tally-User header.",
                param="user",
                code="identity_required",
            )
        return None
    if not config.enabled:
        return None
    identifier = derive_identifier(config, claim.external_id, hash_key)
    check_identifier(identifier, claim.param, config.max_identifier_length)
    return identifier


def _whole(call: _Call, response: UpstreamResponse) -> ProxyResponse:
    """A whole answer: read, checked, recorded, then sent."""
    try:
        content = response.read()
    except UpstreamError as exc:
        call.finish(exc)
        raise
    finally:
        response.close()
    if response.status >= 400:
        err = upstream_error(response.status, content, call.runtime)
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
        err = upstream_error(status, content, call.runtime)
        call.finish(err)
        raise err
    outcome = call.outcome
    outcome.generation_id = response.headers.get("X-Generation-Id") or outcome.generation_id
    call.finish()
    headers = {"Content-Type": "application/json"}
    if outcome.generation_id:
        headers["X-Generation-Id"] = outcome.generation_id
    return ProxyResponse(200, headers, content)


def _relay(call: _Call, response: UpstreamResponse, hide_usage: bool) -> Iterator[bytes]:
    """Relay SSE events as they arrive; record the row when the stream ends."""
    splitter = EventSplitter()
    watcher = call.endpoint.watch(call.outcome, call.started, hide_usage)
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
            call.outcome.fail(err.status, err.code, err.message)
            yield watcher.error_event(err)
    except UpstreamError as err:
        call.outcome.fail(err.status, err.code, err.message)
        yield watcher.error_event(err)
    except GeneratorExit:
        if not watcher.done:
            call.outcome.fail(499, "client_disconnected", "The client went away mid-stream.")
        raise
    finally:
        response.close()
        call.finish()


def _profile(claim: EndUserClaim | None) -> dict[str, Any] | None:
    return claim.profile if claim is not None and claim.carries_profile else None
