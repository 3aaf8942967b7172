"""Reconciling estimated costs: an OpenRouter stream that ended before its usage arrived
(cut by the upstream, or the client went away) is recorded with ``cost_source``
``estimated``; later, off the request path, the generation endpoint
(tally.usage.generations) gives its final tokens and cost.

One pass (:func:`reconcile_pass`) takes the estimated rows that are due
(``reconcile_after`` reached, by its index) and asks for each generation:

- found: the row's tokens and cost become the upstream's (``cost_source`` ``reconciled``)
  and the daily totals move by the difference, in one transaction. The row's UPDATE is
  conditional (``WHERE cost_source = 'estimated'``) and the totals move only if it
  changed the row: two reconcilers (several workers or instances, a cron'd CLI beside
  the writer process) never apply one delta twice;
- not yet (404 for a few seconds after a generation, any error): asked again after a
  growing wait (5 s, doubling, at most 30 min); after :data:`MAX_ATTEMPTS` (about 1.7
  hours in all) the row stays estimated for good, logged once.

Each reconciled row is also handed to ``on_reconciled`` (a :class:`Correction`: the
difference and the real figures), which the runtime wires to the limits' counters
(tally.limits.corrections): the token limits and budgets count the real figures too.

It runs in the usage writer process under gunicorn (one per instance), on a thread of
the app otherwise (:func:`start_reconciler`), and as ``flask --app app usage reconcile``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session, sessionmaker

from tally.db import Periodic, utcnow
from tally.models import EndUser, RequestLog
from tally.settings import Settings
from tally.sinks.outbox import enqueue_corrected
from tally.usage.call import ESTIMATED, RECONCILED
from tally.usage.generations import Generation, GenerationClient, GenerationPending
from tally.usage.totals import add_to_totals

log = logging.getLogger(__name__)
MAX_ATTEMPTS = 12
FIRST_RETRY, LONGEST_RETRY = 5.0, 1800.0  # seconds
BATCH = 100  # rows per pass
INTERVAL = 5.0  # seconds between passes of the background reconciler
FIGURES = ("prompt_tokens", "completion_tokens", "cached_tokens", "total_tokens", "cost")
_COLUMNS = (
    "id",
    "request_id",
    "generation_id",
    "reconcile_attempts",
    "created_at",
    "user_id",
    "api_key_id",
    "model",
    "endpoint",
    *FIGURES,
)


@dataclass(frozen=True)
class Correction:
    """A reconciled call, for the limits' counters: who made it, when it ended, what
    changed (new minus estimated), and its real figures."""

    external_id: str | None
    api_key_id: int | None
    ended_at: datetime  # naive UTC, as the row's created_at
    model: str | None
    tokens: int  # prompt + completion tokens, the difference
    cost: float  # USD, the difference
    completion_tokens: int
    call_cost: float


@dataclass
class PassReport:
    """What one pass did: one line per row, and the counts."""

    reconciled: int = 0
    retrying: int = 0
    gave_up: int = 0
    lines: list[str] = field(default_factory=list)

    def summary(self) -> str:
        """One line for the CLI and the log."""
        return (
            f"{self.reconciled} reconciled, {self.retrying} to ask again later, "
            f"{self.gave_up} left estimated for good"
        )


def retry_delay(attempts: int) -> timedelta:
    """The wait after the ``attempts``-th failed ask: 5 s, doubling, at most 30 min."""
    return timedelta(seconds=min(FIRST_RETRY * 2 ** (attempts - 1), LONGEST_RETRY))


def reconcile_pass(
    sessions: sessionmaker,
    client: GenerationClient,
    now: datetime | None = None,
    limit: int = BATCH,
    due_only: bool = True,
    on_reconciled: Callable[[Correction], None] | None = None,
) -> PassReport:
    """Ask for the generations of up to ``limit`` estimated rows due at ``now`` (every
    estimated row still being asked about, with ``due_only`` False) and apply the
    answers; each reconciled row goes to ``on_reconciled`` once committed."""
    now = now or utcnow()
    table = RequestLog.__table__
    query = select(*(table.c[name] for name in _COLUMNS)).where(
        table.c.reconcile_after.is_not(None), table.c.cost_source == ESTIMATED
    )
    if due_only:
        query = query.where(table.c.reconcile_after <= now)
    with sessions() as session:
        rows = session.execute(query.order_by(table.c.reconcile_after).limit(limit)).all()
    report = PassReport()
    for row in rows:
        try:
            generation = client.fetch(row.generation_id)
        except GenerationPending as exc:
            _not_yet(sessions, row, now, exc.reason, report)
            continue
        correction = _apply(sessions, row, generation)
        if correction is not None:
            if on_reconciled is not None:
                on_reconciled(correction)
            report.reconciled += 1
            report.lines.append(
                f"{row.generation_id}: reconciled, cost {generation.cost:.6f} USD "
                f"(estimated {_usd(row.cost)}), {generation.total_tokens} tokens"
            )
        else:
            report.lines.append(f"{row.generation_id}: already reconciled elsewhere")
    return report


def _apply(sessions: sessionmaker, row, generation: Generation) -> Correction | None:
    """The upstream's figures on the row and the difference on the totals, in one
    transaction; None when another reconciler got there first."""
    table = RequestLog.__table__
    new = {
        "prompt_tokens": generation.prompt_tokens,
        "completion_tokens": generation.completion_tokens,
        "cached_tokens": generation.cached_tokens,
        "total_tokens": generation.total_tokens,
        "cost": generation.cost,
    }
    with sessions() as session:
        conn = session.connection()
        changed = conn.execute(
            update(table)
            .where(table.c.id == row.id, table.c.cost_source == ESTIMATED)
            .values(**new, cost_source=RECONCILED, reconcile_after=None)
        ).rowcount
        if changed != 1:
            session.rollback()
            return None
        delta = {name: (new[name] or 0) - (getattr(row, name) or 0) for name in FIGURES}
        key = {name: getattr(row, name) for name in ("created_at", "user_id", "api_key_id")}
        key.update(model=row.model, endpoint=row.endpoint)
        add_to_totals(conn, [{**key, **delta}], requests=0)
        # the sinks' `<request id>.corrected` event, in this same transaction
        enqueue_corrected(
            conn, {**key, **new, "request_id": row.request_id, "cost_source": RECONCILED}
        )
        external_id = None
        if row.user_id is not None:
            external_id = session.scalar(
                select(EndUser.external_id).where(EndUser.id == row.user_id)
            )
        session.commit()
    return Correction(
        external_id,
        row.api_key_id,
        row.created_at,
        row.model,
        delta["prompt_tokens"] + delta["completion_tokens"],
        delta["cost"],
        new["completion_tokens"] or 0,
        new["cost"] or 0.0,
    )


def _not_yet(sessions: sessionmaker, row, now: datetime, reason: str, report: PassReport):
    """Count a failed ask; schedule the next, or give up after MAX_ATTEMPTS."""
    attempts = row.reconcile_attempts + 1
    after = now + retry_delay(attempts) if attempts < MAX_ATTEMPTS else None
    table = RequestLog.__table__
    with sessions() as session:
        changed = session.execute(
            update(table)
            .where(
                table.c.id == row.id,
                table.c.cost_source == ESTIMATED,
                table.c.reconcile_attempts == row.reconcile_attempts,
            )
            .values(reconcile_attempts=attempts, reconcile_after=after)
        ).rowcount
        session.commit()
    if changed != 1:
        report.lines.append(f"{row.generation_id}: handled elsewhere meanwhile")
    elif after is None:
        report.gave_up += 1
        log.warning(
            "generation %s unavailable after %d attempts (%s); its cost stays estimated",
            row.generation_id,
            attempts,
            reason,
        )
        report.lines.append(f"{row.generation_id}: {reason}; gave up, stays estimated")
    else:
        report.retrying += 1
        when = after.isoformat(timespec="seconds")
        report.lines.append(
            f"{row.generation_id}: {reason}; attempt {attempts} of {MAX_ATTEMPTS}, "
            f"next at {when} UTC"
        )


def awaiting(session: Session) -> int:
    """How many estimated rows are still to be asked about (read off the
    ``reconcile_after`` index: only those rows have one)."""
    table = RequestLog.__table__
    query = select(func.count()).select_from(table).where(table.c.reconcile_after.is_not(None))
    return session.scalar(query) or 0


def _usd(value: float | None) -> str:
    return "none" if value is None else f"{value:.6f} USD"


def generation_client(settings: Settings) -> GenerationClient | None:
    """The client of the configured upstream's generation endpoint (None for the demo
    upstream, which has none)."""
    if not settings.upstream_url:
        return None
    return GenerationClient(settings.upstream_url, settings.upstream_api_key)


class Reconciler(Periodic):
    """Runs :func:`reconcile_pass` every :data:`INTERVAL` seconds on a daemon thread."""

    what = "cost reconciliation"

    def __init__(
        self,
        sessions: sessionmaker,
        client: GenerationClient,
        interval=INTERVAL,
        on_reconciled: Callable[[Correction], None] | None = None,
    ):
        super().__init__("tally-reconcile", interval)
        self._sessions, self._client = sessions, client
        self._on_reconciled = on_reconciled

    def run_pass(self) -> PassReport:
        """One pass over the due rows."""
        return reconcile_pass(self._sessions, self._client, on_reconciled=self._on_reconciled)

    def after_pass(self, report: PassReport) -> None:
        """Log what changed."""
        if report.reconciled or report.gave_up:
            log.info("cost reconciliation: %s", report.summary())


def start_reconciler(
    settings: Settings,
    sessions: sessionmaker,
    on_reconciled: Callable[[Correction], None] | None = None,
) -> Reconciler | None:
    """A background reconciler for ``settings``' upstream (None for the demo upstream);
    ``on_reconciled``: see :func:`reconcile_pass`."""
    client = generation_client(settings)
    if client is None:
        return None
    return Reconciler(sessions, client, on_reconciled=on_reconciled).start()
