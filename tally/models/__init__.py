"""Tally's tables, one module per feature; every model is imported from here
(``from tally.models import EndUser``), and importing this package puts every table in
``Base.metadata``, which alembic's env reads. The schema is made only by the alembic
migrations in ``migrations/``; ``tests/test_migrations.py`` checks that these models and
the migrations agree.

- ``end_users``: end users, the tracking config's revisions, the identifiers sent
  upstream, the identity provider;
- ``keys``: API keys and admin API tokens;
- ``usage``: the request log, its daily and monthly totals, the price table;
- ``limits``: policies, settings, counter resets;
- ``operators``: the console's operators and the audit log;
- ``sinks``: usage events out, the sinks and their outbox.
"""

from __future__ import annotations

from tally.db import Base
from tally.models.end_users import (
    ConfigRevision,
    EndUser,
    IdentityProviderConfig,
    UpstreamIdentifier,
)
from tally.models.keys import AdminToken, ApiKey, MintedSecret
from tally.models.limits import LimitPolicy, LimitReset, LimitSetting
from tally.models.operators import AuditEntry, Operator
from tally.models.sinks import Sink, SinkEvent
from tally.models.usage import (
    REQUEST_LOG_PARTIAL,
    DailyModelTotal,
    DailyTotal,
    ModelPrice,
    MonthlyUserTotal,
    RequestLog,
)

__all__ = [
    "REQUEST_LOG_PARTIAL",
    "AdminToken",
    "ApiKey",
    "AuditEntry",
    "Base",
    "ConfigRevision",
    "DailyModelTotal",
    "DailyTotal",
    "EndUser",
    "IdentityProviderConfig",
    "LimitPolicy",
    "LimitReset",
    "LimitSetting",
    "MintedSecret",
    "ModelPrice",
    "MonthlyUserTotal",
    "Operator",
    "RequestLog",
    "Sink",
    "SinkEvent",
    "UpstreamIdentifier",
]
