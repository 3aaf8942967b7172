"""An end user worth erasing, and the checks an erasure must pass: a profile, several
identifiers, request rows (one with an error quoting the identifier and a generation
id), audit entries naming them (a search, a trace, a profile view, a limit override and
reset, a bound key), beside a bystander who must stay untouched. Used by
tests/privacy/test_erasure.py and tests/console/test_erasure.py (their ``person`` fixtures)."""

from __future__ import annotations

import json
import uuid
import warnings
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import MetaData, select

from tally.end_users.claims import EndUserClaim
from tally.end_users.search import search_identities
from tally.keys.api_keys import create_api_key
from tally.limits.policy_store import reset_user, set_policy
from tally.models import DailyModelTotal, DailyTotal, EndUser, MonthlyUserTotal
from tally.reports.identity import identity_detail
from tally.usage.call import CallRecord, Outcome
from tally.usage.records import record_calls
from tests.helpers.totals import assert_same, fresh_aggregate, stored

USER = "zelda-7f3q"
NAME = "Zelda Quintero"
EMAIL = "zelda.q@example.org"
LOGO = "https://cdn.example.org/zelda-avatar.png"
IDENTIFIERS = ("tally_5e1d0c9b8a7f6e5d", "acme_0a1b2c3d4e5f6a7b", f"tally_{USER}")
OTHER = "bystander-42"
START = datetime(2026, 11, 29, 22, 0)  # crosses a day
TOTALS = (DailyTotal, DailyModelTotal, MonthlyUserTotal)


@dataclass(frozen=True)
class Person:
    """The user built, and the totals before the erasure."""

    user_id: int
    key_name: str
    totals: dict


def user_call(user: str, identifier: str, minutes: int, key_id: int, **outcome) -> tuple:
    """One call of ``user`` (USER with a full profile) ``minutes`` after START."""
    profile = {
        "display_name": NAME,
        "email": EMAIL,
        "metadata": [{"plan": "pro"}, {"company": "Quintero Labs"}],
        "tags": ["vip", "beta"],
        "logo_url": LOGO,
    }
    claim = EndUserClaim(user, "identity", profile if user == USER else {})
    call = CallRecord(uuid.uuid4().hex, key_id, claim, identifier, 1, "m-a", False)
    usage = {"prompt_tokens": 10 + minutes, "completion_tokens": 5, "total_tokens": 15 + minutes}
    result = Outcome(usage={**usage, "cost": 0.001 * (minutes + 1)}, **outcome)
    return call, result, START + timedelta(minutes=minutes)


def build_person(session, operator: str = "ops@example.com") -> Person:
    """Traffic, audit entries and a bound key for USER (and some traffic for OTHER)."""
    key, _ = create_api_key(session, "web", "test")
    bound, _ = create_api_key(session, "mobile-bound", "test", bound_external_id=USER)
    calls = [user_call(USER, IDENTIFIERS[n % 3], 90 * n, key.id) for n in range(6)]
    calls.append(
        user_call(
            USER,
            IDENTIFIERS[0],
            7,
            bound.id,
            status=400,
            error_code="invalid_user",
            error_message=f"user {IDENTIFIERS[0]} ({EMAIL}) is not allowed",
            generation_id="gen-zelda-0001",
        )
    )
    calls += [user_call(OTHER, "tally_bystander", 30 * n, key.id) for n in range(3)]
    record_calls(session, calls)
    user_id = session.scalar(select(EndUser.id).where(EndUser.external_id == USER))
    for query in ("Zelda", IDENTIFIERS[0], "zelda.q@", USER[:6], "bystander"):
        search_identities(session, query, actor=operator)
    identity_detail(session, user_id, START, actor=operator)
    set_policy(session, f"user:{USER}", {"daily_tokens": 5000}, operator)
    reset_user(session, f"user:{USER}", operator)
    return Person(user_id, bound.name, snapshot_totals(session))


def snapshot_totals(session) -> dict:
    """Every totals table, keyed by its groups."""
    return {model: stored(session, model.__table__) for model in TOTALS}


def assert_totals_whole(session, before: dict) -> None:
    """The totals are those of before the erasure, and still the log's aggregate."""
    for model in TOTALS:
        table = model.__table__
        assert_same(before[model], stored(session, table))
        assert_same(fresh_aggregate(session, table), stored(session, table))


def personal_values() -> list[str]:
    """What must be found nowhere after the erasure."""
    return [USER, NAME, EMAIL, LOGO, *IDENTIFIERS, "gen-zelda-0001", "Quintero"]


def find_anywhere(engine, needles: list[str]) -> list[str]:
    """Every table.column (reflected from the database) whose text holds a needle."""
    metadata = MetaData()
    with warnings.catch_warnings():  # SQLite does not reflect expression indexes (0007)
        warnings.filterwarnings("ignore", "Skipped unsupported reflection of expression")
        metadata.reflect(bind=engine)
    found = []
    with engine.connect() as conn:
        for table in metadata.sorted_tables:
            for row in conn.execute(select(table)).mappings():
                for column, value in row.items():
                    if value is None or isinstance(value, int | float | datetime):
                        continue
                    text = value if isinstance(value, str) else json.dumps(value, default=str)
                    for needle in needles:
                        if needle.casefold() in text.casefold():
                            found.append(f"{table.name}.{column}: {needle!r} in {text!r}")
    return found
