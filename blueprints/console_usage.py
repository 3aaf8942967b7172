"""Console: usage per day, per user and per model over a chosen range; chart and CSV."""

from __future__ import annotations

from flask import Response, request

from blueprints.console_base import bp, get_db, on_domain_error, render
from tally.db import utcnow
from tally.services.reports import (
    METRICS,
    bar_chart,
    parse_range,
    usage_csv,
    usage_report,
)

PAGE, REPORT = "usage/page.html", "usage/_report.html"


def _form_again() -> dict:
    args = request.args
    form = {"start": args.get("start", ""), "end": args.get("end", "")}
    form["metric"] = args.get("metric") if args.get("metric") in METRICS else "requests"
    return {"form": form, "metrics": METRICS, "report": None}


@bp.get("/usage")
@on_domain_error(PAGE, REPORT, _form_again)
def usage_page():
    """The usage report for ``start``..``end`` (the last 30 days by default)."""
    args = request.args
    form = {k: args.get(k, "") for k in ("start", "end")}
    metric = args.get("metric", "requests")
    form["metric"] = metric if metric in METRICS else "requests"
    start, end = parse_range(args.get("start"), args.get("end"), utcnow().date())
    report = usage_report(get_db(), start, end)
    form.update(start=start.isoformat(), end=end.isoformat())
    chart = bar_chart(report.days, form["metric"])
    return render(PAGE, REPORT, form=form, metrics=METRICS, report=report, chart=chart)


@bp.get("/usage.csv")
@on_domain_error(PAGE, None, _form_again)
def usage_export():
    """The report as CSV, ``by`` day, user (all of them) or model."""
    args = request.args
    by = args.get("by", "day")
    start, end = parse_range(args.get("start"), args.get("end"), utcnow().date())
    text = usage_csv(usage_report(get_db(), start, end, user_limit=None), by)
    filename = f"tally-usage-by-{by}-{start.isoformat()}-{end.isoformat()}.csv"
    return Response(
        text,
        mimetype="text/csv",
        headers={"Content-Disposition": f'attachment; filename="{filename}"'},
    )
