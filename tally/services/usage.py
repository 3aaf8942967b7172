"""The request log: one row per call that reached (or tried to reach) the upstream."""

from __future__ import annotations

import atexit
import functools
import logging
import queue
import threading
import time
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

from sqlalchemy import bindparam, insert, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session, sessionmaker

from tally.db import utcnow
from tally.identity import EndUserClaim
from tally.models import ApiKey, EndUser, RequestLog, UpstreamIdentifier
from tally.services.identities import PROFILE_COLUMNS

log = logging.getLogger(__name__)
WRITER_INFO_KEY = "tally.usage_writer"
_STOP = object()


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
    record_calls(session, [(call, outcome, utcnow())])


def record_calls(session: Session, calls: list[tuple[CallRecord, Outcome, datetime]]) -> None:
    """Write several calls, each with the time it ended, in one transaction.

    The rows are exactly those that ``record_call`` one call at a time would leave:
    an end user or identifier seen several times is upserted once, with the first
    sighting's ``first_seen``, the last one's ``last_seen`` and the count added up.
    Statements are Core ``executemany`` calls, a handful per batch whatever its size:
    per-row ORM work cost more CPU than the rest of the request.
    """
    conn = session.connection()
    sql = _statements(conn.dialect.name)
    user_ids = _upsert_end_users(conn, sql, calls)
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
                "identifier_id": identifier_ids.get(call.identifier),
                "endpoint": "chat.completions",
                "model": outcome.model or call.model,
                "stream": call.stream,
                "status": outcome.status,
                "error_code": outcome.error_code,
                "error_message": (outcome.error_message or None) and outcome.error_message[:2000],
                "prompt_tokens": _int(usage.get("prompt_tokens")),
                "completion_tokens": _int(usage.get("completion_tokens")),
                "total_tokens": _int(usage.get("total_tokens")),
                "cost": _float(usage.get("cost")),
                "latency_ms": outcome.latency_ms,
                "ttft_ms": outcome.ttft_ms,
                "generation_id": outcome.generation_id,
                "is_demo": call.is_demo,
            }
        )
        if call.api_key_id is not None:
            last_used[call.api_key_id] = max(now, last_used.get(call.api_key_id, now))
    conn.execute(sql.insert_rows, rows)
    if last_used:
        conn.execute(sql.touch_key, [{"key_id": k, "now": now} for k, now in last_used.items()])
    session.commit()


class _Statements:
    """The batch statements for one SQL dialect, built once."""

    def __init__(self, dialect: str):
        users, idents = EndUser.__table__, UpstreamIdentifier.__table__
        keys, log_table = ApiKey.__table__, RequestLog.__table__
        module = postgresql if dialect == "postgresql" else sqlite
        upsert = module.insert(users)
        self.upsert_users = upsert.on_conflict_do_update(
            index_elements=[users.c.external_id], set_={"last_seen": upsert.excluded.last_seen}
        )
        self.user_ids = select(users.c.external_id, users.c.id).where(
            users.c.external_id.in_(bindparam("names", expanding=True))
        )
        upsert = module.insert(idents)
        self.upsert_identifiers = upsert.on_conflict_do_update(
            index_elements=[idents.c.identifier],
            set_={
                "last_seen": upsert.excluded.last_seen,
                "request_count": idents.c.request_count + upsert.excluded.request_count,
            },
        )
        self.identifier_ids = select(idents.c.identifier, idents.c.id).where(
            idents.c.identifier.in_(bindparam("names", expanding=True))
        )
        self.insert_rows = insert(log_table)
        self.touch_key = (
            update(keys)
            .where(keys.c.id == bindparam("key_id"))
            .values(last_used_at=bindparam("now"))
        )
        self.module = module


@functools.cache
def _statements(dialect: str) -> _Statements:
    return _Statements(dialect)


def _upsert_end_users(conn, sql: _Statements, calls) -> dict[str, int]:
    seen: dict[str, list] = {}  # external_id -> [first_seen, last_seen, is_demo, fields]
    for call, _outcome, now in calls:
        if call.claim is None:
            continue
        profile = call.claim.profile if call.claim.source == "identity" else None
        fields = {PROFILE_COLUMNS[k]: v for k, v in (profile or {}).items() if k in PROFILE_COLUMNS}
        entry = seen.setdefault(call.claim.external_id, [now, now, call.is_demo, {}])
        entry[1] = max(entry[1], now)
        entry[3].update(fields)
    if not seen:
        return {}
    plain = []
    for external_id, (first, last, is_demo, fields) in seen.items():
        values = {"external_id": external_id, "first_seen": first, "last_seen": last}
        values["is_demo"] = is_demo
        if not fields:
            plain.append(values)
            continue
        # a profile update names its own columns: one statement for this user
        stmt = sql.module.insert(EndUser.__table__).values(**values, **fields)
        conn.execute(
            stmt.on_conflict_do_update(
                index_elements=["external_id"], set_={"last_seen": last, **fields}
            )
        )
    if plain:
        conn.execute(sql.upsert_users, plain)
    return dict(conn.execute(sql.user_ids, {"names": list(seen)}).all())


def _upsert_identifiers(conn, sql: _Statements, calls, user_ids: dict[str, int]) -> dict[str, int]:
    seen: dict[str, dict] = {}
    for call, _outcome, now in calls:
        if call.claim is None or call.identifier is None:
            continue
        entry = seen.get(call.identifier)
        if entry is None:
            seen[call.identifier] = {
                "identifier": call.identifier,
                "user_id": user_ids[call.claim.external_id],
                "revision_id": call.revision_id,
                "first_seen": now,
                "last_seen": now,
                "request_count": 1,
            }
        else:
            entry["last_seen"] = max(entry["last_seen"], now)
            entry["request_count"] += 1
    if not seen:
        return {}
    conn.execute(sql.upsert_identifiers, list(seen.values()))
    return dict(conn.execute(sql.identifier_ids, {"names": list(seen)}).all())


def record_call_safely(sessions: sessionmaker, call: CallRecord, outcome: Outcome) -> None:
    """record_call in its own session; a database failure is logged, never raised into
    a response that is already on its way to the client.

    When the session factory carries a :class:`UsageWriter` (production), the row is
    handed to it and written in the background, after the answer has gone out.
    """
    writer = sessions.kw.get("info", {}).get(WRITER_INFO_KEY)
    if writer is not None:
        writer.submit(call, outcome)
        return
    with sessions() as session:
        try:
            record_call(session, call, outcome)
        except Exception:
            session.rollback()
            log.exception("could not record request %s", call.request_id)


class UsageWriter:
    """Writes request rows on a background thread, batched into one transaction each.

    Nothing then stands between the upstream's last byte and the client's: the row is
    queued when the answer ends, with the time the call ended, and committed a moment
    later. ``linger`` (50 ms at most) gathers a batch: one write per batch costs the
    request threads less CPU, and less waiting for the GIL, than one write per row.
    ``close`` (at exit: gunicorn's graceful shutdown ends in ``sys.exit``) writes
    whatever is still queued. A batch that fails is retried one row at a time, so one
    bad row cannot take others down with it.
    """

    def __init__(self, sessions: sessionmaker, max_batch: int = 500, linger: float = 0.05):
        self._sessions = sessions
        self._max_batch = max_batch
        self._linger = linger
        self._queue: queue.Queue = queue.Queue()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def submit(self, call: CallRecord, outcome: Outcome) -> None:
        """Queue one call's row (the outcome is copied: the caller may keep its own)."""
        self._queue.put((call, replace(outcome), utcnow()))
        if self._thread is None or not self._thread.is_alive():
            self._start()

    def flush(self, timeout: float = 10.0) -> bool:
        """Wait until every row queued so far is committed; False on timeout."""
        deadline = time.monotonic() + timeout
        with self._queue.all_tasks_done:
            while self._queue.unfinished_tasks:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._queue.all_tasks_done.wait(remaining)
        return True

    def close(self, timeout: float = 30.0) -> None:
        """Write what is queued and stop the thread."""
        if self._thread is not None and self._thread.is_alive():
            self._queue.put(_STOP)
            self._thread.join(timeout)

    def _start(self) -> None:
        with self._lock:
            if self._thread is not None and self._thread.is_alive():
                return
            self._thread = threading.Thread(target=self._run, name="tally-usage", daemon=True)
            self._thread.start()
            atexit.register(self.close)

    def _run(self) -> None:
        while True:
            batch = [self._queue.get()]
            deadline = time.monotonic() + self._linger
            while len(batch) < self._max_batch and batch[-1] is not _STOP:
                remaining = deadline - time.monotonic()
                try:
                    batch.append(
                        self._queue.get(timeout=remaining)
                        if remaining > 0
                        else self._queue.get_nowait()
                    )
                except queue.Empty:
                    break
            stop = _STOP in batch
            calls = [item for item in batch if item is not _STOP]
            try:
                if calls:
                    self._write(calls)
            finally:
                for _ in batch:
                    self._queue.task_done()
            if stop:
                return

    def _write(self, calls) -> None:
        with self._sessions() as session:
            try:
                record_calls(session, calls)
                return
            except Exception:
                session.rollback()
                log.warning("batch of %d request rows failed; writing one by one", len(calls))
        for item in calls:
            with self._sessions() as session:
                try:
                    record_calls(session, [item])
                except Exception:
                    session.rollback()
                    log.exception("could not record request %s", item[0].request_id)


def install_writer(sessions: sessionmaker) -> UsageWriter:
    """Make ``record_call_safely`` hand rows from ``sessions`` to a background writer."""
    writer = UsageWriter(sessions)
    sessions.kw.setdefault("info", {})[WRITER_INFO_KEY] = writer
    return writer


def usage_writer(sessions: sessionmaker) -> UsageWriter | None:
    """The background writer of ``sessions``, if it has one."""
    return sessions.kw.get("info", {}).get(WRITER_INFO_KEY)


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
