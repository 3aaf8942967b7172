"""The SQL of the request log's batch repository (tally.usage.records.record_calls): the
upserts, inserts and counts of one batch, per dialect, built once."""

from __future__ import annotations

import functools

from sqlalchemy import bindparam, text, update
from sqlalchemy.dialects import postgresql, sqlite

from tally.models import ApiKey, EndUser, RequestLog, UpstreamIdentifier


class Statements:
    """The batch statements for one SQL dialect, built once."""

    def __init__(self, dialect: str):
        users, idents = EndUser.__table__, UpstreamIdentifier.__table__
        keys, log_table = ApiKey.__table__, RequestLog.__table__
        module = postgresql if dialect == "postgresql" else sqlite
        upsert = module.insert(users)
        self.upsert_users = upsert.on_conflict_do_update(
            index_elements=[users.c.external_id], set_={"last_seen": upsert.excluded.last_seen}
        )
        # the id lookups' heads: tally.usage.bulk.select_in adds ``IN (…)``
        self.user_ids = f"SELECT external_id, id FROM {users.name} WHERE external_id"
        upsert = module.insert(idents)
        # one row per (identifier, user): two users whose ids collide each keep theirs
        self.upsert_identifiers = upsert.on_conflict_do_update(
            index_elements=[idents.c.identifier, idents.c.user_id],
            set_={
                "last_seen": upsert.excluded.last_seen,
                "request_count": idents.c.request_count + upsert.excluded.request_count,
            },
        )
        self.identifier_ids = f"SELECT identifier, user_id, id FROM {idents.name} WHERE identifier"
        # ON CONFLICT DO NOTHING: a replayed row is skipped. See _insert_rows for how
        # each dialect tells the rows really inserted.
        self.insert_rows = module.insert(log_table).on_conflict_do_nothing(
            index_elements=[log_table.c.request_id]
        )
        self.new_rows = (
            text(
                "SELECT request_id FROM request_log WHERE request_id = ANY(:ids) "
                "AND xmin = pg_current_xact_id()::xid"
            )
            if dialect == "postgresql"
            else None
        )
        self.count_requests = (
            update(idents)
            .where(idents.c.id == bindparam("ident_id"))
            .values(request_count=idents.c.request_count + bindparam("n"))
        )
        self.touch_key = (
            update(keys)
            .where(keys.c.id == bindparam("key_id"))
            .values(last_used_at=bindparam("now"))
        )
        self.module = module


@functools.cache
def statements(dialect: str) -> Statements:
    """The batch statements for ``dialect``, built once per process."""
    return Statements(dialect)
