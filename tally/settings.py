"""Tally's configuration: the one module that reads the environment.

Everything else receives a :class:`Settings` (or reads ``app.config["TALLY"]``);
gunicorn.conf.py reads its own knobs through :func:`load_server_settings`, which needs
no instance folder. Secrets that are not given are generated once and kept in the
instance folder, so every worker and every restart of one box agrees on them. A value
Tally cannot use is a :class:`SettingsError` naming the variable and what it takes.
"""

from __future__ import annotations

import os
import secrets
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

DEFAULT_UPSTREAM_TIMEOUT = 300.0
# gunicorn's master hands its usage writer process's socket to the workers it forks
# through the environment (tally/usage/writer/process.py).
USAGE_SOCKET_ENV = "TALLY_USAGE_SOCKET"
LIMITS_DB_ENV = (
    "TALLY_LIMITS_DB"  # the instance's limit counters (tally/limits/storage/lmdb_file.py)
)
# prometheus_client's own variable: where every worker's metric files go under gunicorn
# (gunicorn.conf.py makes the directory); unset, each process reports only itself.
METRICS_DIR_ENV = "PROMETHEUS_MULTIPROC_DIR"
DEFAULT_MAX_BODY_BYTES = 10 * 1024 * 1024
DEFAULT_BODY_TIMEOUT = 60.0  # seconds a request body may take to arrive (blueprints/bodies.py)
DEFAULT_MAX_STALENESS = 300.0  # seconds a cached key/config is served while the DB is away
DEFAULT_SPOOL_MAX_BYTES = 512 * 1024 * 1024  # usage rows kept on disk while the DB is away
USAGE_WRITES = ("background", "inline")  # the first is the default
WORKER_CLASSES = ("gevent", "gthread", "sync")  # gevent: measured in docs/benchmarks.md
# OpenTelemetry's own variables (tally/traces/): an endpoint turns traces on; the SDK reads
# the rest itself (headers, service name, sampler, batching)
OTLP_ENDPOINTS = ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT")
OTLP_PROTOCOLS = ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "OTEL_EXPORTER_OTLP_PROTOCOL")


class SettingsError(ValueError):
    """An environment variable holds a value Tally cannot use."""


@dataclass(frozen=True)
class Settings:
    """The deployment's configuration, as PRODUCT.md's environment table lists it."""

    instance_path: str
    database_url: str
    secret_key: str
    hash_key: str
    upstream_url: str | None
    upstream_api_key: str | None
    ratelimit_storage_uri: str | None
    upstream_timeout: float
    max_body_bytes: int
    usage_writes: str = "background"
    log_format: str = "json"
    usage_socket: str | None = None  # set by gunicorn.conf.py: its usage writer process
    trusted_proxies: int = 0  # reverse proxies in front whose X-Forwarded-For/-Proto count
    ratelimit_fail: str = "open"  # TALLY_RATELIMIT_FAIL: limit storage unreachable
    limits_db: str | None = None  # set by gunicorn.conf.py: the instance's limit counters
    max_staleness: float = DEFAULT_MAX_STALENESS  # then 503 (docs/operations.md)
    spool_max_bytes: int = DEFAULT_SPOOL_MAX_BYTES  # the usage spool's bound
    metrics_token: str | None = None  # TALLY_METRICS_TOKEN: Bearer token for GET /metrics
    metrics_dir: str | None = None  # PROMETHEUS_MULTIPROC_DIR: set by gunicorn.conf.py
    body_timeout: float = DEFAULT_BODY_TIMEOUT  # TALLY_BODY_TIMEOUT: then 408, connection closed
    traces: bool = False  # an OTLP endpoint is set: every API call is a span (tally/traces/)
    # OpenTelemetry's variables (OTEL_*), the environment's with the overrides, for the SDK
    otel: Mapping[str, str] = field(default_factory=dict, compare=False)

    def __repr__(self) -> str:  # secrets never end up in a log line or a traceback
        return (
            f"Settings(database_url={_redact_url(self.database_url)!r}, "
            f"upstream_url={self.upstream_url!r}, upstream_timeout={self.upstream_timeout}, "
            f"max_body_bytes={self.max_body_bytes})"
        )


def load_settings(instance_path: str, overrides: Mapping[str, str] | None = None) -> Settings:
    """Read the ``TALLY_*`` variables of the environment, ``overrides`` taking precedence."""
    env = {**os.environ, **(overrides or {})}
    Path(instance_path).mkdir(mode=0o700, parents=True, exist_ok=True)  # secrets, database
    database_url = env.get("TALLY_DATABASE_URL") or (
        "sqlite:///" + str(Path(instance_path, "tally.db").resolve())
    )
    return Settings(
        instance_path=instance_path,
        database_url=database_url,
        secret_key=env.get("TALLY_SECRET_KEY") or _instance_secret(instance_path, "secret_key"),
        hash_key=env.get("TALLY_HASH_KEY") or _instance_secret(instance_path, "hash_key"),
        upstream_url=(env.get("TALLY_UPSTREAM_URL") or "").rstrip("/") or None,
        upstream_api_key=env.get("TALLY_UPSTREAM_API_KEY") or None,
        ratelimit_storage_uri=env.get("TALLY_RATELIMIT_STORAGE_URI") or None,
        upstream_timeout=_number(env, "TALLY_UPSTREAM_TIMEOUT", DEFAULT_UPSTREAM_TIMEOUT, float),
        max_body_bytes=_number(env, "TALLY_MAX_BODY_BYTES", DEFAULT_MAX_BODY_BYTES, int),
        usage_writes=_choice(env, "TALLY_USAGE_WRITES", USAGE_WRITES),
        log_format=_choice(env, "TALLY_LOG_FORMAT", ("json", "text")),
        usage_socket=env.get(USAGE_SOCKET_ENV) or None,
        trusted_proxies=_count(env, "TALLY_TRUSTED_PROXIES"),
        ratelimit_fail=_choice(env, "TALLY_RATELIMIT_FAIL", ("open", "closed")),
        limits_db=env.get(LIMITS_DB_ENV) or None,
        max_staleness=_number(env, "TALLY_MAX_STALENESS", DEFAULT_MAX_STALENESS, float),
        spool_max_bytes=_number(env, "TALLY_SPOOL_MAX_BYTES", DEFAULT_SPOOL_MAX_BYTES, int),
        metrics_token=env.get("TALLY_METRICS_TOKEN") or None,
        metrics_dir=env.get(METRICS_DIR_ENV) or None,
        body_timeout=_number(env, "TALLY_BODY_TIMEOUT", DEFAULT_BODY_TIMEOUT, float),
        traces=traces_configured(env),
        otel={k: v for k, v in env.items() if k.startswith("OTEL_")},
    )


def traces_configured(env: Mapping[str, str]) -> bool:
    """True when OpenTelemetry's variables ask for traces: an OTLP endpoint set
    (``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`` or ``OTEL_EXPORTER_OTLP_ENDPOINT``), unless
    ``OTEL_SDK_DISABLED=true`` or ``OTEL_TRACES_EXPORTER=none``. Tally exports OTLP over
    HTTP/protobuf only: another protocol asked for is a SettingsError, not a silent
    export in the wrong one."""
    if not any((env.get(name) or "").strip() for name in OTLP_ENDPOINTS):
        return False
    if (env.get("OTEL_SDK_DISABLED") or "").strip().lower() == "true":
        return False
    exporters = (env.get("OTEL_TRACES_EXPORTER") or "otlp").replace(" ", "").lower()
    if exporters == "none":
        return False
    for name in OTLP_PROTOCOLS:
        protocol = (env.get(name) or "").strip()
        if protocol:
            if protocol != "http/protobuf":
                raise SettingsError(
                    f"{name} must be http/protobuf (Tally exports OTLP over HTTP/protobuf), "
                    f"got {protocol!r}"
                )
            break  # the traces' own variable wins over the general one
    return True


def _count(env: Mapping[str, str], name: str) -> int:
    """A whole number of 0 or more (0 when unset)."""
    raw = (env.get(name) or "0").strip()
    if not raw.isdigit() or int(raw) > 10:
        raise SettingsError(f"{name} must be a whole number from 0 to 10, got {raw!r}")
    return int(raw)


def default_instance_path() -> str:
    """``TALLY_INSTANCE_PATH``, else the instance folder beside app.py (Flask's own
    default for the ``app`` module): gunicorn's master, its usage writer process and the
    workers find the same folder (secrets, cache version, usage spool) with it."""
    configured = os.environ.get("TALLY_INSTANCE_PATH")
    if configured:
        return str(Path(configured).resolve())
    return str(Path(__file__).resolve().parent.parent / "instance")


def export_usage_socket(path: str) -> None:
    """Tell the workers forked after this call where the usage writer process listens
    (read back by :func:`load_settings` as ``usage_socket``)."""
    os.environ[USAGE_SOCKET_ENV] = path


def export_limits_db(path: str) -> None:
    """Tell the workers forked after this call where the instance's limit counters are
    (read back by :func:`load_settings` as ``limits_db``)."""
    os.environ[LIMITS_DB_ENV] = path


def export_metrics_dir() -> str:
    """Make a fresh, private, empty directory for the workers' metric files and tell
    prometheus_client (imported after this call, in the workers forked after it) to use
    it; return its path. Called by gunicorn.conf.py in the master before any fork."""
    path = tempfile.mkdtemp(prefix="tally-metrics-")  # mode 0700, empty
    os.environ[METRICS_DIR_ENV] = path
    return path


def child_environment(*drop: str) -> dict[str, str]:
    """The environment for a helper process the master starts, without ``drop``."""
    return {k: v for k, v in os.environ.items() if k not in drop}


@dataclass(frozen=True)
class ServerSettings:
    """What gunicorn.conf.py configures gunicorn's master with (docs/deployment.md)."""

    bind: str = "127.0.0.1:8000"
    workers: int = 2  # one per core
    worker_class: str = "gevent"
    threads: int = 600  # gthread only: one per open stream
    usage_writes: str = "background"  # inline: no usage writer process
    ratelimit_storage_uri: str | None = None  # unset: the master makes a counter file


def load_server_settings(overrides: Mapping[str, str] | None = None) -> ServerSettings:
    """Read ``TALLY_BIND``, ``TALLY_WORKERS``, ``TALLY_WORKER_CLASS``, ``TALLY_THREADS``,
    ``TALLY_USAGE_WRITES`` and ``TALLY_RATELIMIT_STORAGE_URI``, ``overrides`` taking
    precedence over the environment."""
    env = {**os.environ, **(overrides or {})}
    defaults = ServerSettings()
    return ServerSettings(
        bind=_bind(env.get("TALLY_BIND") or defaults.bind),
        workers=_number(env, "TALLY_WORKERS", defaults.workers, int),
        worker_class=_choice(env, "TALLY_WORKER_CLASS", WORKER_CLASSES),
        threads=_number(env, "TALLY_THREADS", defaults.threads, int),
        usage_writes=_choice(env, "TALLY_USAGE_WRITES", USAGE_WRITES),
        ratelimit_storage_uri=env.get("TALLY_RATELIMIT_STORAGE_URI") or None,
    )


def _bind(raw: str) -> str:
    """gunicorn's address forms: ``HOST``, ``HOST:PORT``, ``[IPv6]:PORT``, ``unix:PATH``."""
    value = raw.strip()
    if value.startswith("unix:"):
        valid = len(value) > len("unix:")
    elif value.endswith("]") or ":" not in value:  # a host alone: gunicorn's port 8000
        valid = bool(value)
    else:
        host, _, port = value.rpartition(":")
        valid = bool(host) and port.isdigit() and 0 < int(port) < 65536
    if not valid or any(c.isspace() for c in value):
        raise SettingsError(
            f"TALLY_BIND must be HOST:PORT (e.g. 127.0.0.1:8000) or unix:PATH, got {raw!r}"
        )
    return value


def _number(env: Mapping[str, str], name: str, default, kind):
    """The variable as a positive ``kind`` (int or float), or ``default`` when unset."""
    raw = env.get(name)
    if raw in (None, ""):
        return default
    what = "a whole number" if kind is int else "a number"
    try:
        value = kind(raw)
    except ValueError:
        raise SettingsError(f"{name} must be {what}, got {raw!r}") from None
    if value <= 0:
        raise SettingsError(f"{name} must be positive, got {raw!r}")
    return value


def _choice(env: Mapping[str, str], name: str, choices: tuple[str, ...]) -> str:
    """The variable's value, one of ``choices`` (the first is the default)."""
    raw = (env.get(name) or choices[0]).strip().lower()
    if raw not in choices:
        raise SettingsError(f"{name} must be one of {', '.join(choices)}, got {raw!r}")
    return raw


def _instance_secret(instance_path: str, name: str) -> str:
    """Return the secret kept in ``instance/<name>``, creating it on first use.

    Several workers may start at once: the file is written under a temporary
    name and hard-linked into place, so readers never see a half-written secret
    and exactly one value wins.
    """
    path = Path(instance_path, name)
    if not path.exists():
        tmp = path.with_name(f".{name}.{os.getpid()}.{secrets.token_hex(4)}")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(secrets.token_urlsafe(48))
        try:
            os.link(tmp, path)
        except FileExistsError:
            pass
        finally:
            tmp.unlink()
    return path.read_text().strip()


def _redact_url(url: str) -> str:
    scheme, sep, rest = url.partition("://")
    if "@" in rest:
        rest = "***@" + rest.split("@", 1)[1]
    return scheme + sep + rest
