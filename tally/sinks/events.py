"""What one event says (PRODUCT.md, "Usage events out"). An event is built once, when it
enters the outbox, as the payload the sink's kind sends; a retry or a replay sends the
same id and figures, so a receiver that dedupes on the id counts each call once.

- usage (``llm.usage``) and its correction (``llm.usage.corrected``, id
  ``<request id>.corrected``): a CloudEvents 1.0 object (openmeter, webhook), or a
  Stripe meter event's fields (stripe: only for end users whose identity metadata holds
  ``stripe_customer_id``);
- a limit alert (``tally.limit.threshold``): a CloudEvent (webhook, openmeter) or a
  Slack text (slack).
"""

from __future__ import annotations

from calendar import timegm
from datetime import datetime
from typing import Any

USAGE, CORRECTED, THRESHOLD = "llm.usage", "llm.usage.corrected", "tally.limit.threshold"
USAGE_EVENTS, ALERT_EVENTS = "usage", "alerts"
STRIPE_EVENT_NAME = "llm_tokens"
STRIPE_CUSTOMER_KEY = "stripe_customer_id"
SOURCE = "tally"
# the request log's endpoint -> the event's (PRODUCT.md: chat, responses, embeddings)
ENDPOINTS = {"chat.completions": "chat", "responses": "responses", "embeddings": "embeddings"}


def rfc3339(moment: datetime) -> str:
    """A naive UTC timestamp as RFC 3339 (CloudEvents' ``time``)."""
    return moment.isoformat(timespec="milliseconds") + "Z"


def cloud_event(event_id: str, type_: str, subject: str, time: datetime, data: dict) -> dict:
    """A CloudEvents 1.0 event in its JSON format."""
    return {
        "specversion": "1.0",
        "id": event_id,
        "source": SOURCE,
        "type": type_,
        "subject": subject,
        "time": rfc3339(time),
        "datacontenttype": "application/json",
        "data": data,
    }


def usage_data(row: dict[str, Any], key_name: str | None) -> dict[str, Any]:
    """A call's figures, from its request row (as the usage writer has it)."""
    return {
        "model": row.get("model"),
        "endpoint": ENDPOINTS.get(row.get("endpoint") or "", row.get("endpoint")),
        "key": key_name,
        "prompt_tokens": row.get("prompt_tokens") or 0,
        "completion_tokens": row.get("completion_tokens") or 0,
        "cached_tokens": row.get("cached_tokens") or 0,
        "total_tokens": _total(row),
        "cost_usd": row.get("cost"),
        "cost_source": row.get("cost_source"),
    }


def usage_payload(
    kind: str,
    row: dict[str, Any],
    event_id: str,
    type_: str,
    external_id: str | None,
    key_name: str | None,
    customer: str | None,
) -> dict[str, Any] | None:
    """The payload of one call's event for a sink of ``kind`` (None: not sent to it)."""
    if kind == "stripe":
        if not customer:
            return None
        return {
            "event_name": STRIPE_EVENT_NAME,
            "identifier": event_id,
            "timestamp": timegm(row["created_at"].utctimetuple()),
            "stripe_customer_id": customer,
            "value": _total(row),
        }
    if kind in ("openmeter", "webhook"):
        subject = external_id if external_id is not None else "anonymous"
        return cloud_event(event_id, type_, subject, row["created_at"], usage_data(row, key_name))
    return None  # slack: alerts only


def alert_payload(kind: str, event_id: str, time: datetime, data: dict[str, Any]) -> dict | None:
    """The payload of one limit alert for a sink of ``kind`` (None: not sent to it)."""
    if kind == "slack":
        verb = "reached" if data["threshold"] >= 100 else "is at"
        text = (
            f"Tally: {data['scope']} {verb} {data['threshold']}% of its {data['limit']} limit "
            f"({data['used']} of {data['limit_value']}; the window ends {data['window_end']})"
        )
        return {"text": text}
    if kind in ("openmeter", "webhook"):
        return cloud_event(event_id, THRESHOLD, data["scope"], time, data)
    return None  # stripe: usage only


def _total(row: dict[str, Any]) -> int:
    total = row.get("total_tokens")
    if total is None:
        total = (row.get("prompt_tokens") or 0) + (row.get("completion_tokens") or 0)
    return int(total)
