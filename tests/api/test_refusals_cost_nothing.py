"""A call refused once its key was accepted costs no quota (PRODUCT.md, "Refusals are
visible"): for each refusal the pipeline (tally/proxy/pipeline.py) makes after it knows
the end user — identity required, an identifier the dialect cannot carry, a key's
message limit or budget, the user's own limit — and for the bad bodies and claims it
refuses before, the user's next allowed call shows one message used since the call
before the refusal, even when the counters are rebuilt from the request log (a
restart). A refusal is also a request row with its status and code, its end user when
the request names one well, no identifier, no tokens, no cost, marked refused."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from tally.limits.policy_store import unset_policy
from tally.limits.storage.registry import LocalStorage
from tests.helpers.api import BASE, chat
from tests.helpers.limits import set_limits
from tests.helpers.rows import configure, request_rows

USER = "quota-user"
LONG_USER = "u" * 70  # the openai dialect's safety_identifier takes 64 characters at most


@dataclass(frozen=True)
class Refusal:
    """How to make a call be refused, and what the refusal says."""

    status: int
    code: str
    user: str | None = USER  # None: an anonymous call
    config: dict = field(default_factory=dict)  # tracking config fields while refusing
    policy: tuple = ()  # (scope, "field=value", …) set while refusing
    body: dict = field(default_factory=dict)  # what the refused call's body adds
    same_quota_shown: bool = True  # the refusal's headers are the user's quota
    user_known: bool = True  # the refusal's row names its end user


REFUSALS = {
    "identity required": Refusal(400, "identity_required", None, {"require_identity": "on"}),
    "identifier too long": Refusal(
        400, "identifier_too_long", LONG_USER, {"dialect": "openai", "hash_mode": "none"}
    ),
    "the key's message limit": Refusal(
        429, "rate_limit_exceeded", policy=("key:web", "messages=1"), same_quota_shown=False
    ),
    "the key's budget": Refusal(
        429, "budget_exceeded", policy=("key:web", "daily_budget=0.0001"), same_quota_shown=False
    ),
    # refused before the end user is known: they must not cost the user's quota either
    "a bad identity": Refusal(  # no headers: the user cannot be told from it
        400,
        "invalid_identity",
        body={"identity": {"id": USER, "email": "not-an-address"}},
        same_quota_shown=False,
        user_known=False,
    ),
    "a bad body": Refusal(400, "invalid_request_error", body={"messages": []}),
}
ALLOWED_CONFIG = {"require_identity": "off", "dialect": "openrouter", "hash_mode": "none"}


def call(server, refusal: Refusal, refused: bool = False):
    """A call for the refusal's user (the refused one with the refusal's body)."""
    extra = {"user": refusal.user} if refusal.user else {}
    return chat(server, **extra, **(refusal.body if refused else {}))


def remaining(response) -> int:
    """The answer's X-RateLimit-Remaining."""
    return int(response.headers["X-RateLimit-Remaining"])


def refuse(server, refusal: Refusal):
    """Make the call under the refusal's config and policy, then lift them again."""
    if refusal.config:
        configure(server.flask_app, **refusal.config)
    if refusal.policy:
        set_limits(server.flask_app, *refusal.policy)
    response = call(server, refusal, refused=True)
    if refusal.config:
        configure(server.flask_app, **ALLOWED_CONFIG)
    if refusal.policy:
        with server.flask_app.extensions["tally"].sessions() as session:
            unset_policy(session, refusal.policy[0], "test")
    return response


def lose_counters(flask_app) -> None:
    """As after a restart of the limit storage: the counters come back from the log."""
    runtime = flask_app.extensions["tally"].limits
    runtime.storage = LocalStorage()
    runtime.ready.clear()


def error_code(response) -> str:
    """The error's code (its type when it has none)."""
    error = response.json()["error"]
    return error["code"] or error["type"]


@pytest.mark.parametrize("restart", [False, True], ids=["kept counters", "rebuilt counters"])
@pytest.mark.parametrize("name", REFUSALS)
def test_a_refusal_costs_the_user_no_quota(tally, upstream, name, restart):
    refusal = REFUSALS[name]
    configure(tally.flask_app, **ALLOWED_CONFIG)
    before = call(tally, refusal)
    assert before.status_code == 200, before.text
    refused = refuse(tally, refusal)
    assert (refused.status_code, error_code(refused)) == (refusal.status, refusal.code)
    if refusal.same_quota_shown:
        assert remaining(refused) == remaining(before)  # looked at, not counted
    if restart:
        lose_counters(tally.flask_app)
    after = call(tally, refusal)
    assert after.status_code == 200, after.text
    assert remaining(after) == remaining(before) - 1
    assert len(upstream.requests) == 2  # the refusal never went upstream


@pytest.mark.parametrize("restart", [False, True], ids=["kept counters", "rebuilt counters"])
def test_a_429_on_the_users_own_limit_costs_nothing(tally, upstream, restart):
    set_limits(tally.flask_app, "tier:default", "messages=2")
    assert [chat(tally, user=USER).status_code for _ in range(2)] == [200, 200]
    refused = chat(tally, user=USER)
    assert (refused.status_code, error_code(refused)) == (429, "rate_limit_exceeded")
    assert remaining(refused) == 0
    if restart:
        lose_counters(tally.flask_app)
    set_limits(tally.flask_app, "tier:default", "messages=3")  # room for one more, not two
    after = chat(tally, user=USER)
    assert (after.status_code, remaining(after)) == (200, 0)
    assert chat(tally, user=USER).status_code == 429
    assert len(upstream.requests) == 3


@pytest.mark.parametrize("name", REFUSALS)
def test_a_refusal_is_a_request_row_with_its_status_and_code(tally, name):
    refusal = REFUSALS[name]
    configure(tally.flask_app, **ALLOWED_CONFIG)
    assert call(tally, refusal).status_code == 200
    refused = refuse(tally, refusal)
    assert refused.status_code == refusal.status
    rows = [
        r
        for r in request_rows(tally.flask_app)
        if r.request_id == refused.headers.get("X-Request-Id")
    ]
    assert len(rows) == 1, "no request row for the refusal"
    [row] = rows
    assert (row.status, row.error_code, row.refused) == (refusal.status, refusal.code, True)
    assert row.error_message == refused.json()["error"]["message"]
    assert (row.prompt_tokens, row.completion_tokens, row.cost) == (None, None, None)
    assert (row.total_tokens, row.cached_tokens, row.cost_source) == (None, None, None)
    assert (row.endpoint, row.model, row.identifier) == ("chat.completions", BASE["model"], None)
    assert (row.user.external_id if row.user else None) == (
        refusal.user if refusal.user_known else None
    )
    assert row.latency_ms is not None


NUL, SURROGATE = "\x00", "\ud800"  # json.dumps sends the surrogate as the escape \ud800
PROFILE = {"id": USER, "display_name": "Ada", "email": "ada@example.com"}
# the field named in the error -> the body (besides model and messages) that carries it
BAD_STRINGS = {
    "user": {"user": f"ada{NUL}"},
    "safety_identifier": {"safety_identifier": f"ada{SURROGATE}"},
    "identity.id": {"identity": {**PROFILE, "id": f"ada{SURROGATE}"}},
    "identity.display_name": {"identity": {**PROFILE, "display_name": f"Ada{SURROGATE}"}},
    "identity.email": {"identity": {**PROFILE, "email": f"ada{NUL}@example.com"}},
    "identity.metadata": {"identity": {**PROFILE, "metadata": [{"plan": f"pro{NUL}"}]}},
    "identity.tags": {"identity": {**PROFILE, "tags": [f"vip{SURROGATE}"]}},
    "model": {"model": f"openai/gpt-4o-mini{NUL}", "user": USER},
}


@pytest.mark.parametrize("param", BAD_STRINGS)
def test_a_bad_string_is_a_400_naming_the_field_that_costs_nothing(tally, upstream, param):
    before = chat(tally, user=USER)
    refused = chat(tally, **BAD_STRINGS[param])
    assert refused.status_code == 400, refused.text
    assert refused.json()["error"]["param"] == param
    after = chat(tally, user=USER)
    assert remaining(after) == remaining(before) - 1
    assert len(upstream.requests) == 2
