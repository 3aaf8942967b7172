"""OpenRouter's generation endpoint: a generation's final tokens and cost, asked for
after the fact (``GET {upstream}/generation?id=gen-…``, Bearer the upstream key), with
``requests``, off the request path (tally.usage.reconcile).

The answer is ``{"data": {...}}``; the fields read are ``total_cost`` (USD, what the
account was charged; ``usage`` holds the same figure and is read when ``total_cost`` is
absent), ``native_tokens_prompt``, ``native_tokens_completion`` and
``native_tokens_cached`` (the model's own tokenizer: the counts OpenRouter's ``usage``
objects report, so a reconciled row adds up like any other), falling back to
``tokens_prompt`` / ``tokens_completion`` (normalized counts) when the native ones are
missing. Anything else (latency, provider, finish reason) is not kept.

A generation is not queryable for a few seconds after it ends (404): that, any other
status, a body without a cost and a network failure are all :class:`GenerationPending`,
to be asked again later. The upstream key never appears in an exception or a log line.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import requests

from tally.usage.numbers import as_float, count

TIMEOUT = 10.0  # seconds, connect and read


class GenerationPending(Exception):
    """The generation's figures are not available (yet); ``reason`` says why, briefly."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class Generation:
    """A generation's final figures, in the request log's terms."""

    prompt_tokens: int | None
    completion_tokens: int | None
    cached_tokens: int | None
    cost: float

    @property
    def total_tokens(self) -> int:
        """Prompt plus completion tokens."""
        return (self.prompt_tokens or 0) + (self.completion_tokens or 0)


class GenerationClient:
    """Asks the upstream's generation endpoint; one ``requests.Session`` (its pool)."""

    def __init__(self, base_url: str, api_key: str | None, timeout: float = TIMEOUT):
        self.url = base_url.rstrip("/") + "/generation"
        self._session = requests.Session()
        if api_key:
            self._session.headers["Authorization"] = f"Bearer {api_key}"
        self._timeout = timeout

    def __repr__(self) -> str:  # the key stays out of reprs and logs
        return f"GenerationClient(url={self.url!r})"

    def fetch(self, generation_id: str) -> Generation:
        """The final figures of ``generation_id``, or :class:`GenerationPending`."""
        try:
            response = self._session.get(
                self.url, params={"id": generation_id}, timeout=self._timeout, allow_redirects=False
            )
        except requests.RequestException as exc:
            raise GenerationPending(type(exc).__name__) from None  # no URL, no header
        if response.status_code != 200:
            raise GenerationPending(f"HTTP {response.status_code}")
        try:
            body = response.json()
        except ValueError:
            raise GenerationPending("not JSON") from None
        return read_generation(body)

    def close(self) -> None:
        """Drop the connection pool."""
        self._session.close()


def read_generation(body: Any) -> Generation:
    """The figures of a generation endpoint answer (see the module's docstring)."""
    data = body.get("data") if isinstance(body, dict) else None
    if not isinstance(data, dict):
        raise GenerationPending("no data")
    cost = as_float(data.get("total_cost"))
    if cost is None:
        cost = as_float(data.get("usage"))
    if cost is None:
        raise GenerationPending("no total_cost")
    return Generation(
        prompt_tokens=_first(data, "native_tokens_prompt", "tokens_prompt"),
        completion_tokens=_first(data, "native_tokens_completion", "tokens_completion"),
        cached_tokens=count(data.get("native_tokens_cached")),
        cost=cost,
    )


def _first(data: dict[str, Any], *names: str) -> int | None:
    for name in names:
        value = count(data.get(name))
        if value is not None:
            return value
    return None
