"""Sinks as an admin manages them (CLI ``sinks …``, console ``/sinks``): add, remove,
list with each one's delivery state, replay a day onward. Every change is audited; a
secret never is (nor shown again after :func:`add_sink` returns it)."""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from urllib.parse import urlsplit

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from tally.audit import add_audit
from tally.db import UNSTORABLE_TEXT, storable, utcnow
from tally.errors import InvalidInput
from tally.models import Sink, SinkEvent
from tally.sinks import outbox
from tally.sinks.events import ALERT_EVENTS, USAGE_EVENTS
from tally.sinks.secrets import WEBHOOK_PREFIX, encrypt, webhook_secret

KINDS = ("stripe", "openmeter", "webhook", "slack")
EVENTS = (USAGE_EVENTS, ALERT_EVENTS)
# what each kind can carry: Stripe meters usage, Slack hears alerts
ALLOWED = {
    "stripe": {USAGE_EVENTS},
    "openmeter": {USAGE_EVENTS, ALERT_EVENTS},
    "webhook": {USAGE_EVENTS, ALERT_EVENTS},
    "slack": {ALERT_EVENTS},
}
MAX_NAME, MAX_URL, MAX_SECRET = 100, 2048, 1024
NAME = re.compile(r"[A-Za-z0-9._-]{1,100}")
PARKED_SHOWN = 20


class SinkError(InvalidInput):
    """A sink operation that cannot be done (bad name, URL, kind, unknown sink)."""


def _clean_text(value: str, field: str, limit: int) -> str:
    if not isinstance(value, str):
        raise SinkError(f"{field} must be text", field)
    if not storable(value):
        raise SinkError(f"{field} {UNSTORABLE_TEXT}", field)
    if len(value) > limit:
        raise SinkError(f"{field} must be at most {limit} characters", field)
    return value.strip()


def parse_name(name: str) -> str:
    """A sink's name: 1-100 of letters, digits, '.', '_' and '-'."""
    name = _clean_text(name, "name", MAX_NAME)
    if not NAME.fullmatch(name):
        raise SinkError("a sink name must be 1 to 100 of letters, digits, '.', '_' and '-'", "name")
    return name


def parse_url(url: str) -> str:
    """An http(s) URL with a host, in printable ASCII (an international name in its
    punycode form), no spaces."""
    url = _clean_text(url, "url", MAX_URL)
    plain = url.isascii() and url.isprintable() and " " not in url
    parts = urlsplit(url) if plain else None
    try:
        ok = parts is not None and parts.scheme in ("http", "https") and bool(parts.hostname)
    except ValueError:
        ok = False
    if not ok:
        raise SinkError("url must be an http:// or https:// URL with a host", "url")
    return url.rstrip("/")


def parse_events(kind: str, raw: str | None) -> str:
    """``usage``, ``alerts`` or both (comma-separated); the default is the kind's own."""
    if raw is None or not raw.strip():
        return ALERT_EVENTS if kind == "slack" else USAGE_EVENTS
    raw = _clean_text(raw, "events", 64)
    chosen = {part.strip() for part in raw.split(",") if part.strip()}
    unknown = chosen - set(EVENTS)
    if unknown or not chosen:
        raise SinkError("events must be usage, alerts or usage,alerts", "events")
    if not chosen <= ALLOWED[kind]:
        takes = " and ".join(sorted(ALLOWED[kind]))
        raise SinkError(f"a {kind} sink takes {takes} events only", "events")
    return ",".join(e for e in EVENTS if e in chosen)


def _parse_secret(kind: str, secret: str | None) -> str | None:
    if secret is not None and not secret.strip():
        secret = None
    if secret is not None:
        secret = _clean_text(secret, "secret", MAX_SECRET)
    if kind == "webhook":
        if secret is None:
            return webhook_secret()
        if not secret.startswith(WEBHOOK_PREFIX):
            raise SinkError("a webhook secret must start with whsec_ (or leave it out)", "secret")
        try:
            key = base64.b64decode(secret[len(WEBHOOK_PREFIX) :], validate=True)
        except (binascii.Error, ValueError):
            key = b""
        if not 24 <= len(key) <= 64:
            raise SinkError("a webhook secret is whsec_ + base64 of 24 to 64 bytes", "secret")
    if kind == "stripe" and secret is None:
        raise SinkError("a stripe sink needs --secret (a Stripe secret key)", "secret")
    if kind == "slack" and secret is not None:
        raise SinkError("a slack sink takes no secret: its URL is its secret", "secret")
    return secret


def shown_url(sink: Sink) -> str:
    """The URL as pages and the audit log show it: a Slack webhook's path is its secret."""
    if sink.kind != "slack":
        return sink.url
    parts = urlsplit(sink.url)
    return f"{parts.scheme}://{parts.netloc}/…"


def add_sink(
    session: Session,
    secret_key: str,
    name: str,
    kind: str,
    url: str,
    actor: str,
    secret: str | None = None,
    events: str | None = None,
) -> tuple[Sink, str | None]:
    """Add a sink; returns it and the secret to show once when Tally made it (a webhook
    without one gets a new ``whsec_…``), else None. Commits."""
    name = parse_name(name)
    if kind not in KINDS:
        raise SinkError(f"kind must be one of {', '.join(KINDS)}", "kind")
    url = parse_url(url)
    chosen = parse_events(kind, events)
    made = kind == "webhook" and (secret is None or not secret.strip())
    secret = _parse_secret(kind, secret)
    if session.scalar(select(Sink.id).where(Sink.name == name)) is not None:
        raise SinkError(f"a sink named {name!r} already exists", "name")
    sink = Sink(
        name=name,
        kind=kind,
        url=url,
        secret_encrypted=encrypt(secret_key, secret) if secret is not None else None,
        events=chosen,
        created_by=actor,
    )
    session.add(sink)
    session.flush()
    after = {"kind": kind, "url": shown_url(sink), "events": chosen, "secret": secret is not None}
    add_audit(session, actor, "sink.add", name, after=after)
    session.commit()
    outbox.invalidate()
    return sink, secret if made else None


def find_sink(session: Session, name: str) -> Sink:
    """The sink named ``name``; :class:`SinkError` when there is none."""
    name = parse_name(name)
    sink = session.scalar(select(Sink).where(Sink.name == name))
    if sink is None:
        raise SinkError(f"no sink named {name!r}", "name")
    return sink


def remove_sink(session: Session, name: str, actor: str) -> int:
    """Remove a sink and its undelivered events; returns how many were dropped. Commits."""
    sink = find_sink(session, name)
    dropped = session.scalar(
        select(func.count())
        .select_from(SinkEvent)
        .where(SinkEvent.sink_id == sink.id, SinkEvent.delivered_at.is_(None))
    )
    before = {"kind": sink.kind, "url": shown_url(sink), "events": sink.events}
    session.execute(SinkEvent.__table__.delete().where(SinkEvent.sink_id == sink.id))
    session.delete(sink)
    add_audit(session, actor, "sink.remove", sink.name, before=before)
    session.commit()
    outbox.invalidate()
    return dropped or 0


def parse_day(raw: str) -> date:
    """A ``YYYY-MM-DD`` day."""
    raw = _clean_text(raw, "from", 32)
    try:
        if not re.fullmatch(r"\d{4}-\d{2}-\d{2}", raw):
            raise ValueError
        return date.fromisoformat(raw)
    except ValueError:
        raise SinkError("--from must be a day, YYYY-MM-DD", "from") from None


def replay_sink(session: Session, name: str, day: str, actor: str) -> int:
    """Queue again, for one sink, every call from ``day`` (UTC) onward, under the same
    event ids; returns how many events. Commits."""
    sink = find_sink(session, name)
    since = datetime.combine(parse_day(day), datetime.min.time())
    if USAGE_EVENTS not in sink.events.split(","):
        raise SinkError(f"sink {sink.name!r} takes no usage events: nothing to replay", "name")
    ref = outbox.SinkRef(sink.id, sink.kind, frozenset(sink.events.split(",")))
    count = outbox.replay(session.connection(), ref, since)
    add_audit(session, actor, "sink.replay", sink.name, after={"from": since.date().isoformat()})
    session.commit()
    return count


@dataclass(frozen=True)
class SinkStatus:
    """One sink as the list shows it."""

    sink: Sink
    url: str
    backlog: int
    oldest_undelivered: datetime | None
    parked: int
    parked_events: list[SinkEvent]

    @property
    def oldest_age(self) -> timedelta | None:
        """How long the oldest undelivered event has waited."""
        return None if self.oldest_undelivered is None else utcnow() - self.oldest_undelivered


def list_sinks(session: Session) -> list[SinkStatus]:
    """Every sink, by name, with its backlog (events waiting), its oldest undelivered
    event, and its parked events (refused by the receiver, or given up on)."""
    sinks = session.scalars(select(Sink).order_by(Sink.name)).all()
    waiting = dict(
        session.execute(
            select(SinkEvent.sink_id, func.count())
            .where(SinkEvent.next_attempt_at.is_not(None))
            .group_by(SinkEvent.sink_id)
        ).all()
    )
    oldest = dict(
        session.execute(
            select(SinkEvent.sink_id, func.min(SinkEvent.created_at))
            .where(SinkEvent.next_attempt_at.is_not(None))
            .group_by(SinkEvent.sink_id)
        ).all()
    )
    parked = dict(
        session.execute(
            select(SinkEvent.sink_id, func.count())
            .where(SinkEvent.parked_at.is_not(None))
            .group_by(SinkEvent.sink_id)
        ).all()
    )
    out = []
    for sink in sinks:
        shown = []
        if parked.get(sink.id):
            shown = list(
                session.scalars(
                    select(SinkEvent)
                    .where(SinkEvent.sink_id == sink.id, SinkEvent.parked_at.is_not(None))
                    .order_by(SinkEvent.parked_at.desc(), SinkEvent.id.desc())
                    .limit(PARKED_SHOWN)
                )
            )
        out.append(
            SinkStatus(
                sink,
                shown_url(sink),
                waiting.get(sink.id, 0),
                oldest.get(sink.id),
                parked.get(sink.id, 0),
                shown,
            )
        )
    return out


def backlog_figures(session: Session) -> list[tuple[str, int, float | None]]:
    """Per sink: its name, events waiting, and the oldest one's age in seconds (None when
    none waits), for /metrics."""
    now = utcnow()
    rows = session.execute(
        select(Sink.name, func.count(SinkEvent.id), func.min(SinkEvent.created_at))
        .outerjoin(
            SinkEvent, (SinkEvent.sink_id == Sink.id) & SinkEvent.next_attempt_at.is_not(None)
        )
        .group_by(Sink.id, Sink.name)
        .order_by(Sink.name)
    ).all()
    return [
        (name, waiting, (now - oldest).total_seconds() if oldest else None)
        for name, waiting, oldest in rows
    ]
