"""The request log: every call Tally answered or refused, newest first, filtered by end
user, key, model, endpoint, status and UTC dates, paged by a keyset cursor (the newest
row of the next page is found off an index, at any depth); and one call with everything
Tally knows about it.

Each filter is read off an index of ``request_log`` whose columns end in (created_at, id)
(tally/models/usage.py), so a page of 50 costs a few index probes with a million rows; a filter
that matches nothing within a date range reads only that range. There is no total count:
counting a million matches is what would cost.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from urllib.parse import urlencode

from sqlalchemy import false, literal_column, or_, select, true, union
from sqlalchemy.orm import Session, selectinload

from tally.audit import add_audit
from tally.models import ApiKey, EndUser, RequestLog, UpstreamIdentifier
from tally.reports.dashboard import ReportError

PAGE_ROWS = 50
# endpoint parameter -> request_log.endpoint
ENDPOINTS = {"chat": "chat.completions", "responses": "responses", "embeddings": "embeddings"}
STATUSES = ("ok", "error", "refused")
_CURSOR = re.compile(r"(\d{8}T\d{6}\.\d{6})-(\d{1,19})")
_CURSOR_TIME = "%Y%m%dT%H%M%S.%f"
MAX_TEXT = 255  # the longest internal id, identifier, key name or model stored


@dataclass(frozen=True)
class RequestFilter:
    """The request log's query, as the page's form and links carry it (strings, ``""``
    for not filtered) and as parsed (``start``/``end`` dates, the cursor)."""

    user: str = ""
    key: str = ""
    model: str = ""
    endpoint: str = ""
    status: str = ""
    start: date | None = None
    end: date | None = None
    before: tuple[datetime, int] | None = None

    def params(self, **changes: str) -> dict[str, str]:
        """The query parameters that ask for this filter (only those set; no cursor),
        with ``changes`` applied."""
        values = {
            "user": self.user,
            "key": self.key,
            "model": self.model,
            "endpoint": self.endpoint,
            "status": self.status,
            "from": self.start.isoformat() if self.start else "",
            "to": self.end.isoformat() if self.end else "",
            **changes,
        }
        return {name: value for name, value in values.items() if value}

    def query_string(self, **changes: str) -> str:
        """:meth:`params` as a URL's query (``?…``, or ``""`` when there is none)."""
        params = self.params(**changes)
        return "?" + urlencode(params) if params else ""

    @property
    def filtered(self) -> bool:
        """True when any filter narrows the log (the cursor does not)."""
        return bool(self.params())


@dataclass(frozen=True)
class RequestPage:
    """One page of the log, newest first; ``older`` the cursor of the next page (None on
    the last); ``users`` the end users the ``user`` filter named (several when an
    identifier was sent for several); ``unknown`` what a filter named that does not exist
    (``"user"``, ``"key"``), so the page can say why it is empty."""

    rows: list[RequestLog]
    query: RequestFilter
    older: str | None = None
    users: list[EndUser] = field(default_factory=list)
    unknown: str | None = None


def parse_filter(args: dict[str, str]) -> RequestFilter:
    """The filter the query ``args`` ask for; a bad value raises :class:`ReportError`
    naming the parameter and what it takes."""
    text = {name: (args.get(name) or "").strip() for name in ("user", "key", "model")}
    for name, value in text.items():
        if len(value) > MAX_TEXT:
            raise ReportError(f"{name} is at most {MAX_TEXT} characters", name)
    endpoint = (args.get("endpoint") or "").strip()
    if endpoint and endpoint not in ENDPOINTS:
        raise ReportError(f"endpoint must be one of {', '.join(ENDPOINTS)}", "endpoint")
    status = (args.get("status") or "").strip()
    if status and status not in STATUSES:
        raise ReportError(f"status must be one of {', '.join(STATUSES)}", "status")
    start, end = _day(args, "from"), _day(args, "to")
    if start and end and start > end:
        raise ReportError("from must be on or before to", "from")
    return RequestFilter(
        **text, endpoint=endpoint, status=status, start=start, end=end, before=_cursor(args)
    )


def _day(args: dict[str, str], name: str) -> date | None:
    value = (args.get(name) or "").strip()
    if not value:
        return None
    try:
        return date.fromisoformat(value) if len(value) == 10 else _bad_day(name)
    except ValueError:
        return _bad_day(name)


def _bad_day(name: str):
    raise ReportError(f"{name} must be a date written YYYY-MM-DD", name)


def _cursor(args: dict[str, str]) -> tuple[datetime, int] | None:
    value = (args.get("before") or "").strip()
    if not value:
        return None
    match = _CURSOR.fullmatch(value)
    try:
        if match is None or int(match[2]) >= 2**63:
            raise ValueError
        return datetime.strptime(match[1], _CURSOR_TIME), int(match[2])
    except ValueError:
        raise ReportError("before must be the cursor an 'older' link carries", "before") from None


def cursor_of(row: RequestLog) -> str:
    """The ``before`` value that asks for the rows older than ``row``."""
    return f"{row.created_at.strftime(_CURSOR_TIME)}-{row.id}"


def request_log(
    session: Session, query: RequestFilter, actor: str | None = None, rows: int = PAGE_ROWS
) -> RequestPage:
    """The newest ``rows`` calls that ``query`` matches, older than its cursor. A lookup
    by end user is a trace (an internal id or an identifier to the user behind it): with
    ``actor``, it is written to the audit log as an ``identity.lookup``."""
    table = RequestLog.__table__
    conditions = []
    users: list[EndUser] = []
    if query.user:
        users = _users_named(session, query.user)
        if actor:
            add_audit(
                session,
                actor,
                "identity.lookup",
                target=query.user,
                after={"request_log": query.user, "results": len(users)},
            )
            session.commit()
        if not users:
            return RequestPage([], query, users=users, unknown="user")
        ids = [user.id for user in users]
        conditions.append(table.c.user_id == ids[0] if len(ids) == 1 else table.c.user_id.in_(ids))
    if query.key:
        key_id = session.scalar(select(ApiKey.id).where(ApiKey.name == query.key))
        if key_id is None:
            return RequestPage([], query, users=users, unknown="key")
        conditions.append(table.c.api_key_id == key_id)
    if query.model:
        conditions.append(table.c.model == query.model)
    if query.endpoint:
        conditions.append(table.c.endpoint == ENDPOINTS[query.endpoint])
    conditions.extend(_status(query.status))
    if query.start:
        conditions.append(table.c.created_at >= datetime.combine(query.start, datetime.min.time()))
    if query.end:
        day_after = datetime.combine(query.end + timedelta(days=1), datetime.min.time())
        conditions.append(table.c.created_at < day_after)
    if query.before:
        at, row_id = query.before
        # the first term bounds the index range; an OR alone would read it from the top
        conditions.append(table.c.created_at <= at)
        conditions.append(or_(table.c.created_at < at, table.c.id < row_id))
    found = list(
        session.scalars(
            select(RequestLog)
            .options(
                selectinload(RequestLog.user),
                selectinload(RequestLog.api_key),
            )
            .where(*conditions)
            .order_by(RequestLog.created_at.desc(), RequestLog.id.desc())
            .limit(rows + 1)
        )
    )
    older = cursor_of(found[rows - 1]) if len(found) > rows else None
    return RequestPage(found[:rows], query, older=older, users=users)


def _status(status: str) -> list:
    """``ok``: answered without an error; ``error``: an error answer (the upstream's or
    Tally's while forwarding); ``refused``: refused by Tally before the upstream. Errors
    and refusals are each a partial index's own condition, word for word (a bound
    parameter would not prove the index applies): their pages never read past ok rows."""
    table = RequestLog.__table__
    if status == "ok":
        return [table.c.status < literal_column("400")]
    if status == "error":
        return [table.c.status >= literal_column("400"), table.c.refused == false()]
    if status == "refused":
        return [table.c.refused == true()]
    return []


def _users_named(session: Session, name: str) -> list[EndUser]:
    """The end users ``name`` names: the one whose internal id it is, and every one an
    upstream identifier of that text was sent for. Two index lookups in a UNION (an OR of
    the two would make PostgreSQL test every end user against both)."""
    by_id = select(EndUser.id).where(EndUser.external_id == name)
    by_identifier = select(UpstreamIdentifier.user_id).where(UpstreamIdentifier.identifier == name)
    ids = list(session.scalars(union(by_id, by_identifier)))
    if not ids:
        return []
    return list(session.scalars(select(EndUser).where(EndUser.id.in_(ids)).order_by(EndUser.id)))


def request_detail(session: Session, request_id: str) -> RequestLog | None:
    """The call answered with ``X-Request-Id: request_id``, with its end user, key and the
    identifier sent (and that identifier's config revision); None if there is none."""
    if not request_id or len(request_id) > 64:
        return None
    return session.scalar(
        select(RequestLog)
        .options(
            selectinload(RequestLog.user),
            selectinload(RequestLog.api_key),
            selectinload(RequestLog.identifier).selectinload(UpstreamIdentifier.revision),
        )
        .where(RequestLog.request_id == request_id)
    )
