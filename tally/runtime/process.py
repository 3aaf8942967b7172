"""The process's runtime: database engine, sessions, upstream client, caches (keys and
config; the identity provider's signing keys), limits, the usage recorder, the HMAC key
and, with an OTLP endpoint set, the tracer (tally.traces).

Built once by the app factory and kept in ``app.extensions["tally"]``. Only the surfaces
(blueprints, gunicorn's hooks) read it: they hand each use case the parts it uses (a
session, the cache, the limits, the :class:`~tally.proxy.call.Pipeline` of the API).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial

from sqlalchemy import Engine
from sqlalchemy.orm import sessionmaker

from tally.cache import Cache, build_cache, watch_sessions
from tally.db import make_engine, make_session_factory
from tally.demo.upstream import demo_client
from tally.limits.alerts import threshold_alerts
from tally.limits.corrections import correct_counters
from tally.limits.runtime import LimitsRuntime, build_limits
from tally.proxy.call import Pipeline
from tally.proxy.upstream import UpstreamClient
from tally.settings import Settings
from tally.sinks import outbox
from tally.sinks.delivery import OnDemand
from tally.traces.tracer import Tracer
from tally.usage.recorders import InlineRecorder, Recorder
from tally.usage.writer.background import build_usage_writer
from tally.verification.jwks import KeySets


@dataclass(frozen=True)
class Runtime:
    """Everything a request needs besides its own input."""

    settings: Settings
    engine: Engine
    sessions: sessionmaker
    upstream: UpstreamClient
    cache: Cache  # API keys and the active config; pass it to authenticate/active_config
    key_sets: KeySets  # the identity provider's signing keys (end-user tokens)
    limits: LimitsRuntime  # where this process counts limits, and the policies' caches
    usage: Recorder  # where finished calls' rows go: the background writer, or inline
    pipeline: Pipeline  # what every API call needs, built from the above

    @property
    def hash_key(self) -> bytes:
        """The HMAC key, as UTF-8 bytes of TALLY_HASH_KEY (PRODUCT.md)."""
        return self.pipeline.hash_key

    def __repr__(self) -> str:
        return f"Runtime({self.settings!r}, {self.upstream!r})"


def build_runtime(
    settings: Settings, demo_token_delay: float = 0.03, delivery_loop: bool = True
) -> Runtime:
    """Create the engine, session factory, upstream client, cache and usage writer for
    ``settings``. Every session of the factory bumps the cache version when it commits
    a change to an API key or the config, whoever uses it (API, console, CLI).

    With inline writes, the sinks' events are delivered by a loop of this process,
    started by the first call written once a sink exists; ``delivery_loop`` False
    leaves them to whoever runs ``deliver_pass`` (tests that drive its clock)."""
    engine = make_engine(settings.database_url)
    sessions = make_session_factory(engine)
    cache = build_cache(settings)
    watch_sessions(sessions, cache)
    outbox.watch(cache.version)  # the usage writer's list of sinks, on the same version
    background = settings.usage_writes == "background"
    if settings.upstream_url is None:  # the built-in demo upstream
        upstream = demo_client(settings.upstream_timeout, demo_token_delay)
    else:
        upstream = UpstreamClient(
            settings.upstream_url, settings.upstream_api_key, settings.upstream_timeout
        )
    limits = build_limits(settings, cache, sessions)
    corrections = partial(correct_counters, limits)  # reconciled estimates, on the counters

    # each written batch's limit alerts (off the request path: the writer's thread)
    def alerts(writer_sessions):
        return partial(threshold_alerts, limits, writer_sessions)

    if background:
        usage = build_usage_writer(settings, corrections, alerts)
    else:
        deliveries = OnDemand(sessions, settings.secret_key) if delivery_loop else None
        usage = InlineRecorder(sessions, alerts(sessions), deliveries)
    hash_key = settings.hash_key.encode("utf-8")  # PRODUCT.md: the key's UTF-8 bytes
    # the SDK is built on this process's first span
    tracer = Tracer(settings.otel) if settings.traces else None
    return Runtime(
        settings=settings,
        engine=engine,
        sessions=sessions,
        upstream=upstream,
        cache=cache,
        key_sets=KeySets(),
        limits=limits,
        usage=usage,
        pipeline=Pipeline(sessions, cache, hash_key, upstream, limits, usage, tracer),
    )
