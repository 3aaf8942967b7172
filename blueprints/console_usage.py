"""Console: usage per day, per user and per model over a chosen range; chart and CSV."""

from __future__ import annotations

from flask import Response, request

from blueprints.console_base import bp, form_error, get_db, render
from tally.db import utcnow
from tally.services.reports import (
    METRICS,
    ReportError,
    bar_chart,
    parse_range,
    usage_csv,
    usage_report,
)

PAGE, REPORT = "usage/page.html", "usage/_report.html"


@bp.get("/usage")
def usage_page():
    """The usage report for ``start``..``end`` (the last 30 days by default)."""
    args = request.args
    form = {k: args.get(k, "") for k in ("start", "end")}
    metric = args.get("metric", "requests")
    form["metric"] = metric if metric in METRICS else "requests"
    try:
        start, end = parse_range(args.get("start"), args.get("end"), utcnow().date())
    except ReportError as exc:
        return form_error(PAGE, REPORT, str(exc), form=form, metrics=METRICS, report=None)
    report = usage_report(get_db(), start, end)
    form.update(start=start.isoformat(), end=end.isoformat())
    chart = bar_chart(report.days, form["metric"])
    return render(PAGE, REPORT, form=form, metrics=METRICS, report=report, chart=chart)


@bp.get("/usage.csv")
def usage_export():
    """The report as CSV, ``by`` day, user (all of them) or model."""
    args = request.args
    by = args.get("by", "day")
    try:
        start, end = parse_range(args.get("start"), args.get("end"), utcnow().date())
        text = usage_csv(usage_report(get_db(), start, end, user_limit=None), by)
    except ReportError as exc:
        form = {"start": args.get("start", ""), "end": args.get("end", ""), "metric": "requests"}
        return form_error(PAGE, None, str(exc), form=form, metrics=METRICS, report=None)
    filename = f"tally-usage-by-{by}-{start.isoformat()}-{end.isoformat()}.csv"
    return Response(
        text,
        mimetype="text/csv",
        headers={"Content-Disposition": f'attachment; filename="{filename}"'},
    )
