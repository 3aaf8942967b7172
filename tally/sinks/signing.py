"""Standard Webhooks signatures (https://www.standardwebhooks.com/, the spec's "Signature
scheme"): ``webhook-signature`` is ``v1,`` + base64 of HMAC-SHA256 over
``{webhook-id}.{webhook-timestamp}.{body}``, keyed with the base64-decoded part of the
``whsec_…`` secret. The verifier is what a receiver runs (tests use it, and its
tolerance is the spec's five minutes)."""

from __future__ import annotations

import base64
import hashlib
import hmac

from tally.sinks.secrets import WEBHOOK_PREFIX

TOLERANCE = 300  # seconds either side of now that a receiver accepts


def secret_bytes(secret: str) -> bytes:
    """The HMAC key of a ``whsec_`` secret (any other secret: its UTF-8 bytes)."""
    if secret.startswith(WEBHOOK_PREFIX):
        return base64.b64decode(secret[len(WEBHOOK_PREFIX) :])
    return secret.encode("utf-8")


def sign(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    """The ``webhook-signature`` header's value for one message."""
    signed = f"{msg_id}.{timestamp}.".encode() + body
    digest = hmac.new(secret_bytes(secret), signed, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode("ascii")


def verify(secret: str, headers: dict[str, str], body: bytes, now: int) -> bool:
    """Whether ``headers`` (lower-case names) sign ``body`` with ``secret`` within the
    tolerance; any of several space-separated ``v1,`` signatures may match."""
    msg_id = headers.get("webhook-id")
    stamp = headers.get("webhook-timestamp")
    given = headers.get("webhook-signature")
    if not msg_id or not stamp or not given or not stamp.isdigit():
        return False
    if abs(now - int(stamp)) > TOLERANCE:
        return False
    expected = sign(secret, msg_id, int(stamp), body).encode()
    return any(
        hmac.compare_digest(expected, candidate.encode())
        for candidate in given.split(" ")
        if candidate.startswith("v1,")
    )
