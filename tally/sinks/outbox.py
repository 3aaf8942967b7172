"""The outbox: events enter ``sink_events`` in the transaction that makes them (the usage
writer's batch, a reconciliation, an alert), one row per (sink, event id), and
``ON CONFLICT DO NOTHING`` on that pair makes a replayed batch add nothing.

With no sink, the usage writer pays one cached check per batch (:func:`sinks_for`: a
query at most once a second per process, and at once after a sink is added or removed
anywhere: the caches' shared version, tally.cache, which a commit changing ``sinks``
bumps, is read with each check once :func:`watch` gave it).
"""

from __future__ import annotations

import json
import threading
import time
import weakref
from collections.abc import Iterable
from datetime import datetime
from typing import Any, NamedTuple

from sqlalchemy import Text, cast, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection, Engine

from tally.db import utcnow
from tally.models import ApiKey, EndUser, RequestLog, Sink, SinkEvent
from tally.sinks import events as ev
from tally.versions import Version

TTL = 1.0  # seconds a process trusts its list of sinks
# engine -> (expiry, version, sinks)
_cache: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_lock = threading.Lock()
_version: Version | None = None


class SinkRef(NamedTuple):
    """What the writer needs to know of a sink."""

    id: int
    kind: str
    events: frozenset[str]


def watch(version: Version | None) -> None:
    """Check the deployment's cache version (tally.cache) with every lookup: a sink added
    or removed by any process is seen by the next batch."""
    global _version
    _version = version


def _read_version() -> int | None:
    if _version is None:
        return None
    try:
        return _version.read()
    except (ValueError, OSError):  # unmapped (a closed runtime): the TTL alone then
        return None


def invalidate() -> None:
    """Forget the cached sinks (a sink was added or removed in this process)."""
    with _lock:
        _cache.clear()


def sinks_for(conn: Connection | Engine, events: str) -> tuple[SinkRef, ...]:
    """The sinks that take ``events`` (``usage`` or ``alerts``), cached for :data:`TTL`
    (``conn``: a connection in use, or the engine, which is asked only when the cached
    list is stale)."""
    return tuple(ref for ref in _sinks(conn) if events in ref.events)


def any_sinks(engine: Engine) -> bool:
    """Whether there is any sink at all (the same cached list)."""
    return bool(_sinks(engine))


def _sinks(conn: Connection | Engine) -> tuple[SinkRef, ...]:
    key = conn if isinstance(conn, Engine) else conn.engine
    now = time.monotonic()
    entry = _cache.get(key)
    version = _read_version()
    if entry is None or entry[0] < now or entry[1] != version:
        query = select(Sink.id, Sink.kind, Sink.events)
        if isinstance(conn, Engine):
            with conn.connect() as own:
                rows = own.execute(query).all()
        else:
            rows = conn.execute(query).all()
        refs = tuple(SinkRef(i, k, frozenset(e.split(","))) for i, k, e in rows)
        with _lock:
            _cache[key] = (now + TTL, version, refs)
        return refs
    return entry[2]


def _insert(conn: Connection, rows: list[dict[str, Any]]) -> None:
    if not rows:
        return
    module = postgresql if conn.dialect.name == "postgresql" else sqlite
    table = SinkEvent.__table__
    stmt = module.insert(table).on_conflict_do_nothing(
        index_elements=[table.c.sink_id, table.c.event_id]
    )
    conn.execute(stmt, rows)


def _event(sink: SinkRef, event_id: str, type_: str, payload: dict, now: datetime) -> dict:
    return {
        "sink_id": sink.id,
        "event_id": event_id,
        "type": type_,
        "payload": payload,
        "created_at": now,
        "attempts": 0,
        "next_attempt_at": now,
    }


def _people(conn: Connection, rows: Iterable[dict[str, Any]]) -> tuple[dict, dict]:
    """The end users (id -> (external id, metadata)) and keys (id -> name) of ``rows``."""
    user_ids = sorted({r["user_id"] for r in rows if r.get("user_id") is not None})
    key_ids = sorted({r["api_key_id"] for r in rows if r.get("api_key_id") is not None})
    users: dict[int, tuple[str, Any]] = {}
    keys: dict[int, str] = {}
    for start in range(0, len(user_ids), 10_000):
        chunk = user_ids[start : start + 10_000]
        query = select(EndUser.id, EndUser.external_id, EndUser.profile_metadata)
        for id_, external_id, metadata in conn.execute(query.where(EndUser.id.in_(chunk))):
            users[id_] = (external_id, metadata)
    if key_ids:
        query = select(ApiKey.id, ApiKey.name).where(ApiKey.id.in_(key_ids))
        keys = dict(conn.execute(query).all())
    return users, keys


def customer_of(metadata: Any) -> str | None:
    """The Stripe customer id in an end user's identity metadata (a list of objects, or
    one object), if any."""
    items = metadata if isinstance(metadata, list) else [metadata]
    for item in items:
        if isinstance(item, dict):
            value = item.get(ev.STRIPE_CUSTOMER_KEY)
            if isinstance(value, str) and value:
                return value
    return None


def usage_events(
    conn: Connection,
    sinks: Iterable[SinkRef],
    rows: list[dict[str, Any]],
    type_: str = ev.USAGE,
    suffix: str = "",
) -> list[dict[str, Any]]:
    """The outbox rows of ``rows``' calls (request rows as the writer has them) for
    ``sinks``; refused calls never reached the upstream and are not sent."""
    sinks = list(sinks)
    rows = [row for row in rows if not row.get("refused")]
    if not sinks or not rows:
        return []
    users, keys = _people(conn, rows)
    now = utcnow()
    out = []
    for row in rows:
        external_id, metadata = users.get(row.get("user_id"), (None, None))
        key_name = keys.get(row.get("api_key_id"))
        customer = customer_of(metadata)
        event_id = row["request_id"] + suffix
        for sink in sinks:
            payload = ev.usage_payload(
                sink.kind, row, event_id, type_, external_id, key_name, customer
            )
            if payload is not None:
                out.append(_event(sink, event_id, type_, payload, now))
    return out


def enqueue_usage(conn: Connection, rows: list[dict[str, Any]]) -> int:
    """Put the events of a batch's newly inserted request rows in the outbox (the usage
    writer, in its transaction); returns how many. No usage sink: one cached check."""
    sinks = sinks_for(conn, ev.USAGE_EVENTS)
    if not sinks:
        return 0
    out = usage_events(conn, sinks, rows)
    _insert(conn, out)
    return len(out)


def enqueue_corrected(conn: Connection, row: dict[str, Any]) -> int:
    """A reconciled call's ``<request id>.corrected`` event, with its corrected figures
    (``row``: the request row after the correction), in the reconciler's transaction."""
    sinks = sinks_for(conn, ev.USAGE_EVENTS)
    if not sinks:
        return 0
    out = usage_events(conn, sinks, [row], ev.CORRECTED, ".corrected")
    _insert(conn, out)
    return len(out)


def enqueue_alert(conn: Connection, event_id: str, data: dict[str, Any]) -> int:
    """A limit alert for every alert sink; ``event_id`` is unique per scope, limit,
    threshold and window, so an alert crossed twice is sent once."""
    sinks = sinks_for(conn, ev.ALERT_EVENTS)
    now = utcnow()
    out = []
    for sink in sinks:
        payload = ev.alert_payload(sink.kind, event_id, now, data)
        if payload is not None:
            out.append(_event(sink, event_id, ev.THRESHOLD, payload, now))
    _insert(conn, out)
    return len(out)


REPLAY_CHUNK = 1000
_ROW_COLUMNS = (
    "request_id",
    "created_at",
    "user_id",
    "api_key_id",
    "model",
    "endpoint",
    "prompt_tokens",
    "completion_tokens",
    "cached_tokens",
    "total_tokens",
    "cost",
    "cost_source",
    "refused",
)


def replay(conn: Connection, sink: SinkRef, since: datetime) -> int:
    """Put every call since ``since`` in ``sink``'s outbox again, under the same event
    ids (a receiver that dedupes counts each once): an event already there is due again
    (delivered or parked or not), with the figures the row has now. Returns how many."""
    module = postgresql if conn.dialect.name == "postgresql" else sqlite
    table = SinkEvent.__table__
    stmt = module.insert(table)
    stmt = stmt.on_conflict_do_update(
        index_elements=[table.c.sink_id, table.c.event_id],
        set_={
            "payload": stmt.excluded.payload,
            "attempts": 0,
            "next_attempt_at": stmt.excluded.next_attempt_at,
            "delivered_at": None,
            "parked_at": None,
            "last_error": None,
        },
    )
    log = RequestLog.__table__
    query = (
        select(*(log.c[name] for name in _ROW_COLUMNS), log.c.id)
        .where(log.c.created_at >= since, log.c.refused.is_(False))
        .order_by(log.c.created_at, log.c.id)
    )
    total = 0
    last: tuple | None = None
    while True:
        page = query
        if last is not None:
            page = page.where(
                (log.c.created_at > last[0])
                | ((log.c.created_at == last[0]) & (log.c.id > last[1]))
            )
        rows = [dict(r._mapping) for r in conn.execute(page.limit(REPLAY_CHUNK))]
        if not rows:
            return total
        last = (rows[-1]["created_at"], rows[-1]["id"])
        out = usage_events(conn, [sink], rows)
        if out:
            conn.execute(stmt, out)
        total += len(out)


ERASED = "erased"


def forget_user(conn: Connection, internal_id: str) -> int:
    """An erased end user's traces in the outbox (tally.privacy.erasure): events already
    delivered or parked that name them are deleted; those still waiting keep their
    figures (the billing system is owed them) with the id replaced by ``erased``.
    Returns how many events were touched. Reads the table through (erasures are rare)."""
    needle = json.dumps(internal_id)[1:-1]  # as the JSON column's text holds it
    table = SinkEvent.__table__
    query = select(table.c.id, table.c.payload, table.c.next_attempt_at).where(
        cast(table.c.payload, Text).contains(needle, autoescape=True)
    )
    touched = 0
    for id_, payload, waiting in conn.execute(query).all():
        text = json.dumps(payload)
        if needle not in text:
            continue
        touched += 1
        if waiting is None:
            conn.execute(table.delete().where(table.c.id == id_))
        else:
            cleaned = json.loads(text.replace(needle, ERASED))
            conn.execute(table.update().where(table.c.id == id_).values(payload=cleaned))
    return touched
