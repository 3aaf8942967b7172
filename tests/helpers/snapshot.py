"""Every row of every table, to prove a refused request changed nothing: the tables are
reflected from the database itself (not the models), so a table added by a migration is
compared too."""

from __future__ import annotations

import warnings

from sqlalchemy import MetaData, select


def reflect(engine) -> MetaData:
    """Every table of the database behind ``engine``."""
    metadata = MetaData()
    with warnings.catch_warnings():  # SQLite does not reflect expression indexes (0007)
        warnings.filterwarnings("ignore", "Skipped unsupported reflection of expression")
        metadata.reflect(bind=engine)
    return metadata


def snapshot(engine, metadata: MetaData | None = None) -> dict[str, list[str]]:
    """Each table's rows, as sorted reprs (order-free, comparable with ``==``)."""
    metadata = metadata or reflect(engine)
    with engine.connect() as conn:
        return {
            table.name: sorted(repr(tuple(row)) for row in conn.execute(select(table)))
            for table in metadata.sorted_tables
        }


def changes(before: dict[str, list[str]], after: dict[str, list[str]]) -> dict[str, dict]:
    """What differs between two snapshots, per table: rows gone and rows new."""
    out = {}
    for name in sorted(set(before) | set(after)):
        old, new = set(before.get(name, [])), set(after.get(name, []))
        if old != new:
            out[name] = {"gone": sorted(old - new), "new": sorted(new - old)}
    return out
