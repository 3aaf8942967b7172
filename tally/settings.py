"""Tally's configuration: the one module that reads the environment.

Everything else receives a :class:`Settings` (or reads ``app.config["TALLY"]``).
Secrets that are not given are generated once and kept in the instance folder,
so every worker and every restart of one box agrees on them.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

DEFAULT_UPSTREAM_TIMEOUT = 300.0
DEFAULT_MAX_BODY_BYTES = 10 * 1024 * 1024


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
    ratelimit_fail: str = "open"  # TALLY_RATELIMIT_FAIL: limit storage unreachable
    limits_socket: str | None = None  # set by gunicorn.conf.py: its counter server

    @property
    def uses_demo_upstream(self) -> bool:
        """True when no upstream is configured and the built-in demo answers."""
        return self.upstream_url is None

    def __repr__(self) -> str:  # secrets never end up in a log line or a traceback
        return (
            f"Settings(database_url={_redact_url(self.database_url)!r}, "
            f"upstream_url={self.upstream_url!r}, upstream_timeout={self.upstream_timeout}, "
            f"max_body_bytes={self.max_body_bytes})"
        )


def load_settings(instance_path: str, overrides: Mapping[str, str] | None = None) -> Settings:
    """Read the ``TALLY_*`` variables of the environment, ``overrides`` taking precedence."""
    env = {**os.environ, **(overrides or {})}
    Path(instance_path).mkdir(parents=True, exist_ok=True)
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
        usage_writes=_choice(env, "TALLY_USAGE_WRITES", ("background", "inline")),
        log_format=_choice(env, "TALLY_LOG_FORMAT", ("json", "text")),
        usage_socket=env.get("TALLY_USAGE_SOCKET") or None,
        ratelimit_fail=_choice(env, "TALLY_RATELIMIT_FAIL", ("open", "closed")),
        limits_socket=env.get("TALLY_LIMITS_SOCKET") or None,
    )


def _number(env: Mapping[str, str], name: str, default, kind):
    raw = env.get(name)
    if raw in (None, ""):
        return default
    try:
        value = kind(raw)
    except ValueError:
        raise SettingsError(f"{name} must be a number, got {raw!r}") from None
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
