"""A known workload for the breakdown and export tests, recorded through ``record_calls``
(the API's path): three users with different profiles, anonymous traffic, two API keys,
March 2026 whole plus two days either side, and rows just outside the range.

The ``workload`` fixture that records them is in tests.plugins.breakdowns.
"""

from __future__ import annotations

from datetime import date, datetime

from tally.end_users.claims import EndUserClaim
from tally.usage.call import CallRecord, Outcome
from tally.usage.records import record_calls

START, END = date(2026, 2, 27), date(2026, 4, 2)
PROFILES = {
    "ada": {"display_name": "Ada L", "tags": ["plan-pro", "beta"], "metadata": [{"plan": "pro"}]},
    "bob": {"tags": ["plan-free"], "metadata": [{"plan": "free"}, {"team": "x"}]},
    "cy": None,  # sent as ``user``: no profile
}
# when, user, key, model, endpoint, prompt, completion, cached, cost, status
CALLS = [
    ("2026-02-26T12:00", "bob", "acme", "m-a", "chat.completions", 7, 7, 0, 7.0, 200),  # before
    ("2026-02-27T10:00", "ada", "acme", "m-a", "chat.completions", 100, 20, 10, 0.10, 200),
    ("2026-02-28T23:59:59", "bob", "globex", "m-b", "responses", 50, 5, 0, 0.05, 200),
    ("2026-03-01T00:00", "ada", "acme", "m-a", "chat.completions", 200, 40, 50, 0.25, 200),
    ("2026-03-15T12:00", "cy", "acme", "m-b", "embeddings", 30, 0, 0, 0.003, 200),
    ("2026-03-31T23:00", None, None, None, "chat.completions", None, None, None, None, 502),
    ("2026-04-01T08:00", "bob", "acme", "m-a", "chat.completions", 10, 10, 0, 0.01, 200),
    ("2026-04-02T09:00", "ada", "globex", "m-b", "chat.completions", 1, 2, 0, 0.0, 200),
    ("2026-04-03T00:00", "ada", "acme", "m-a", "chat.completions", 9, 9, 0, 9.99, 200),  # after
]


def record(session, calls, key_ids: dict[str, int]) -> None:
    """Record ``calls`` (tuples shaped like CALLS) in one batch, as the API does."""
    batch = []
    for n, (
        when,
        user,
        key,
        model,
        endpoint,
        prompt,
        completion,
        cached,
        cost,
        status,
    ) in enumerate(calls):
        profile = PROFILES.get(user)
        claim = None
        if user is not None:
            claim = (
                EndUserClaim(user, "identity", profile) if profile else EndUserClaim(user, "user")
            )
        call = CallRecord(
            request_id=f"bd-{n}-{when}-{user}",
            api_key_id=key_ids[key] if key else None,
            claim=claim,
            identifier=None,
            revision_id=None,
            model=model,
            stream=False,
            endpoint=endpoint,
        )
        usage = {
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "total_tokens": None if prompt is None else prompt + completion,
            "cached_tokens": cached,
            "cost": cost,
        }
        outcome = Outcome(status=status, usage=usage)
        batch.append((call, outcome, datetime.fromisoformat(when)))
    record_calls(session, batch)
    session.commit()


def figures(requests, prompt, completion, cached, cost) -> dict:
    """A row's figures, named as exports name them."""
    return {
        "requests": requests,
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "cached_tokens": cached,
        "cost_usd": cost,
    }


ADA, BOB, CY = (
    figures(3, 301, 62, 60, 0.35),
    figures(2, 60, 15, 0, 0.06),
    figures(1, 30, 0, 0, 0.003),
)
ANON = figures(1, 0, 0, 0, 0.0)
EXPECTED = {
    "user": [
        {"internal_id": None, "display_name": None} | ANON,
        {"internal_id": "ada", "display_name": "Ada L"} | ADA,
        {"internal_id": "bob", "display_name": None} | BOB,
        {"internal_id": "cy", "display_name": None} | CY,
    ],
    "model": [
        {"model": None} | ANON,
        {"model": "m-a"} | figures(3, 310, 70, 60, 0.36),
        {"model": "m-b"} | figures(3, 81, 7, 0, 0.053),
    ],
    "endpoint": [
        {"endpoint": "chat.completions"} | figures(5, 311, 72, 60, 0.36),
        {"endpoint": "embeddings"} | CY,
        {"endpoint": "responses"} | figures(1, 50, 5, 0, 0.05),
    ],
    "day": [
        {"day": "2026-02-27"} | figures(1, 100, 20, 10, 0.1),
        {"day": "2026-02-28"} | figures(1, 50, 5, 0, 0.05),
        {"day": "2026-03-01"} | figures(1, 200, 40, 50, 0.25),
        {"day": "2026-03-15"} | CY,
        {"day": "2026-03-31"} | ANON,
        {"day": "2026-04-01"} | figures(1, 10, 10, 0, 0.01),
        {"day": "2026-04-02"} | figures(1, 1, 2, 0, 0.0),
    ],
    "key": [
        {"key": None} | ANON,
        {"key": "acme"} | figures(4, 340, 70, 60, 0.363),
        {"key": "globex"} | figures(2, 51, 7, 0, 0.05),
    ],
    "tag": [
        {"tag": None} | figures(2, 30, 0, 0, 0.003),
        {"tag": "beta"} | ADA,
        {"tag": "plan-free"} | BOB,
        {"tag": "plan-pro"} | ADA,
    ],
    "metadata:plan": [
        {"plan": None} | figures(2, 30, 0, 0, 0.003),
        {"plan": "free"} | BOB,
        {"plan": "pro"} | ADA,
    ],
    "metadata:team": [
        {"team": None} | figures(5, 331, 62, 60, 0.353),
        {"team": "x"} | BOB,
    ],
}
