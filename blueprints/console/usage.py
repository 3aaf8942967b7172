"""Console: usage over a chosen range (chart, per day, per model, top users), broken down
by any grouping (the chargeback per API key among them), and its streamed exports."""

from __future__ import annotations

from flask import Blueprint, Response, request, stream_with_context

from blueprints.console.base import get_db, on_domain_error, render
from tally.db import utcnow
from tally.keys.api_keys import list_api_keys
from tally.reports.breakdowns import (
    columns,
    filter_ids,
    grouped_rows,
    parse_group_by,
    row_cursor,
)
from tally.reports.dashboard import METRICS, bar_chart
from tally.reports.exports import MEDIA_TYPES, check_format, export_chunks
from tally.reports.usage_report import parse_range, usage_report

PAGE, REPORT = "usage/page.html", "usage/_report.html"
GROUP_CHOICES = ("model", "user", "endpoint", "day", "tag", "metadata", "key")
BREAKDOWN_ROWS = 100  # per page of the breakdown table; exports have every row
DEFAULT_METADATA_KEY = "plan"


def register(bp: Blueprint) -> None:
    """The usage routes on the console blueprint ``bp``."""
    bp.get("/usage")(usage_page)
    bp.get("/usage.<fmt>")(usage_export)


def _form() -> dict:
    """The form as typed: range, chart metric, grouping (``metadata`` with its key, or
    ``metadata:KEY`` in a link), the API key and end user filters and the page cursor."""
    args = request.args
    form = {k: args.get(k, "") for k in ("start", "end", "key", "user", "after")}
    form["user"] = form["user"].strip()
    form["metric"] = args.get("metric") if args.get("metric") in METRICS else "requests"
    group = args.get("group_by") or args.get("by") or "model"  # ``by``: older links
    form["metadata_key"] = args.get("metadata_key") or DEFAULT_METADATA_KEY
    if group.startswith("metadata:"):
        group, form["metadata_key"] = "metadata", group.partition(":")[2]
    form["group"] = group
    form["group_by"] = f"metadata:{form['metadata_key']}" if group == "metadata" else group
    return form


def _key_names() -> list[tuple[str, bool]]:
    """Every API key's name (the key filter's choices), A to Z, and whether it is
    revoked (its traffic still counts)."""
    keys = sorted(list_api_keys(get_db()), key=lambda k: k.name)
    return [(k.name, k.revoked_at is not None) for k in keys]


def _form_again() -> dict:
    return {
        "form": _form(),
        "metrics": METRICS,
        "groups": GROUP_CHOICES,
        "keys": _key_names(),
        "report": None,
    }


@on_domain_error(PAGE, REPORT, _form_again)
def usage_page():
    """The usage report for ``start``..``end`` (the last 30 days by default) and its
    breakdown by ``group_by``, a page of rows from the cursor ``after``: every figure of
    the API key ``key`` alone and of the end user ``user`` (internal id) alone when
    given."""
    form = _form()
    start, end = parse_range(form["start"] or None, form["end"] or None, utcnow().date())
    form.update(start=start.isoformat(), end=end.isoformat())
    session = get_db()
    key_id, user_id = filter_ids(session, form["key"] or None, form["user"] or None)
    report = usage_report(session, start, end, user_id=user_id, key_id=key_id)
    chart = bar_chart(report.days, form["metric"])
    rows = list(
        grouped_rows(
            session,
            start,
            end,
            form["group_by"],
            after=form["after"] or None,
            limit=BREAKDOWN_ROWS + 1,
            key=form["key"] or None,
            user=form["user"] or None,
        )
    )
    more = len(rows) > BREAKDOWN_ROWS
    rows = rows[:BREAKDOWN_ROWS]
    breakdown = {
        "columns": parse_group_by(form["group_by"]).key_columns,
        "rows": rows,
        "next": row_cursor(form["group_by"], rows[-1]) if more else None,
        "links": _link_params(form),
    }
    return render(
        PAGE,
        REPORT,
        form=form,
        metrics=METRICS,
        groups=GROUP_CHOICES,
        keys=_key_names(),
        report=report,
        chart=chart,
        breakdown=breakdown,
    )


def _link_params(form: dict) -> dict:
    """The query of the export links and the next page: range, grouping, filters."""
    params = {"start": form["start"], "end": form["end"], "group_by": form["group_by"]}
    for name in ("key", "user"):
        if form[name]:
            params[name] = form[name]
    return params


@on_domain_error(PAGE, None, _form_again)
def usage_export(fmt: str):
    """Every row of the page's breakdown (its range, ``group_by``, ``key``, ``user``) as
    a CSV or JSON download, streamed as it is read."""
    check_format(fmt)
    form = _form()
    group_by = form["group_by"]
    start, end = parse_range(form["start"] or None, form["end"] or None, utcnow().date())
    session = get_db()
    rows = grouped_rows(  # checked now
        session, start, end, group_by, key=form["key"] or None, user=form["user"] or None
    )
    chunks = export_chunks(fmt, columns(group_by), rows)
    name = group_by.replace(":", "-")
    filename = f"tally-usage-by-{name}-{start.isoformat()}-{end.isoformat()}.{fmt}"
    response = Response(
        stream_with_context(chunks),
        mimetype=MEDIA_TYPES[fmt],
        headers={"Content-Disposition": f'attachment; filename="{filename}"'},
    )
    # The request's teardown closes the session before the body is sent, and reading the
    # rows opens it again: it is closed once more when the server closes the response
    # (read to its end or cut off), or its connection stays out until a garbage collection.
    response.call_on_close(session.close)
    return response
