"""Arranging and reading the database as the tests do: a tracking-config revision, the
rows Tally wrote (request log, end users, identifiers), and traffic recorded as the API
records it."""

from __future__ import annotations

import uuid

from sqlalchemy import select

from tally.end_users.claims import EndUserClaim
from tally.models import EndUser, RequestLog, UpstreamIdentifier
from tally.tracking.store import active_config, save_config
from tally.usage.call import CallRecord, Outcome
from tally.usage.records import record_calls


def configure(flask_app, **fields) -> int:
    """Save a tracking-config revision with ``fields`` (text values); return its id."""
    with flask_app.extensions["tally"].sessions() as session:
        config = active_config(session).with_fields(fields)
        return save_config(session, config, "test").id


def request_rows(flask_app) -> list[RequestLog]:
    """Every request row, oldest first, with user and identifier loaded."""
    with flask_app.extensions["tally"].sessions() as session:
        found = session.scalars(select(RequestLog).order_by(RequestLog.id)).all()
        for row in found:
            _ = row.user, row.identifier
        return list(found)


def only_refusal(flask_app, response, status: int, code: str, endpoint="chat.completions"):
    """The one request row, the refusal ``response`` answered: checked to be refused with
    ``status`` and ``code`` at ``endpoint``, with no identifier, no tokens and no cost."""
    [row] = request_rows(flask_app)
    assert row.request_id == response.headers["X-Request-Id"]
    assert (row.refused, row.status, row.error_code, row.endpoint) == (True, status, code, endpoint)
    assert row.identifier_id is None
    assert (row.prompt_tokens, row.completion_tokens, row.total_tokens) == (None, None, None)
    assert (row.cached_tokens, row.cost, row.cost_source) == (None, None, None)
    return row


def end_users(flask_app) -> list[EndUser]:
    """Every end user, oldest first."""
    with flask_app.extensions["tally"].sessions() as session:
        return list(session.scalars(select(EndUser).order_by(EndUser.id)))


def identifiers(flask_app) -> list[UpstreamIdentifier]:
    """Every upstream identifier recorded, oldest first, with its user loaded."""
    with flask_app.extensions["tally"].sessions() as session:
        found = session.scalars(select(UpstreamIdentifier).order_by(UpstreamIdentifier.id)).all()
        for row in found:
            _ = row.user
        return list(found)


def record_traffic(session, calls: list[dict]) -> None:
    """Record calls as the API does (``record_calls``: rows and daily totals), each a dict
    of ``when`` and optionally ``user`` (an external id), ``model``, ``status``,
    ``tokens`` (total), ``cost``, ``request_id``."""
    batch = []
    for n, spec in enumerate(calls):
        user = spec.get("user")
        call = CallRecord(
            request_id=spec.get("request_id") or f"req-{uuid.uuid4().hex[:12]}-{n}",
            api_key_id=None,
            claim=EndUserClaim(user, "user") if user else None,
            identifier=None,
            revision_id=None,
            model=spec.get("model"),
            stream=False,
        )
        usage = {"total_tokens": spec.get("tokens"), "cost": spec.get("cost")}
        outcome = Outcome(status=spec.get("status", 200), usage=usage)
        batch.append((call, outcome, spec["when"]))
    record_calls(session, batch)


def served_rows(flask_app) -> list[RequestLog]:
    """The request rows of calls that went upstream (not refused), oldest first."""
    return [row for row in request_rows(flask_app) if not row.refused]
