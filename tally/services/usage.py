"""The request log: one row per call that reached (or tried to reach) the upstream."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import update
from sqlalchemy.orm import Session, sessionmaker

from tally.db import utcnow
from tally.identity import EndUserClaim
from tally.models import ApiKey, RequestLog
from tally.services.identities import upsert_end_user, upsert_identifier

log = logging.getLogger(__name__)


@dataclass
class Outcome:
    """What happened to one call, filled in as the answer goes by."""

    status: int = 200
    error_code: str | None = None
    error_message: str | None = None
    usage: dict[str, Any] | None = None
    generation_id: str | None = None
    model: str | None = None
    latency_ms: float | None = None
    ttft_ms: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def fail(self, status: int, code: str | None, message: str | None) -> None:
        """Mark the call failed; the first failure seen is the one recorded."""
        if self.error_code is None and self.status < 400:
            self.status, self.error_code, self.error_message = status, code, message


@dataclass(frozen=True)
class CallRecord:
    """Who made a call and how it was stamped: known before the upstream answers."""

    request_id: str
    api_key_id: int | None
    claim: EndUserClaim | None
    identifier: str | None
    revision_id: int | None
    model: str | None
    stream: bool
    is_demo: bool = False


def record_call(session: Session, call: CallRecord, outcome: Outcome) -> None:
    """Write the end user, the identifier sent and the request row, in one transaction."""
    now = utcnow()
    user_id = identifier_id = None
    if call.claim is not None:
        profile = call.claim.profile if call.claim.source == "identity" else None
        user_id = upsert_end_user(session, call.claim.external_id, profile, now, call.is_demo)
        if call.identifier is not None:
            identifier_id = upsert_identifier(
                session, call.identifier, user_id, call.revision_id, now
            )
    usage = outcome.usage or {}
    session.add(
        RequestLog(
            request_id=call.request_id,
            created_at=now,
            api_key_id=call.api_key_id,
            user_id=user_id,
            identifier_id=identifier_id,
            model=outcome.model or call.model,
            stream=call.stream,
            status=outcome.status,
            error_code=outcome.error_code,
            error_message=(outcome.error_message or None) and outcome.error_message[:2000],
            prompt_tokens=_int(usage.get("prompt_tokens")),
            completion_tokens=_int(usage.get("completion_tokens")),
            total_tokens=_int(usage.get("total_tokens")),
            cost=_float(usage.get("cost")),
            latency_ms=outcome.latency_ms,
            ttft_ms=outcome.ttft_ms,
            generation_id=outcome.generation_id,
            is_demo=call.is_demo,
        )
    )
    if call.api_key_id is not None:
        session.execute(update(ApiKey).where(ApiKey.id == call.api_key_id).values(last_used_at=now))
    session.commit()


def record_call_safely(sessions: sessionmaker, call: CallRecord, outcome: Outcome) -> None:
    """record_call in its own session; a database failure is logged, never raised into
    a response that is already on its way to the client."""
    with sessions() as session:
        try:
            record_call(session, call, outcome)
        except Exception:
            session.rollback()
            log.exception("could not record request %s", call.request_id)


def _int(value: Any) -> int | None:
    return int(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def _float(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return None
    return None
