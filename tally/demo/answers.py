"""What every demo answer shares: its prices, the reply that names the upstream identifier
Tally attached, the text of a message, and a whole JSON answer as the demo returns it."""

from __future__ import annotations

import json
from typing import Any

PROMPT_PRICE = 0.5 / 1_000_000  # dollars per token, like a small hosted model


COMPLETION_PRICE = 1.5 / 1_000_000


def answer(said: str, body: dict) -> str:
    """The demo's reply to ``said``: it names the upstream identifier Tally attached."""
    said = " ".join(said.split())
    if len(said) > 200:
        said = said[:200] + "…"
    identity = body.get("identity")
    upstream_id = (
        identity.get("id")
        if isinstance(identity, dict)
        else body.get("safety_identifier") or body.get("user")
    )
    seen = (
        f"Tally attached the upstream identifier {upstream_id}."
        if upstream_id
        else ("No upstream identifier was attached.")
    )
    return (
        f"Hello from Tally's demo upstream: no model was called. {seen} "
        f"You said: {said or '(nothing)'}"
    )


def text_of(message: Any) -> str:
    """The text of a chat message or a Responses API input item."""
    content = message.get("content") if isinstance(message, dict) else None
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(p.get("text", "") for p in content if isinstance(p, dict))
    return ""


def json_answer(status: int, payload: dict, headers: dict | None = None):
    """A whole JSON answer as :func:`respond` returns it."""
    data = json.dumps(payload).encode()
    return status, {**(headers or {}), "Content-Type": "application/json"}, iter([data])
