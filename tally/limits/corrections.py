"""Estimates corrected in the limits' counters: when the reconciler (tally.usage.reconcile)
replaces a cut stream's estimate with the upstream's own figures, the difference goes to
the counters the estimate went to (the call's end user, or its key's anonymous bucket,
and its key; the UTC day and month it ended in), and the model's peaks take the real
figures (tally.limits.demand)."""

from __future__ import annotations

import calendar
import logging
from datetime import datetime
from typing import Any

from tally.limits.checks import NANO, periods
from tally.limits.demand import peak_entries
from tally.limits.runtime import LimitsRuntime

log = logging.getLogger(__name__)


def correction_settlement(
    external_id: str | None,
    api_key_id: int | None,
    ended_at: datetime,
    tokens: int,
    cost: float,
    model: str | None = None,
    completion: int = 0,
    call_cost: float = 0.0,
    now: float | None = None,
) -> dict[str, Any]:
    """The settlement (tally.limits.engine.settle) that moves the counters of a call that
    ended at ``ended_at`` (naive UTC) by ``tokens`` and ``cost`` (USD), and raises its
    model's peaks to ``completion`` and ``call_cost`` (the call's real figures)."""
    ended = calendar.timegm(ended_at.timetuple()) + ended_at.microsecond / 1e6
    subjects = [f"user:{external_id}" if external_id is not None else f"anon:{api_key_id}"]
    if api_key_id is not None:
        subjects.append(f"key:{api_key_id}")
    nano = round(cost * NANO)
    adjust = []
    for part, _start, _end in periods(ended).values():
        for subject in subjects:
            adjust.append([f"tally/tok/{part}/{subject}", int(tokens)])
            adjust.append([f"tally/usd/{part}/{subject}", nano])
    settlement: dict[str, Any] = {"adjust": adjust}
    if model and now is not None and now - ended < 86400:
        entries = peak_entries(model, completion, round(call_cost * NANO), ended)
        age = int(now - ended)
        settlement["peaks"] = [[key, max(1, expiry - age), value] for key, expiry, value in entries]
    return settlement


def correct_counters(limits: LimitsRuntime, correction) -> None:
    """Apply one reconciled call (a tally.usage.reconcile.Correction) to the counters;
    a storage failure is logged (the counters are rebuilt from the log when lost)."""
    settlement = correction_settlement(
        correction.external_id,
        correction.api_key_id,
        correction.ended_at,
        correction.tokens,
        correction.cost,
        correction.model,
        correction.completion_tokens,
        correction.call_cost,
        limits.clock(),
    )
    try:
        limits.settle(settlement)
    except Exception as exc:
        log.warning("limit counters not corrected after reconciliation (%s)", exc)
