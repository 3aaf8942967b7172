"""Prometheus metrics: what ``GET /metrics`` shows (blueprints/health.py).

A call is counted where its row is taken (:func:`count_calls`): by the worker's
usage writer, a batch at a time once the answers have gone out (so a scrape shows a call
at most a linger, 50 ms, after its answer, as the request log does), or at once by the
inline recorder. Limit refusals are counted by tally.proxy.pipeline, the API's 503 for
database outages by blueprints/api/errors.py. No label names a user, a key or an
identifier: only the endpoint, the status, the model, the error code and the token kind.

Under gunicorn every worker writes its values to files in ``PROMETHEUS_MULTIPROC_DIR``
(made by gunicorn.conf.py before any worker forks, and before prometheus_client is
imported: the client reads the variable at import) and a scrape adds them up
(:func:`exposition`). Without it (tests, ``flask run``) the one process's default
registry is shown.
"""

from __future__ import annotations

import logging
import threading
from bisect import bisect_left
from collections.abc import Iterable
from typing import Any

from prometheus_client import (
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_LATEST

log = logging.getLogger(__name__)

MAX_MODELS = 100  # distinct model labels per process; the rest are "other"
MAX_CODES = 100  # distinct upstream error codes per process; the rest are "other"
MAX_LABEL_CHARS = 200
OTHER = "other"
UNKNOWN = "unknown"
# LLM calls run from a fraction of a second to minutes (long streamed answers).
LATENCY_BUCKETS = (0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 30, 60, 120, 300)
TTFT_BUCKETS = (0.05, 0.1, 0.25, 0.5, 0.75, 1, 1.5, 2, 3, 5, 10, 30)
TOKEN_KINDS = (("prompt", "prompt_tokens"), ("completion", "completion_tokens"))

REQUESTS = Counter(
    "tally_requests_total",
    "API calls that went upstream, by endpoint, final status and model.",
    ["endpoint", "status", "model"],
)
LATENCY = Histogram(
    "tally_request_latency_seconds",
    "Time from the request to the end of its answer.",
    ["endpoint"],
    buckets=LATENCY_BUCKETS,
)
TTFT = Histogram(
    "tally_time_to_first_token_seconds",
    "Time from the request to the first generated token (streamed answers).",
    ["endpoint"],
    buckets=TTFT_BUCKETS,
)
UPSTREAM_ERRORS = Counter(
    "tally_upstream_errors_total",
    "Calls that ended in an upstream error (or a broken or incomplete stream).",
    ["endpoint", "code"],
)
TOKENS = Counter(
    "tally_tokens_total",
    "Tokens the upstream reported, by model and kind (prompt, completion, cached).",
    ["model", "kind"],
)
COST = Counter("tally_cost_usd_total", "Cost in USD the upstream reported.", ["model"])
LIMIT_REFUSALS = Counter(
    "tally_limit_refusals_total",
    "Calls refused with a 429 by a rate limit or a budget, by error code.",
    ["code"],
)
USAGE_ROWS_SPOOLED = Counter(
    "tally_usage_rows_spooled_total",
    "Request rows the database could not take, kept in the usage spool for replay.",
)
USAGE_ROWS_LOST = Counter(
    "tally_usage_rows_lost_total",
    "Request rows lost: the database could not take them and the spool was full or off.",
)
USAGE_QUEUE_DEPTH = Gauge(
    "tally_usage_queue_depth",
    "Request rows queued in the workers' usage writers, not yet handed over or written.",
    multiprocess_mode="livesum",
)
DATABASE_UNAVAILABLE = Counter(
    "tally_database_unavailable_total",
    "API calls answered 503 because the database was unavailable.",
)


class BoundedLabel:
    """A label value kept to the first ``limit`` distinct values seen by this process;
    later ones become ``other`` (a time series per value costs memory in every scrape)."""

    def __init__(self, limit: int):
        self.limit = limit
        self._seen: set[str] = set()
        self._lock = threading.Lock()

    def __call__(self, value: Any) -> str:
        """The label for ``value``: itself (shortened), ``unknown`` or ``other``."""
        if not isinstance(value, str) or not value:
            return UNKNOWN
        value = value[:MAX_LABEL_CHARS]
        if value in self._seen:
            return value
        with self._lock:
            if len(self._seen) >= self.limit:
                return OTHER
            self._seen.add(value)
        return value


model_label = BoundedLabel(MAX_MODELS)
code_label = BoundedLabel(MAX_CODES)
# Each metric's child for a set of label values, once looked up: ``labels()`` checks and
# converts the values and takes a lock on every call, several times per request. The
# values are bounded (endpoints, statuses, the bounded model and code labels), so is this.
_children: dict[tuple, Any] = {}


def clear() -> None:
    """Forget every labelled series of this process, and the children looked up (a
    child kept after its metric's ``clear()`` would count where no scrape looks)."""
    for metric in (REQUESTS, LATENCY, TTFT, UPSTREAM_ERRORS, TOKENS, COST, LIMIT_REFUSALS):
        metric.clear()
    SINK_DELIVERIES.clear()
    _children.clear()


def _child(metric, *values: str):
    """``metric.labels(*values)``, looked up once."""
    key = (id(metric), values)
    child = _children.get(key)
    if child is None:
        child = _children[key] = metric.labels(*values)
    return child


def count_calls(calls: Iterable[tuple[Any, Any, Any]]) -> None:
    """Count finished calls: ``(record, outcome, ended)`` as the usage writer takes them
    (tally.usage.call; refusals are not calls here, :func:`record_refusal` counts them).
    Each series is added to once per batch, not once per call: under gunicorn every
    ``inc`` is a write to this process's metric file (and a pid check), seven a call.
    Never raises: the answers are already on their way."""
    try:
        counts: dict[tuple, float] = {}
        observed: dict[tuple, list[float]] = {}
        for record, out, _ended in calls:
            if out.refused:
                continue
            endpoint, model = record.endpoint, model_label(out.model or record.model)
            key = (REQUESTS, endpoint, str(out.status), model)
            counts[key] = counts.get(key, 0) + 1
            if out.latency_ms is not None:
                observed.setdefault((LATENCY, endpoint), []).append(out.latency_ms / 1000)
            if out.ttft_ms is not None:
                observed.setdefault((TTFT, endpoint), []).append(out.ttft_ms / 1000)
            code = out.error_code
            if code is not None and code != "client_disconnected":
                key = (UPSTREAM_ERRORS, endpoint, code_label(code))
                counts[key] = counts.get(key, 0) + 1
            if isinstance(out.usage, dict):
                _count_usage(counts, model, out.usage)
        for (metric, *values), amount in counts.items():
            _child(metric, *values).inc(amount)
        for (metric, *values), amounts in observed.items():
            _observe(_child(metric, *values), amounts)
    except Exception:  # a metric must never fail a call
        log.exception("recording metrics failed")


def _observe(child, amounts: list[float]) -> None:
    """``child.observe(amount)`` for each of ``amounts``, as one write per bucket hit and
    one to the sum (prometheus-client keeps a histogram as per-bucket counts and a sum:
    ``observe`` adds 1 to the first bucket whose bound is at least the amount)."""
    bounds, hits = child._upper_bounds, {}
    for amount in amounts:
        index = bisect_left(bounds, amount)
        hits[index] = hits.get(index, 0) + 1
    child._sum.inc(sum(amounts))
    for index, count in hits.items():
        if index < len(bounds):  # NaN is above every bound: observe counts it nowhere
            child._buckets[index].inc(count)


def count_usage_rows(spooled: int = 0, lost: int = 0) -> None:
    """Count request rows the usage writer spooled or lost. Never raises."""
    try:
        if spooled:
            USAGE_ROWS_SPOOLED.inc(spooled)
        if lost:
            USAGE_ROWS_LOST.inc(lost)
    except Exception:
        log.exception("recording metrics failed")


def set_queue_depth(rows: int) -> None:
    """This process's usage queue length (left after the batch just taken)."""
    try:
        USAGE_QUEUE_DEPTH.set(rows)
    except Exception:
        log.exception("recording metrics failed")


def _count_usage(counts: dict[tuple, float], model: str, usage: dict[str, Any]) -> None:
    for kind, field in (*TOKEN_KINDS, ("cached", "cached_tokens")):
        tokens = _amount(usage.get(field))
        if tokens:
            key = (TOKENS, model, kind)
            counts[key] = counts.get(key, 0) + tokens
    cost = _amount(usage.get("cost"))
    if cost:
        counts[(COST, model)] = counts.get((COST, model), 0) + cost


def record_refusal(code: str) -> None:
    """Count one 429 refusal (``rate_limit_exceeded`` or ``budget_exceeded``)."""
    LIMIT_REFUSALS.labels(code_label(code)).inc()


def record_database_unavailable() -> None:
    """Count one API call answered 503 for a database outage."""
    DATABASE_UNAVAILABLE.inc()


def exposition(metrics_dir: str | None, sinks: list | None = None) -> tuple[bytes, str]:
    """The Prometheus text and its content type: every worker's values added up when
    ``metrics_dir`` (``PROMETHEUS_MULTIPROC_DIR``) is set, else this process's; plus the
    sinks' backlogs read at the scrape (``sinks``: (name, backlog, oldest age in
    seconds or None) per sink, from the database: the same figures whichever process
    asks)."""
    if metrics_dir:
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry, path=metrics_dir)
        body = generate_latest(registry)
    else:
        body = generate_latest(REGISTRY)
    if sinks is not None:
        body += _sink_gauges(sinks)
    return body, CONTENT_TYPE_LATEST


class _Families:
    def __init__(self, families):
        self.families = families

    def collect(self):
        return self.families


def _sink_gauges(sinks: list) -> bytes:
    backlog = GaugeMetricFamily(
        "tally_sink_backlog_events", "Events waiting to be delivered, per sink.", labels=["sink"]
    )
    oldest = GaugeMetricFamily(
        "tally_sink_oldest_undelivered_seconds",
        "Age of the oldest event not yet delivered, per sink (0: none waiting).",
        labels=["sink"],
    )
    for name, waiting, age in sinks:
        backlog.add_metric([name[:MAX_LABEL_CHARS]], waiting)
        oldest.add_metric([name[:MAX_LABEL_CHARS]], age or 0.0)
    registry = CollectorRegistry()
    registry.register(_Families([backlog, oldest]))
    return generate_latest(registry)


def _amount(value: Any) -> float:
    """A non-negative number from a usage field (0 for anything else)."""
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        return 0.0
    try:
        number = float(value)
    except ValueError:
        return 0.0
    return number if number > 0 and number != float("inf") else 0.0


SINK_DELIVERIES = Counter(
    "tally_sink_deliveries_total",
    "Events sent to a sink (tally.sinks.delivery), by sink and outcome: delivered, "
    "failed (to be retried), parked (refused by the receiver, or given up after 3 days).",
    ["sink", "outcome"],
)


def count_sink_delivery(sink: str, outcome: str) -> None:
    """Count one event's delivery attempt. Never raises."""
    try:
        _child(SINK_DELIVERIES, sink[:MAX_LABEL_CHARS], outcome).inc()
    except Exception:
        log.exception("recording metrics failed")
