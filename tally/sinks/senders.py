"""How each kind of sink is spoken to (PRODUCT.md, "Usage events out"), over ``requests``
with connect and read timeouts and no redirects followed (a secret would go along).

A sender takes a sink's waiting events in order and returns one :class:`Result` per event
it tried; it stops after a failure worth retrying (the receiver is down or busy: the
events behind it wait their turn) and goes on past one the receiver refused (4xx other
than 408 and 429: that event is parked, the others still go). Where each event is a
request of its own (Stripe, webhooks, Slack) the first goes alone, then up to
:data:`IN_FLIGHT` at once while the receiver answers.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

import requests

from tally.sinks.signing import sign

TIMEOUT = (5.0, 15.0)  # connect, read (seconds)
OPENMETER_BATCH = 100  # events per OpenMeter request
IN_FLIGHT = 8  # requests at once to a receiver that answers (one while it may be down)
ERROR_CHARS = 300
DELIVERED, RETRY, PARK = "delivered", "retry", "parked"


@dataclass(frozen=True)
class Waiting:
    """One claimed event, as a sender needs it."""

    id: int
    event_id: str
    type: str
    payload: dict[str, Any]


@dataclass(frozen=True)
class Result:
    """What became of one event: delivered, to retry, or parked; the error if not sent."""

    outcome: str
    error: str | None = None


@dataclass(frozen=True)
class Target:
    """Where and how: the sink's kind, URL and (decrypted) secret."""

    kind: str
    url: str
    secret: str | None


class Transport:
    """POSTs with the timeouts, over one pooled ``requests`` session."""

    def __init__(self, timeout: tuple[float, float] = TIMEOUT):
        self.timeout = timeout
        self._session = requests.Session()
        self._session.trust_env = False  # no proxy from the environment sees a secret
        self._pool: ThreadPoolExecutor | None = None

    def map(self, function: Callable, items: list) -> list:
        """``function`` over ``items``, results in order; several at once on threads of
        the transport's pool (one by one where gevent has patched threading: its
        threads would be greenlets, and the loop runs off the event loop)."""
        if len(items) < 2 or _green():
            return [function(item) for item in items]
        if self._pool is None:
            self._pool = ThreadPoolExecutor(IN_FLIGHT, thread_name_prefix="tally-sinks-send")
        return list(self._pool.map(function, items))

    def post(self, url: str, body: bytes, headers: dict[str, str]) -> tuple[int, str]:
        """The status and (start of the) body; raises ``requests.RequestException``."""
        response = self._session.post(
            url, data=body, headers=headers, timeout=self.timeout, allow_redirects=False
        )
        try:
            return response.status_code, response.text[:ERROR_CHARS]
        finally:
            response.close()


def _green() -> bool:
    if "gevent" not in sys.modules:
        return False
    from gevent import monkey

    return monkey.is_module_patched("threading")


def classify(status: int, text: str, secret: str | None) -> Result:
    """A receiver's answer as a result: 2xx delivered; 408, 429, 5xx (and a redirect,
    not followed) retried; any other 4xx parks the event."""
    if 200 <= status < 300:
        return Result(DELIVERED)
    error = f"HTTP {status}: {' '.join(text.split())}"[:ERROR_CHARS]
    if secret:
        error = error.replace(secret, "[secret]")
    if 400 <= status < 500 and status not in (408, 429):
        return Result(PARK, error)
    return Result(RETRY, error)


def _failure(exc: Exception) -> Result:
    kind = type(exc).__name__
    if isinstance(exc, requests.Timeout):
        return Result(RETRY, f"timed out ({kind})")
    if isinstance(exc, requests.ConnectionError):
        return Result(RETRY, f"could not connect ({kind})")
    return Result(RETRY, f"request failed ({kind})")


def _bearer(secret: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {secret}"} if secret else {}


def _one_by_one(
    transport: Transport, events: list[Waiting], post_one: Callable[[Waiting], Result]
) -> list[Result]:
    """One request per event: the first alone (a receiver that is down costs one
    attempt), then :data:`IN_FLIGHT` at a time while the receiver answers (a backlog
    drains at several times one request's pace); after a group with a failure worth
    retrying, the events behind it wait."""
    results: list[Result] = []
    start, width = 0, 1
    while start < len(events):
        found = transport.map(post_one, events[start : start + width])
        results.extend(found)
        if any(result.outcome == RETRY for result in found):
            break
        start, width = start + width, IN_FLIGHT
    return results


def _post(transport: Transport, target: Target, url: str, body: bytes, headers) -> Result:
    try:
        status, text = transport.post(url, body, headers)
    except requests.RequestException as exc:
        return _failure(exc)
    return classify(status, text, target.secret)


def stripe_form(payload: dict[str, Any]) -> dict[str, str]:
    """A Stripe meter event's form fields."""
    return {
        "event_name": payload["event_name"],
        "identifier": payload["identifier"],
        "timestamp": str(payload["timestamp"]),
        "payload[stripe_customer_id]": payload["stripe_customer_id"],
        "payload[value]": str(payload["value"]),
    }


def send_stripe(transport: Transport, target: Target, events: list[Waiting], now: int):
    """One ``POST {url}/v1/billing/meter_events`` per event, form-encoded."""
    url = f"{target.url}/v1/billing/meter_events"
    headers = {"Content-Type": "application/x-www-form-urlencoded", **_bearer(target.secret)}

    def post_one(event: Waiting) -> Result:
        body = urlencode(stripe_form(event.payload)).encode("ascii")
        return _post(transport, target, url, body, headers)

    return _one_by_one(transport, events, post_one)


def _json(payload: Any) -> bytes:
    return json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def send_openmeter(transport: Transport, target: Target, events: list[Waiting], now: int):
    """``POST {url}/api/v1/events``: a CloudEvents batch of up to 100; a batch the
    receiver refuses (4xx) is sent again one event at a time, so only the bad one parks."""
    url = f"{target.url}/api/v1/events"
    single = {"Content-Type": "application/cloudevents+json", **_bearer(target.secret)}
    batch = {"Content-Type": "application/cloudevents-batch+json", **_bearer(target.secret)}

    def post_one(event: Waiting) -> Result:
        return _post(transport, target, url, _json(event.payload), single)

    results: list[Result] = []
    for start in range(0, len(events), OPENMETER_BATCH):
        chunk = events[start : start + OPENMETER_BATCH]
        if len(chunk) == 1:
            found = _one_by_one(transport, chunk, post_one)
        else:
            body = _json([event.payload for event in chunk])
            whole = _post(transport, target, url, body, batch)
            if whole.outcome == PARK:
                found = _one_by_one(transport, chunk, post_one)
            else:
                found = [whole] * len(chunk) if whole.outcome == DELIVERED else [whole]
        results.extend(found)
        if found[-1].outcome == RETRY:
            break
    return results


def send_webhook(transport: Transport, target: Target, events: list[Waiting], now: int):
    """One POST per event, the CloudEvent signed per Standard Webhooks."""

    def post_one(event: Waiting) -> Result:
        body = _json(event.payload)
        headers = {
            "Content-Type": "application/json",
            "webhook-id": event.event_id,
            "webhook-timestamp": str(now),
            "webhook-signature": sign(target.secret or "", event.event_id, now, body),
        }
        return _post(transport, target, target.url, body, headers)

    return _one_by_one(transport, events, post_one)


def send_slack(transport: Transport, target: Target, events: list[Waiting], now: int):
    """One incoming-webhook message per alert."""
    headers = {"Content-Type": "application/json"}

    def post_one(event: Waiting) -> Result:
        return _post(transport, target, target.url, _json(event.payload), headers)

    return _one_by_one(transport, events, post_one)


SENDERS = {
    "stripe": send_stripe,
    "openmeter": send_openmeter,
    "webhook": send_webhook,
    "slack": send_slack,
}
