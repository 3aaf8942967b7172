"""The per-process runtime: database engine, sessions, upstream client and the HMAC key.

Built once by the app factory and kept in ``app.extensions["tally"]``; services take it
as an argument instead of reaching for globals.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import Engine
from sqlalchemy.orm import sessionmaker

from tally.db import make_engine, make_session_factory
from tally.settings import Settings
from tally.upstream import UpstreamClient


@dataclass(frozen=True)
class Gateway:
    """Everything a request needs besides its own input."""

    settings: Settings
    engine: Engine
    sessions: sessionmaker
    upstream: UpstreamClient

    @property
    def hash_key(self) -> bytes:
        """The HMAC key, as UTF-8 bytes of TALLY_HASH_KEY (PRODUCT.md)."""
        return self.settings.hash_key.encode("utf-8")

    def __repr__(self) -> str:
        return f"Gateway({self.settings!r}, {self.upstream!r})"


def build_gateway(settings: Settings, demo_token_delay: float = 0.03) -> Gateway:
    """Create the engine, session factory and upstream client for ``settings``."""
    engine = make_engine(settings.database_url)
    return Gateway(
        settings=settings,
        engine=engine,
        sessions=make_session_factory(engine),
        upstream=UpstreamClient(
            settings.upstream_url,
            settings.upstream_api_key,
            settings.upstream_timeout,
            demo_token_delay=demo_token_delay,
        ),
    )
