"""The request log: one row per call that reached (or tried to reach) the upstream, and
one per call Tally refused once its key was accepted (marked ``refused``)."""

from __future__ import annotations

import functools
import logging
from datetime import datetime, timedelta

from sqlalchemy.orm import Session

from tally.db import utcnow
from tally.end_users.directory import PROFILE_COLUMNS
from tally.models import EndUser
from tally.sinks.outbox import enqueue_usage
from tally.usage.bulk import execute_many, insert_new, select_in
from tally.usage.call import ESTIMATED, UPSTREAM, CallRecord, Outcome
from tally.usage.numbers import as_float, count
from tally.usage.records_sql import Statements, statements
from tally.usage.totals import add_to_totals

log = logging.getLogger(__name__)
LOOKUP_CHUNK = 10_000  # names per id lookup statement
# OpenRouter's generation endpoint answers 404 for a few seconds after a generation ends
FIRST_WAIT = timedelta(seconds=3)


def record_call(session: Session, call: CallRecord, outcome: Outcome) -> set[str]:
    """Write the end user, the identifier sent and the request row, in one transaction."""
    return record_calls(session, [(call, outcome, utcnow())])


def record_calls(
    session: Session, calls: list[tuple[CallRecord, Outcome, datetime]], seeded: bool = False
) -> set[str]:
    """Write several calls, each with the time it ended, in one transaction; return the
    request ids whose rows were new. ``seeded``: the calls are ``dev seed``'s, and the
    end users they make are demo users (``EndUser.is_demo``); a real end user answered
    by the demo upstream is no demo user (their request rows are ``is_demo``).

    The rows are exactly those that ``record_call`` one call at a time would leave:
    an end user or identifier seen several times is upserted once, with the first
    sighting's ``first_seen``, the last one's ``last_seen`` and the count added up.
    Statements are Core ``executemany`` calls, a handful per batch whatever its size:
    per-row ORM work cost more CPU than the rest of the request.

    Idempotent: a call whose ``request_id`` already has a row (a spooled batch replayed,
    a frame sent again after the writer process died before acknowledging it) is
    skipped, and only the rows actually inserted count towards ``request_count``.
    """
    conn = session.connection()
    sql = statements(conn.dialect.name)
    user_ids = _upsert_end_users(conn, sql, calls, seeded)
    identifier_ids = _upsert_identifiers(conn, sql, calls, user_ids)
    last_used: dict[int, datetime] = {}
    rows = []
    for call, outcome, now in calls:
        external_id = call.claim.external_id if call.claim is not None else None
        usage = outcome.usage or {}
        rows.append(
            {
                "request_id": call.request_id,
                "created_at": now,
                "api_key_id": call.api_key_id,
                "user_id": user_ids.get(external_id),
                "identifier_id": identifier_ids.get(_sent(call, user_ids)),
                "endpoint": call.endpoint,
                "model": outcome.model or call.model,
                "stream": call.stream,
                "status": outcome.status,
                "error_code": outcome.error_code,
                "error_message": (outcome.error_message or None) and outcome.error_message[:2000],
                "prompt_tokens": count(usage.get("prompt_tokens")),
                "completion_tokens": count(usage.get("completion_tokens")),
                "total_tokens": count(usage.get("total_tokens")),
                "cached_tokens": count(usage.get("cached_tokens")),
                "cost": (cost := as_float(usage.get("cost"))),
                "cost_source": outcome.cost_source or (UPSTREAM if cost is not None else None),
                "reconcile_after": _reconcile_after(outcome, now),
                "latency_ms": outcome.latency_ms,
                "ttft_ms": outcome.ttft_ms,
                "generation_id": outcome.generation_id,
                "is_demo": call.is_demo,
                "refused": outcome.refused,
            }
        )
        if call.api_key_id is not None:
            last_used[call.api_key_id] = max(now, last_used.get(call.api_key_id, now))
    # --- idempotence (issue 12): insert what is new, count only that -----------------
    inserted = _insert_rows(conn, sql, rows)
    _count_requests(conn, sql, calls, user_ids, identifier_ids, inserted)
    # Daily totals, from the rows actually inserted (a replayed batch adds nothing), in
    # this same transaction.
    new_rows = [row for row in rows if row["request_id"] in inserted]
    add_to_totals(conn, new_rows)
    # The sinks' events of the new rows, in this same transaction (tally.sinks.outbox;
    # no sink: one cached check). A replayed row is not new: no second event.
    if new_rows:
        enqueue_usage(conn, new_rows)
    # ----------------------------------------------------------------------------------
    if last_used:
        touched = [{"key_id": k, "now": now} for k, now in last_used.items()]
        execute_many(conn, sql.touch_key, touched)
    session.commit()
    return inserted


def _upsert_end_users(conn, sql: Statements, calls, seeded: bool) -> dict[str, int]:
    seen: dict[str, list] = {}  # external_id -> [first_seen, last_seen, is_demo, fields]
    for call, _outcome, now in calls:
        if call.claim is None:
            continue
        profile = call.claim.profile if call.claim.carries_profile else None
        fields = {PROFILE_COLUMNS[k]: v for k, v in (profile or {}).items() if k in PROFILE_COLUMNS}
        entry = seen.setdefault(call.claim.external_id, [now, now, seeded, {}])
        entry[1] = max(entry[1], now)
        entry[3].update(fields)
    if not seen:
        return {}
    plain, profiled = [], {}
    # Rows are upserted in key order: two batches that share users (a spool replay beside
    # live writes, two instances) then lock them in the same order and cannot deadlock.
    for external_id, (first, last, is_demo, fields) in sorted(seen.items()):
        values = {"external_id": external_id, "first_seen": first, "last_seen": last}
        values["is_demo"] = is_demo
        if fields:
            # one statement per set of profile columns a batch updates, not per user
            profiled.setdefault(tuple(sorted(fields)), []).append(values | fields)
        else:
            plain.append(values)
    for columns, params in profiled.items():
        execute_many(conn, _upsert_profiles(sql.module, columns), params)
    execute_many(conn, sql.upsert_users, plain)
    return _ids(conn, sql.user_ids, list(seen))


@functools.cache
def _upsert_profiles(module, columns: tuple[str, ...]):
    """Upsert end users with these profile columns: a profile update names its own."""
    stmt = module.insert(EndUser.__table__)
    names = ("last_seen", *columns)
    return stmt.on_conflict_do_update(
        index_elements=["external_id"], set_={name: stmt.excluded[name] for name in names}
    )


def _sent(call: CallRecord, user_ids: dict[str, int]) -> tuple[str, int] | None:
    """The (identifier, user id) pair ``call`` sent upstream, None when it sent none."""
    if call.claim is None or call.identifier is None:
        return None
    return call.identifier, user_ids[call.claim.external_id]


def _upsert_identifiers(
    conn, sql: Statements, calls, user_ids: dict[str, int]
) -> dict[tuple[str, int], int]:
    """Upsert one row per (identifier, user) the batch sent: two users whose ids collide
    on one identifier each have theirs. Returns the rows' ids by that pair."""
    seen: dict[tuple[str, int], dict] = {}
    for call, _outcome, now in calls:
        pair = _sent(call, user_ids)
        if pair is None:
            continue
        entry = seen.get(pair)
        if entry is None:
            seen[pair] = {
                "identifier": call.identifier,
                "user_id": pair[1],
                "revision_id": call.revision_id,
                "first_seen": now,
                "last_seen": now,
                # every call counted here; _count_requests takes back those whose row
                # was already there (a replay): one statement less per batch
                "request_count": 1,
            }
        else:
            entry["last_seen"] = max(entry["last_seen"], now)
            entry["request_count"] += 1
    if not seen:
        return {}
    execute_many(conn, sql.upsert_identifiers, [seen[pair] for pair in sorted(seen)])  # key order
    names = sorted({identifier for identifier, _user_id in seen})
    found: dict[tuple[str, int], int] = {}
    for start in range(0, len(names), LOOKUP_CHUNK):  # a statement's parameters are bounded
        rows = select_in(conn, sql.identifier_ids, names[start : start + LOOKUP_CHUNK])
        # an identifier shared with users outside this batch brings their rows too
        found.update({(name, user): id_ for name, user, id_ in rows if (name, user) in seen})
    return found


def _ids(conn, lookup, names: list[str]) -> dict[str, int]:
    """``lookup``'s ids of ``names``, in chunks: a statement may carry at most 32,766
    parameters on SQLite and 65,535 on PostgreSQL, and a batch can name more."""
    found: dict[str, int] = {}
    for start in range(0, len(names), LOOKUP_CHUNK):
        chunk = names[start : start + LOOKUP_CHUNK]
        found.update(select_in(conn, lookup, chunk))
    return found


def _insert_rows(conn, sql: Statements, rows: list[dict]) -> set[str]:
    """Insert the rows whose request id is new; return those ids.

    ``INSERT … ON CONFLICT (request_id) DO NOTHING`` skips the others. On SQLite each
    row's statement says whether it inserted one (tally.usage.bulk.insert_new: a row at
    a time through the driver costs less than SQLAlchemy's RETURNING batches). On
    PostgreSQL an executemany with RETURNING becomes multi-row statements that psycopg
    parses anew every time: 3x the CPU per row of a plain executemany (0.19 against 0.06
    ms a row, 200-row batches). There the plain insert runs, then one indexed query asks
    which of the batch's rows this transaction created (``xmin``, PostgreSQL >= 13): as
    exact, and a row another transaction inserted concurrently is not among them.
    """
    if sql.new_rows is None:
        return insert_new(conn, sql.insert_rows, rows, "request_id")
    execute_many(conn, sql.insert_rows, rows)
    ids = [row["request_id"] for row in rows]
    inserted: set[str] = set()
    for start in range(0, len(ids), LOOKUP_CHUNK):  # a statement's parameters are bounded
        chunk = {"ids": ids[start : start + LOOKUP_CHUNK]}
        inserted.update(conn.execute(sql.new_rows, chunk).scalars())
    return inserted


def _count_requests(
    conn, sql: Statements, calls, user_ids, identifier_ids, inserted: set[str]
) -> None:
    """Take back from each identifier row's ``request_count`` the calls whose request row
    was already there (a spooled batch replayed): the upsert counted every call, so only
    the rows really inserted stay counted. Nothing to do for a batch of new rows."""
    if len(inserted) == len(calls):
        return
    counts: dict[int, int] = {}
    for call, _outcome, _now in calls:
        ident_id = identifier_ids.get(_sent(call, user_ids))
        if ident_id is not None and call.request_id not in inserted:
            counts[ident_id] = counts.get(ident_id, 0) - 1
    if counts:
        ordered = sorted(counts.items())  # the identifiers' order, as locked above
        execute_many(conn, sql.count_requests, [{"ident_id": i, "n": n} for i, n in ordered])


def _reconcile_after(outcome: Outcome, ended: datetime) -> datetime | None:
    """When the reconciler first asks for an estimated call's generation (None: never)."""
    return ended + FIRST_WAIT if outcome.cost_source == ESTIMATED and outcome.reconcile else None
