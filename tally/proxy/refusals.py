"""Calls Tally refuses once their key was accepted (PRODUCT.md, Limits: "Refusals are
visible"): a body, end user or identifier it cannot take (400), a body too large (413),
a limit or budget used up (429). Each is a request row like any call's, with its status
and code, no tokens, no cost, marked ``refused`` so that nothing counts it as traffic
that reached the upstream: not the limits (tally.limits.rebuild), not the totals'
requests (tally.usage.totals), which exports and the admin API bill.

Not refusals: a missing or bad key and a bad end-user token (401: nobody the key's owner
vouches for made the call; a browser key is public), an outage of Tally's own (503: the
database, the limit storage or the identity provider's keys), and what the upstream
answered (its row is the call's own, written when the answer ended).
"""

from __future__ import annotations

from typing import Any

from tally.end_users.claims import EndUserClaim
from tally.errors import AuthenticationFailed, TallyError, UpstreamError
from tally.proxy.call import Call
from tally.proxy.endpoints.base import elapsed_ms
from tally.proxy.openai_errors import status_of, type_of
from tally.usage.call import CallRecord, Outcome

MAX_MODEL = 255  # the request log's model column
MAX_MESSAGE = 2000  # as tally.usage.records keeps an error message


def is_refusal(error: TallyError) -> bool:
    """True when ``error`` is Tally refusing the client's call (a 4xx of its own)."""
    if isinstance(error, UpstreamError | AuthenticationFailed):
        return False
    return status_of(error) < 500


def record_refusal(call: Call, error: TallyError, claim: EndUserClaim | None) -> None:
    """Hand the refused ``call``'s row to the usage writer: ``claim`` its end user (None
    when unknown or anonymous), its status and code, no identifier (nothing was sent
    upstream), no tokens, no cost. A refusal never updates the end user's profile."""
    pipeline, endpoint, body = call.pipeline, call.endpoint, call.body
    fields = body if isinstance(body, dict) else {}
    if claim is not None:  # kept without its profile, and only when the log can keep it
        storable = _storable(claim.external_id) == claim.external_id
        claim = EndUserClaim(claim.external_id, claim.source) if storable else None
    record = CallRecord(
        request_id=call.request_id,
        api_key_id=call.key.id,
        claim=claim,
        identifier=None,
        revision_id=None,
        model=_model(fields.get("model")),
        stream=endpoint.streams and fields.get("stream") is True,
        endpoint=endpoint.name,
        is_demo=pipeline.upstream.is_demo,
    )
    outcome = Outcome(
        status=status_of(error),
        error_code=error.code or type_of(error),
        error_message=_storable(error.message)[:MAX_MESSAGE],
        latency_ms=elapsed_ms(call.started),
        refused=True,
    )
    pipeline.usage.submit(record, outcome)


def _model(value: Any) -> str | None:
    """The model asked for, when it is a string the log can keep as it is."""
    if not isinstance(value, str) or not value.strip() or len(value) > MAX_MODEL:
        return None
    return value if _storable(value) == value else None


def _storable(text: str) -> str:
    """``text`` without what no database column takes: NUL, lone surrogates."""
    return text.replace("\x00", "").encode("utf-8", "replace").decode("utf-8")
