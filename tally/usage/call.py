"""One API call as the request log records it: who made it and how it was stamped
(:class:`CallRecord`, known before the upstream answers), and how it ended
(:class:`Outcome`, filled in as the answer goes by), with where its cost came from."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from tally.end_users.claims import EndUserClaim

# Where a call's cost came from (tally.usage.costs): the upstream's usage.cost, the price
# table, an estimate for a stream cut before its usage (until reconciled).
UPSTREAM, PRICE_TABLE, ESTIMATED = "upstream", "price_table", "estimated"
# an estimate the upstream's own figures later replaced (tally.usage.reconcile)
RECONCILED = "reconciled"


@dataclass
class Outcome:
    """What happened to one call, filled in as the answer goes by."""

    status: int = 200
    error_code: str | None = None
    error_message: str | None = None
    usage: dict[str, Any] | None = None
    generation_id: str | None = None
    model: str | None = None
    latency_ms: float | None = None
    ttft_ms: float | None = None
    cost_source: str | None = None  # tally.usage.costs: upstream, price_table, estimated
    streamed: int = 0  # content events relayed (about a token each): a cut stream's estimate
    reconcile: bool = False  # an estimate the upstream's generation endpoint will correct
    refused: bool = False  # Tally refused the call before the upstream (tally.proxy.refusals)

    def copy(self) -> Outcome:
        """A shallow copy (its usage dict shared), as ``dataclasses.replace(self)`` makes
        but without a call to ``__init__`` per field: one per call on the request path."""
        twin = Outcome.__new__(Outcome)
        twin.__dict__.update(self.__dict__)
        return twin

    def fail(self, status: int, code: str | None, message: str | None) -> None:
        """Mark the call failed; the first failure seen is the one recorded."""
        if self.error_code is None and self.status < 400:
            self.status, self.error_code, self.error_message = status, code, message


@dataclass(frozen=True)
class CallRecord:
    """Who made a call and how it was stamped: known before the upstream answers."""

    request_id: str
    api_key_id: int | None
    claim: EndUserClaim | None
    identifier: str | None
    revision_id: int | None
    model: str | None
    stream: bool
    endpoint: str = "chat.completions"
    is_demo: bool = False
