"""Limits on the request path: :func:`admit` before a call goes upstream, and
:func:`count_usage` when its usage is known.

``admit`` runs once the end user is known, so a request refused for any other reason
(400, 401, 413) never reaches it and costs nothing; it raises :class:`RateLimited` /
:class:`BudgetExceeded` (429) or fills the answer's ``X-RateLimit-*`` headers. The
counters live in the deployment's limit storage (tally/limits/runtime.py), the
policies in the database, read through the versioned cache like the tracking config;
what a request is held to is its gate (tally/limits/gates.py).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from tally.end_users.claims import EndUserClaim
from tally.errors import LimitsUnavailable, RateLimited
from tally.limits.checks import NANO, Check, refusal
from tally.limits.demand import Demand, peak_entries, peak_marker
from tally.limits.engine import held_key
from tally.limits.gates import Gate, gate_for, resets_of
from tally.limits.policy import format_value
from tally.limits.policy_store import load_policies
from tally.limits.rebuild import seed_counters, seed_peaks
from tally.limits.runtime import LimitsRuntime

WAIT_STEP = 0.01  # seconds between two looks at a counter another request is rebuilding
# Long enough for the rebuilder's claim to expire (engine.CLAIM_TTL): if it died, a
# waiter claims the rebuild itself rather than count on an empty counter.
WAIT_STEPS = 600


@dataclass
class Admission:
    """What the admission left for the rest of the call: headers, and the counters
    that the call's tokens and cost go to."""

    headers: dict[str, str] = field(default_factory=dict)
    usage_counters: list[Check] = field(default_factory=list)
    # what the call holds in usage_counters until it ends: (tokens, nano-dollars, its
    # model's peak cost of one call), under its id (tally.limits.demand.call_id)
    reserved: tuple[int, int, int] | None = None
    call: int | None = None
    peaks_of: str | None = None  # the model whose peaks the call's end raises (None: none kept)

    @property
    def peak_cost(self) -> float | None:
        """The largest cost of one call of this call's model today or yesterday (USD),
        when the admission read it; what a cut stream of an unpriced model is costed at."""
        if self.reserved is None or not self.reserved[2]:
            return None
        return self.reserved[2] / NANO


def peek_headers(limits: LimitsRuntime, key, claim: EndUserClaim | None) -> dict[str, str]:
    """The X-RateLimit-* headers for an answer that does not go upstream (an error
    before admission, the model list): nothing counted, nothing refused."""
    admission = Admission()
    admit(limits, key, claim, admission, hit=False)
    return admission.headers


class StaleConfig(Exception):
    """The tracking config a request was prepared with is no longer current (or could
    not be checked): prepare it again with the config read as usual, and admit again."""


def checks_config(limits: LimitsRuntime, key, claim: EndUserClaim | None) -> bool:
    """True when this request's admission will check the tracking config's cache
    version (a limit applies, and the storage is the Redis the version lives in)."""
    if not limits.checks_versions():
        return False
    policies = load_policies(limits.sessions, limits.cache)
    return bool(gate_for(limits, policies, key, claim, limits.clock()).checks)


def admit(
    limits: LimitsRuntime,
    key,
    claim: EndUserClaim | None,
    admission: Admission,
    hit: bool = True,
    version: int | None = None,
    demand: Callable[[], Demand] | None = None,
) -> None:
    """Check and count one request about to go upstream; raise 429 when a limit is
    used up (then nothing is counted), else fill ``admission``. With ``hit`` false,
    only fill the headers. ``version``: the cache version the request's tracking config
    was loaded under, to check in the same round trip (:func:`checks_config`); raise
    :class:`StaleConfig`, with nothing counted, when it moved on or the storage
    failed. ``demand``: the call's expected use (called only when a token limit or a
    budget applies), held against them until :func:`count_usage`."""
    policies = load_policies(limits.sessions, limits.cache)
    now = limits.clock()
    gate = gate_for(limits, policies, key, claim, now)
    wanted = demand() if hit and demand is not None and policies.has_counters else None
    if wanted is not None and wanted.model:
        admission.peaks_of = wanted.model
    if not gate.checks:
        return
    checks = gate.checks
    plan = {
        "checks": gate.plan,
        "markers": gate.markers,
        "resets": resets_of(policies, gate.subjects, now) if policies.resets else [],
        "now": now,
        "hit": hit,
        "version": None if version is None else str(version),
    }
    if wanted is not None and gate.counters:
        plan["demand"] = wanted.as_plan(now)
        plan["peak_model"] = wanted.model or ""
        plan["markers"] = [*gate.markers, peak_marker(wanted.model or "", policies.stamp)]
    try:
        result = run_seeded(limits, plan, checks, policies)
    except (LimitsUnavailable, RateLimited):
        raise
    except Exception as exc:  # any storage failure: redis errors, socket errors, …
        if version is not None:  # the config went unchecked: again, as without limits
            raise StaleConfig() from None
        limits.storage_failed(exc, "admitting" if hit else "reading")
        return
    if result.get("stale"):
        raise StaleConfig()
    stats = result["stats"]
    admission.usage_counters = gate.counters
    if "demand" in plan and result.get("reserved") is not None:
        admission.reserved = tuple(result["reserved"])
        admission.call = plan["demand"]["id"]
    refused = result["refused"]
    shown = refused if refused is not None else _shown(gate, stats)
    admission.headers.update(_headers(checks[shown], stats[shown]))
    if refused is not None and hit:
        raise refusal(checks[refused], stats[refused], now, admission.headers)


def run_seeded(limits: LimitsRuntime, plan, checks, policies) -> dict:
    """Run the plan; first rebuild the counters it claims, or wait for another request
    that is rebuilding them (6 s at most: then it goes on without)."""
    markers = plan["markers"] = limits.unready(plan["markers"])
    for _ in range(WAIT_STEPS):
        result = limits.run(plan)
        if result.get("stale"):
            return result
        plan["version"] = None  # it matched: what follows needs no second look
        if "unseeded" not in result:
            limits.note_ready(markers)
            return result
        if result["unseeded"]:
            unseeded, now = result["unseeded"], plan["now"]
            seeder = getattr(limits.runner(), "seed_window", None)
            seed_counters(limits.sessions, limits.storage, checks, unseeded, policies, now, seeder)
            model = plan.get("peak_model")
            if model is not None and peak_marker(model, policies.stamp) in unseeded:
                seed_peaks(limits.sessions, limits.storage, model, now)
            result = limits.run({**plan, "markers": [], "ready": result["unseeded"]})
            limits.note_ready(markers)
            return result
        time.sleep(WAIT_STEP)  # a greenlet's sleep under gevent
    return limits.run({**plan, "markers": []})


def count_usage(limits: LimitsRuntime, admission: Admission | None, usage: Any) -> None:
    """A finished call on the counters its admission named: what it held released, its
    tokens and cost added, its model's peaks raised (a storage failure is logged: the
    answer is already on its way)."""
    if admission is None or not (admission.usage_counters or admission.peaks_of):
        return
    usage = usage if isinstance(usage, dict) else {}
    completion = _number(usage.get("completion_tokens"))
    tokens = _number(usage.get("prompt_tokens")) + completion
    if not tokens:
        tokens = _number(usage.get("total_tokens"))
    nano = round(_number(usage.get("cost")) * 1e9)
    now = limits.clock()
    settlement: dict[str, list] = {}
    if admission.usage_counters:
        settlement["add"] = [
            [c.key, c.ttl(now), nano if c.unit == "usd" else int(tokens)]
            for c in admission.usage_counters
        ]
    if admission.reserved is not None and (admission.reserved[0] or admission.reserved[1]):
        held_tokens, held_nano, _peak = admission.reserved
        settlement["release"] = [
            [held_key(c.key), admission.call, held_nano if c.unit == "usd" else held_tokens]
            for c in admission.usage_counters
        ]
    if admission.peaks_of and usage:
        settlement["peaks"] = peak_entries(admission.peaks_of, int(completion), nano, now)
    if not any(settlement.values()):
        return
    try:
        limits.settle(settlement)
    except Exception as exc:
        limits.storage_failed(exc, "counting usage")


def _shown(gate: Gate, stats: list[list[float]]) -> int:
    """The user's message quota when it applies, else the tightest limit."""
    if gate.quota is not None:
        return gate.quota
    checks = gate.checks
    return min(range(len(checks)), key=lambda i: stats[i][1] / max(checks[i].limit, 1))


def _headers(check: Check, stats: list[float]) -> dict[str, str]:
    reset, remaining = stats
    return {
        "X-RateLimit-Limit": check.limit_text,
        "X-RateLimit-Remaining": check.display(remaining),
        "X-RateLimit-Reset": str(int(reset + 1)),  # as flask-limiter writes it
    }


def _number(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return 0.0
    return float(value)


__all__ = ["Admission", "admit", "count_usage", "format_value", "peek_headers"]
