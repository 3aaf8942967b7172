"""One API call in flight: what the pipeline (tally.proxy.pipeline) carries from step to
step, and what happens when its answer ends, however it ends: its cost settled, its tokens
and cost counted against its limits, its row (and its metrics) handed to the usage writer."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from sqlalchemy.orm import sessionmaker

from tally.cache import Cache
from tally.end_users.claims import EndUserClaim
from tally.errors import UpstreamError
from tally.keys.api_keys import AuthenticatedKey
from tally.limits.admission import Admission, count_usage
from tally.limits.demand import Demand
from tally.limits.runtime import LimitsRuntime
from tally.proxy.endpoints.base import Endpoint, elapsed_ms
from tally.proxy.openai_errors import status_of
from tally.proxy.upstream import UpstreamClient
from tally.usage.call import CallRecord, Outcome
from tally.usage.costs import cached_prices, settle_cost
from tally.usage.recorders import Recorder

if TYPE_CHECKING:
    from tally.traces.spans import CallSpan
    from tally.traces.tracer import Tracer


@dataclass(frozen=True)
class Pipeline:
    """What every call needs besides its own input: built once per process by the
    runtime (tally.runtime.process) and handed to :func:`tally.proxy.pipeline.proxy`."""

    sessions: sessionmaker
    cache: Cache  # API keys, the tracking config, the price table
    hash_key: bytes  # TALLY_HASH_KEY's UTF-8 bytes (hmac-sha256 identifiers)
    upstream: UpstreamClient
    limits: LimitsRuntime
    usage: Recorder
    tracer: Tracer | None = None  # traces on (an OTLP endpoint set): one span per call


@dataclass
class Call:
    """One call in flight: its input, then what each step of the pipeline adds."""

    pipeline: Pipeline
    endpoint: Endpoint
    key: AuthenticatedKey
    body: Any
    request_id: str
    passed_on: dict[str, str] | None = None  # the client's headers the upstream gets
    claim: EndUserClaim | None = None
    started: float = field(default_factory=time.perf_counter)
    admission: Admission = field(default_factory=Admission)
    # filled in when the call is prepared under the tracking config
    record: CallRecord | None = None
    upstream_body: dict[str, Any] | None = None
    stream: bool = False
    hide_usage: bool = False  # usage was asked for on the client's behalf: not relayed
    reconcilable: bool = False  # an OpenRouter stream: a cut one is costed later
    streaming: bool = False  # the upstream's stream is being relayed
    outcome: Outcome = field(default_factory=Outcome)
    span: CallSpan | None = None  # its span while it is open (traces on)
    _prompt_tokens: int | None = None

    @property
    def prompt_tokens(self) -> int:
        """The prompt's tokens, estimated from its text (once)."""
        if self._prompt_tokens is None:
            self._prompt_tokens = self.endpoint.prompt_tokens(self.body)
        return self._prompt_tokens

    def demand(self) -> Demand:
        """What the call is expected to use, reserved while it is in flight against the
        token limits and budgets that apply (tally.limits.demand)."""
        model = self.body.get("model")
        price = self._prices().get(model)
        return Demand(
            self.request_id,
            model,
            self.prompt_tokens,
            self.endpoint.completion_cap(self.body),
            None if price is None else (price.prompt, price.completion),
        )

    def finish(self, error: UpstreamError | None = None) -> None:
        """Settle the call's cost (tally.usage.costs), count its tokens and cost in its
        limits' counters, and hand its row (and with it its metrics) to the usage writer
        (once its answer has ended). A
        stream that ended without its usage (cut by either side) counts an estimate: the
        prompt's tokens and one per content event relayed, costed like a reservation,
        until the upstream's generation endpoint says better (OpenRouter)."""
        if error is not None:
            self.outcome.fail(status_of(error), error.code, error.message)
        out, record, pipeline = self.outcome, self.record, self.pipeline
        out.latency_ms = elapsed_ms(self.started)
        cut = self.streaming and out.usage is None
        if cut:
            prompt = self.prompt_tokens
            out.usage = {
                "prompt_tokens": prompt,
                "completion_tokens": out.streamed,
                "total_tokens": prompt + out.streamed,
                "cached_tokens": None,
                "cost": None,
            }
            out.reconcile = self.reconcilable and bool(out.generation_id)
        prices = lambda: cached_prices(pipeline.cache, pipeline.sessions)  # noqa: E731
        settle_cost(out, (out.model, record.model), prices, estimate=cut)
        if cut and out.usage.get("cost") is None:
            out.usage["cost"] = self.admission.peak_cost  # no price: the model's peak
        if self.span is not None:  # the span ends with the answer, streamed or not
            self.end_span(out.status, out.error_code)
        count_usage(pipeline.limits, self.admission, out.usage)
        pipeline.usage.submit(record, out)  # its metrics are counted with its row

    def end_span(self, status: int, error_type: str | None) -> None:
        """End the call's span (tally.traces) with how it ended: ``status``, the error's
        code, the model and usage the upstream reported, the identifier sent."""
        span, self.span = self.span, None
        out, record = self.outcome, self.record
        span.end(
            status,
            error_type,
            response_model=out.model,
            usage=out.usage,
            pseudo_id=record.identifier if record is not None else None,
            response_id=out.generation_id,
        )

    def _prices(self) -> dict:
        """The price table (the cached one; empty when it cannot be read)."""
        pipeline = self.pipeline
        try:
            return cached_prices(pipeline.cache, pipeline.sessions)
        except Exception:  # the database is down: nothing is priced, nothing fails
            return {}
