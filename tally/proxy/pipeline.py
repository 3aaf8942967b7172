"""One API call through the gateway, whatever its endpoint.

Every endpoint goes through the same steps, each taking and filling in one
:class:`~tally.proxy.call.Call`: validate the body (the endpoint's rules), resolve the end
user (tally.end_users.claims), derive the upstream identifier and attach it in the
configured dialect (tally.tracking.identifiers), admit the call under the limits that
apply (tally.limits.admission: a 429 here costs nothing), forward (tally.proxy.upstream),
relay the answer (tally.proxy.relay) and record one request row when the answer ends,
however it ends (:meth:`Call.finish`). A call refused before the upstream (a 400, 413 or
429 of Tally's own) is a request row too, marked refused (tally.proxy.refusals). What
differs between endpoints (body rules, where usage is found, how a stream ends) is an
:class:`~tally.proxy.endpoints.base.Endpoint`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

from tally import metrics
from tally.end_users.claims import EndUserClaim, resolve_end_user
from tally.errors import RateLimited, TallyError, UpstreamError
from tally.keys.api_keys import AuthenticatedKey
from tally.limits.admission import StaleConfig, admit, checks_config, peek_headers
from tally.proxy.answers import ProxyResponse
from tally.proxy.call import Call, Pipeline
from tally.proxy.endpoints.base import Endpoint
from tally.proxy.openai_errors import status_of, type_of
from tally.proxy.refusals import is_refusal, record_refusal
from tally.proxy.relay import answer
from tally.tracking.config import TrackingConfig
from tally.tracking.identifiers import attach, stamp
from tally.tracking.store import active_config
from tally.usage.call import CallRecord


def proxy(
    pipeline: Pipeline,
    endpoint: Endpoint,
    key: AuthenticatedKey,
    body: Any,
    header_user: str | None,
    request_id: str,
    verified: EndUserClaim | None = None,
    passed_on: dict[str, str] | None = None,
    incoming: Mapping[str, str] | None = None,
) -> ProxyResponse:
    """Forward one call to ``endpoint``; raise a TallyError for anything refused up front.
    ``verified``: the end user of a verified end-user token (tally.verification.tokens),
    if any; ``passed_on``: the client's headers that go to the upstream as sent
    (tally.proxy.upstream.PASSED_ON); ``incoming``: the request's headers, read for a
    caller's ``traceparent`` when traces are on. Answers and errors carry the end user's
    X-RateLimit-* headers."""
    call = Call(pipeline, endpoint, key, body, request_id, passed_on)
    if pipeline.tracer is not None:
        _trace(call, incoming)
    try:
        result = _forward(call, header_user, verified)
    except TallyError as exc:
        _refused(call, exc, header_user, verified)
        raise
    except Exception as exc:
        if call.span is not None:  # a fault of Tally's own: its span ends as the 500
            call.end_span(500, type(exc).__name__)
        raise
    result.headers.update(call.admission.headers)
    return result


def refuse_unread(
    pipeline: Pipeline,
    endpoint: Endpoint,
    key: AuthenticatedKey,
    error: TallyError,
    header_user: str | None,
    request_id: str,
    verified: EndUserClaim | None = None,
    incoming: Mapping[str, str] | None = None,
) -> None:
    """A call whose body could not be read (too large, not JSON): its refusal is
    recorded and ``error`` gets the end user's X-RateLimit-* headers, as in ``proxy``."""
    call = Call(pipeline, endpoint, key, None, request_id)
    if pipeline.tracer is not None:
        _trace(call, incoming)
    _refused(call, error, header_user, verified)


def _trace(call: Call, incoming: Mapping[str, str] | None) -> None:
    """Open ``call``'s span (in the caller's trace when ``incoming`` carries one); the
    upstream call carries its trace context on."""
    call.span = call.pipeline.tracer.start(
        call.endpoint.operation, call.body, call.key.name, call.request_id, incoming
    )
    call.passed_on = call.span.upstream_headers(call.passed_on)


def _refused(
    call: Call, exc: TallyError, header_user: str | None, verified: EndUserClaim | None
) -> None:
    """``call`` failed with ``exc``: a refusal of Tally's own is counted in the metrics
    and recorded as a request row (tally.proxy.refusals); ``exc`` gets the headers."""
    pipeline, key, body = call.pipeline, call.key, call.body
    if isinstance(exc, RateLimited):  # a limit or budget refused it
        metrics.record_refusal(exc.code)
    headers = call.admission.headers
    claim = call.claim
    if not headers and status_of(exc) < 500:  # refused before the admission
        claim = claim or _claim_of(key, body, header_user, verified)
        headers = peek_headers(pipeline.limits, key, claim) if claim is not False else {}
    exc.headers = {**headers, **exc.headers}
    if is_refusal(exc):
        record_refusal(call, exc, claim or None)
    if call.span is not None:  # not ended yet: nothing was relayed (a refusal, an outage)
        call.end_span(status_of(exc), exc.code or type_of(exc))


def limit_headers(
    pipeline: Pipeline,
    key: AuthenticatedKey,
    body: Any,
    header_user: str | None,
    verified: EndUserClaim | None = None,
) -> dict[str, str]:
    """The end user's X-RateLimit-* headers for an answer that does not go upstream (a
    request refused before admission, the model list), when the user can be told from
    the request at all; nothing is counted."""
    claim = _claim_of(key, body, header_user, verified)
    return {} if claim is False else peek_headers(pipeline.limits, key, claim)


def _claim_of(
    key: AuthenticatedKey, body: Any, header_user: str | None, verified: EndUserClaim | None
) -> EndUserClaim | None | Literal[False]:
    """The end user the request names (None: anonymous), or False when it names one
    badly (a bad identity: who it is cannot be told)."""
    try:
        return resolve_end_user(
            body if isinstance(body, dict) else {}, header_user, key.bound_external_id, verified
        )
    except TallyError:
        return False


def _forward(call: Call, header_user: str | None, verified: EndUserClaim | None):
    """Validate, resolve, prepare and admit ``call``, then send it upstream."""
    pipeline, body = call.pipeline, call.body
    call.endpoint.validate(body)
    call.claim = resolve_end_user(body, header_user, call.key.bound_external_id, verified)
    # limits on Redis: the admission's round trip checks the cached config's version
    checked = checks_config(pipeline.limits, call.key, call.claim)
    peeked = pipeline.cache.peek("config") if checked else None
    try:
        _admitted(call, peeked)
    except StaleConfig:  # only with a peeked config: read it as usual, once
        _admitted(call, None)
    try:
        response = pipeline.upstream.post(
            call.endpoint.path, call.upstream_body, stream=call.stream, headers=call.passed_on
        )
    except UpstreamError as exc:
        call.finish(exc)
        raise
    return answer(call, response)


def _admitted(call: Call, peeked: tuple[TrackingConfig, int] | None) -> None:
    """``call`` prepared under the tracking config (``peeked``: the cached one and its
    version, checked by the admission) and admitted; a 429 here: nothing counted."""
    pipeline = call.pipeline
    if peeked is not None:
        config, version = peeked
    else:
        config, version = active_config(pipeline.sessions, pipeline.cache), None
    _prepare(call, config)
    admit(
        pipeline.limits, call.key, call.claim, call.admission, version=version, demand=call.demand
    )


def _prepare(call: Call, config: TrackingConfig) -> None:
    """``call`` under ``config``: its upstream identifier (or its refusal), the body for
    the upstream, and the record its row will be written from."""
    pipeline, endpoint, body, claim = call.pipeline, call.endpoint, call.body, call.claim
    identifier = stamp(config, claim, pipeline.hash_key)
    profile = claim.profile if claim is not None and claim.carries_profile else None
    call.upstream_body = attach(body, config, identifier, profile, embeddings=endpoint.embeddings)
    call.stream = endpoint.streams and body.get("stream") is True
    call.hide_usage = endpoint.prepare_stream(call.upstream_body) if call.stream else False
    is_demo = pipeline.upstream.is_demo
    call.record = CallRecord(
        request_id=call.request_id,
        api_key_id=call.key.id,
        claim=claim,
        identifier=identifier,
        revision_id=config.revision_id,
        model=body.get("model"),
        stream=call.stream,
        endpoint=endpoint.name,
        is_demo=is_demo,
    )
    call.reconcilable = call.stream and config.dialect == "openrouter" and not is_demo
