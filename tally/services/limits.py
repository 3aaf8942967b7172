"""Limits on the request path: :func:`admit` before a call goes upstream, and
:func:`count_usage` when its usage is known.

``admit`` runs once the end user is known, so a request refused for any other reason
(400, 401, 413) never reaches it and costs nothing; it raises :class:`RateLimited` /
:class:`BudgetExceeded` (429) or fills the answer's ``X-RateLimit-*`` headers. The
counters live in the deployment's limit storage (:func:`install_limits`), the policies
in the database, read through the versioned cache like the tracking config.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from limits.storage import Storage, storage_from_string

from tally.cache import Cache
from tally.errors import LimitsUnavailable, RateLimited
from tally.identity import EndUserClaim
from tally.limits import engine
from tally.limits.lmdb_plans import LMDBPlans
from tally.limits.lmdb_storage import LMDBStorage
from tally.limits.policy import format_value
from tally.limits.redis_plans import plans_for
from tally.limits.storage import LocalStorage, wall_clock
from tally.services.limit_checks import Check, refusal
from tally.services.limit_gates import Gate, gate_for, resets_of
from tally.services.limit_policies import load_policies
from tally.services.limit_seed import seed_counters
from tally.versions import PolledVersion, RedisVersion

log = logging.getLogger(__name__)
LOG_EVERY = 60.0  # seconds between two log lines about an unreachable storage
WAIT_STEP = 0.01  # seconds between two looks at a counter another request is rebuilding
# Long enough for the rebuilder's claim to expire (engine.CLAIM_TTL): if it died, a
# waiter claims the rebuild itself rather than count on an empty counter.
WAIT_STEPS = 600
READY_TRUST = 60.0  # seconds; a storage restarted within them loses its counters' rebuild
READY_MAX = 200_000
# seconds between two reads of a Redis-held cache version for the policies: a change
# applies everywhere within this (the contract says within 1 second)
POLICY_POLL = 0.5


@dataclass
class LimitsRuntime:
    """This process's view of the limit storage."""

    storage: Storage
    cache: Cache | None = None  # policies, on the gateway's version (polled on Redis)
    metadata_cache: Cache | None = None  # users' stored metadata (tiers), same version
    fail: str = "open"
    clock: Callable[[], float] = wall_clock
    description: str = "memory"
    unavailable_count: int = 0  # requests served (open) or refused (closed) unchecked
    _logged_at: float = float("-inf")
    # Counters this process has seen rebuilt ("ready"), and until when it trusts that
    # without asking the storage again: saves a lookup per check per request.
    ready: dict[str, float] = field(default_factory=dict)
    # (storage, what runs a whole plan on it in one call: the storage itself, or for
    # Redis a Lua script), found again when a test swaps the storage
    _runner: tuple[Storage, Any] | None = None

    def unready(self, markers: list[str]) -> list[str]:
        """The markers not recently seen ready."""
        now = time.monotonic()
        return [m for m in markers if self.ready.get(m, 0.0) <= now]

    def note_ready(self, markers: list[str]) -> None:
        """Trust these markers for READY_TRUST seconds."""
        if len(self.ready) > READY_MAX:
            self.ready.clear()
        until = time.monotonic() + READY_TRUST
        for marker in markers:
            self.ready[marker] = until

    def set_clock(self, clock: Callable[[], float]) -> None:
        """Use ``clock`` for windows and periods (tests move time instead of sleeping)."""
        self.clock = clock
        if isinstance(self.storage, LocalStorage | LMDBStorage):
            self.storage.clock = clock

    def runner(self) -> Any:
        """What runs a plan on the storage in one call: a script on Redis, one
        transaction on the counter file, else the storage itself (the engine)."""
        if self._runner is None or self._runner[0] is not self.storage:
            storage = self.storage
            plans = LMDBPlans(storage) if isinstance(storage, LMDBStorage) else None
            self._runner = (storage, plans or plans_for(storage) or storage)
        return self._runner[1]

    def run(self, plan: dict[str, Any]) -> dict[str, Any]:
        """Run an admission plan: on the server when the storage has one."""
        remote = getattr(self.runner(), "evaluate", None)
        return remote(plan) if remote is not None else engine.evaluate(self.storage, plan)

    def add(self, additions: list[list[Any]]) -> None:
        """Add a call's usage to its counters."""
        remote = getattr(self.runner(), "add_usage", None)
        if remote is not None:
            remote(additions)
        else:
            engine.add_usage(self.storage, additions)

    def storage_failed(self, exc: Exception, what: str) -> None:
        """Count it, log it at most once a minute; raise 503 when failing closed."""
        self.unavailable_count += 1
        now = time.monotonic()
        if now - self._logged_at >= LOG_EVERY:
            self._logged_at = now
            log.error(
                "limit storage %s unreachable while %s (%s: %s); failing %s (%d requests so far)",
                self.description,
                what,
                type(exc).__name__,
                exc,
                self.fail,
                self.unavailable_count,
            )
        if self.fail == "closed" and what == "admitting":
            raise LimitsUnavailable(
                "Rate limits cannot be checked right now, so the request was not served. "
                "Try again shortly."
            ) from None


@dataclass
class Admission:
    """What the admission left for the rest of the call: headers, and the counters
    that the call's tokens and cost go to."""

    headers: dict[str, str] = field(default_factory=dict)
    usage_counters: list[Check] = field(default_factory=list)


def make_storage(uri: str | None, db_path: str | None) -> tuple[Storage, str]:
    """The storage for ``TALLY_RATELIMIT_STORAGE_URI`` (any ``limits`` URI, ours
    included); unset: the instance's shared counter file (under gunicorn), or this
    process's memory when the process is the whole instance."""
    if uri:
        options: dict[str, Any] = {}
        if uri.startswith(("redis://", "rediss://", "redis+sentinel://", "redis+cluster://")):
            # an unreachable Redis must fail fast, not hold the request for the OS timeout
            options = {"socket_timeout": 0.5, "socket_connect_timeout": 0.5}
        return storage_from_string(uri, **options), uri.split("://", 1)[0] + "://"
    if db_path:
        return LMDBStorage(f"tally+lmdb://{db_path}"), "tally+lmdb:// (this instance's file)"
    return LocalStorage(), "tally+memory:// (this process)"


def build_limits(settings, cache: Cache) -> LimitsRuntime:
    """This process's limits: the deployment's storage, policies read through ``cache``
    (a change to them bumps its version everywhere)."""
    storage, description = make_storage(settings.ratelimit_storage_uri, settings.limits_db)
    version = cache.version
    if isinstance(version, RedisVersion):  # a GET per lookup: poll it instead (in contract)
        version = PolledVersion(version, POLICY_POLL)
    return LimitsRuntime(
        storage,
        Cache(version, max_staleness=cache.max_staleness),
        Cache(version, max_staleness=cache.max_staleness),  # users' metadata (tiers)
        settings.ratelimit_fail,
        description=description,
    )


def runtime_of(gateway) -> LimitsRuntime:
    """The gateway's limits."""
    return gateway.limits


def peek_headers(gateway, key, claim: EndUserClaim | None) -> dict[str, str]:
    """The X-RateLimit-* headers for an answer that does not go upstream (an error
    before admission, the model list): nothing counted, nothing refused."""
    admission = Admission()
    admit(gateway, key, claim, admission, hit=False)
    return admission.headers


def admit(gateway, key, claim: EndUserClaim | None, admission: Admission, hit: bool = True) -> None:
    """Check and count one request about to go upstream; raise 429 when a limit is
    used up (then nothing is counted), else fill ``admission``. With ``hit`` false,
    only fill the headers."""
    runtime = gateway.limits
    policies = load_policies(gateway.sessions, runtime.cache)
    now = runtime.clock()
    gate = gate_for(gateway, policies, key, claim, now)
    if not gate.checks:
        return
    checks = gate.checks
    plan = {
        "checks": gate.plan,
        "markers": gate.markers,
        "resets": resets_of(policies, gate.subjects, now) if policies.resets else [],
        "now": now,
        "hit": hit,
    }
    try:
        result = _run_seeded(gateway.sessions, runtime, plan, checks, policies)
    except (LimitsUnavailable, RateLimited):
        raise
    except Exception as exc:  # any storage failure: redis errors, socket errors, …
        runtime.storage_failed(exc, "admitting" if hit else "reading")
        return
    stats = result["stats"]
    admission.usage_counters = gate.counters
    refused = result["refused"]
    shown = refused if refused is not None else _shown(gate, stats)
    admission.headers.update(_headers(checks[shown], stats[shown]))
    if refused is not None and hit:
        raise refusal(checks[refused], stats[refused], now, admission.headers)


def _run_seeded(sessions, runtime: LimitsRuntime, plan, checks, policies) -> dict:
    """Run the plan; first rebuild the counters it claims, or wait for another request
    that is rebuilding them (6 s at most: then it goes on without)."""
    markers = plan["markers"] = runtime.unready(plan["markers"])
    for _ in range(WAIT_STEPS):
        result = runtime.run(plan)
        if "unseeded" not in result:
            runtime.note_ready(markers)
            return result
        if result["unseeded"]:
            seed_counters(
                sessions, runtime.storage, checks, result["unseeded"], policies, plan["now"]
            )
            result = runtime.run({**plan, "markers": [], "ready": result["unseeded"]})
            runtime.note_ready(markers)
            return result
        time.sleep(WAIT_STEP)  # a greenlet's sleep under gevent
    return runtime.run({**plan, "markers": []})


def count_usage(runtime: LimitsRuntime, admission: Admission | None, usage: Any) -> None:
    """Add a finished call's tokens and cost to the counters its admission named (a
    storage failure is logged: the answer is already on its way)."""
    if admission is None or not admission.usage_counters or not isinstance(usage, dict):
        return
    tokens = _number(usage.get("prompt_tokens")) + _number(usage.get("completion_tokens"))
    if not tokens:
        tokens = _number(usage.get("total_tokens"))
    nano = round(_number(usage.get("cost")) * 1e9)
    now = runtime.clock()
    additions = [
        [c.key, c.ttl(now), nano if c.unit == "usd" else int(tokens)]
        for c in admission.usage_counters
    ]
    try:
        runtime.add(additions)
    except Exception as exc:
        runtime.storage_failed(exc, "counting usage")


def _shown(gate: Gate, stats: list[list[float]]) -> int:
    """The user's message quota when it applies, else the tightest limit."""
    if gate.quota is not None:
        return gate.quota
    checks = gate.checks
    return min(range(len(checks)), key=lambda i: stats[i][1] / max(checks[i].limit, 1))


def _headers(check: Check, stats: list[float]) -> dict[str, str]:
    reset, remaining = stats
    return {
        "X-RateLimit-Limit": check.display(check.limit),
        "X-RateLimit-Remaining": check.display(remaining),
        "X-RateLimit-Reset": str(int(reset + 1)),  # as flask-limiter writes it
    }


def _number(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return 0.0
    return float(value)


__all__ = ["Admission", "admit", "count_usage", "format_value", "build_limits", "peek_headers"]
