"""Bad strings (PRODUCT.md, Limits: "Bad strings"): a NUL or a lone surrogate in a field
Tally keeps — the end user's ids, names, e-mail, metadata and tags, the model — is a 400
naming the field, on every endpoint, that reaches no upstream, stores nothing and costs
no quota. Text Tally does not keep (message content, a Responses input or instructions,
an embeddings input) is forwarded as the JSON escapes it came in, never a 500.

Run on PostgreSQL too: a NUL is what PostgreSQL refuses to store (it once made the
limits' rebuild fail and the call go through unchecked)."""

from __future__ import annotations

import pytest

from tests.helpers.api import chat, embed, respond
from tests.helpers.identity_provider import call, expect_401
from tests.helpers.rows import end_users, request_rows, served_rows

USER = "ada"
NUL, SURROGATE, LOW = "\x00", "\ud800", "\udc00"  # json.dumps sends them as escapes
BAD = {"NUL": NUL, "lone surrogate": SURROGATE, "lone low surrogate": LOW}
PROFILE = {"id": USER, "display_name": "Ada", "email": "ada@example.com"}
MESSAGE = "must not contain NUL characters (\\u0000) or lone surrogates (\\ud800-\\udfff)"


def bodies(bad: str) -> dict[str, dict]:
    """The field an error must name -> what the body carries (besides model and input)."""
    return {
        "user": {"user": f"ada{bad}"},
        "safety_identifier": {"safety_identifier": f"{bad}ada"},
        "identity.id": {"identity": {**PROFILE, "id": f"a{bad}da"}},
        "identity.display_name": {"identity": {**PROFILE, "display_name": f"Ada{bad}"}},
        "identity.email": {"identity": {**PROFILE, "email": f"ada{bad}@example.com"}},
        "identity.logo_url": {"identity": {**PROFILE, "logo_url": f"https://x.test/{bad}"}},
        "identity.metadata": {"identity": {**PROFILE, "metadata": [{"plan": f"pro{bad}"}]}},
        "identity.tags": {"identity": {**PROFILE, "tags": ["ok", f"vip{bad}"]}},
        "model": {"model": f"openai/gpt-4o-mini{bad}", "user": USER},
    }


# metadata is JSON: a bad string anywhere in it, keys and nested values included
METADATA = {
    "a key": [{f"pl{NUL}an": "pro"}],
    "a nested value": [{"plan": {"name": ["pro", f"x{SURROGATE}"]}}],
    "a nested key": [{"plan": {f"na{SURROGATE}me": "pro"}}],
}
ENDPOINTS = {"chat": chat, "responses": respond, "embeddings": embed}


def remaining(response) -> int:
    """The answer's X-RateLimit-Remaining (the user's message quota)."""
    return int(response.headers["X-RateLimit-Remaining"])


def assert_refused(response, param: str) -> None:
    """A 400 in OpenAI's shape naming ``param`` and what is wrong with it."""
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "code", "param"}
    assert error["type"] == "invalid_request_error"
    assert error["param"] == param
    assert param in error["message"] and MESSAGE in error["message"]


def assert_nothing_kept(flask_app, served: int) -> None:
    """Only the served calls (``served``) left rows with usage, and only ``ada`` is an end
    user (a refusal may be a row of its own: status 400, no tokens, no cost)."""
    rows = request_rows(flask_app)
    assert len([r for r in rows if r.status == 200]) == served
    for row in rows:
        if row.status != 200:
            assert (row.status, row.prompt_tokens, row.cost) == (400, None, None)
    assert [u.external_id for u in end_users(flask_app)] == [USER]


@pytest.mark.parametrize("bad", BAD)
@pytest.mark.parametrize("param", list(bodies("")))
def test_a_bad_string_in_a_kept_field_is_a_400_that_costs_nothing(tally, upstream, param, bad):
    before = chat(tally, user=USER)
    refused = chat(tally, **bodies(BAD[bad])[param])
    assert_refused(refused, param)
    after = chat(tally, user=USER)
    assert remaining(after) == remaining(before) - 1
    assert len(upstream.requests) == 2  # the refused call never went upstream
    assert_nothing_kept(tally.flask_app, served=2)


@pytest.mark.parametrize("where", METADATA)
def test_a_bad_string_anywhere_in_the_metadata_is_refused(tally, upstream, where):
    refused = chat(tally, identity={**PROFILE, "metadata": METADATA[where]})
    assert_refused(refused, "identity.metadata")
    assert upstream.requests == []


@pytest.mark.parametrize("endpoint", ENDPOINTS)
@pytest.mark.parametrize("param", ["user", "identity.display_name", "model"])
def test_every_endpoint_refuses_a_bad_string(tally, upstream, endpoint, param):
    send = ENDPOINTS[endpoint]
    assert send(tally, user=USER).status_code == 200
    assert_refused(send(tally, **bodies(NUL)[param]), param)
    assert_refused(send(tally, **bodies(SURROGATE)[param]), param)
    assert len(upstream.requests) == 1
    assert_nothing_kept(tally.flask_app, served=1)


def test_a_nul_in_the_user_header_is_refused(tally, upstream):
    refused = chat(tally, headers={"X-Tally-User": f"ada{NUL}evil"})
    assert_refused(refused, "X-Tally-User")
    assert upstream.requests == [] and end_users(tally.flask_app) == []


def test_a_bad_string_sent_as_utf8_bytes_is_refused_too(tally, upstream):
    """A surrogate encoded straight into the body's bytes (not valid UTF-8, which json
    reads as the surrogate itself) is the same lone surrogate."""
    raw = b'{"model": "m", "messages": [{"role": "user", "content": "hi"}], "user": "a%s"}'
    raw %= SURROGATE.encode("utf-8", "surrogatepass")  # b"\xed\xa0\x80"
    refused = chat(tally, raw, headers={"Content-Type": "application/json"})
    assert_refused(refused, "user")
    assert upstream.requests == []


# Text Tally forwards but does not keep: as it came in, escapes and all.
CONTENT = f"hi {NUL} there {SURROGATE} and a pair \U0001f600, {LOW}end"
PASSED_ON = {
    "chat messages": (chat, {"messages": [{"role": "user", "content": CONTENT}]}),
    "chat content parts": (
        chat,
        {"messages": [{"role": "user", "content": [{"type": "text", "text": CONTENT}]}]},
    ),
    "responses input": (respond, {"input": CONTENT}),
    "responses instructions": (respond, {"instructions": CONTENT}),
    "embeddings input": (embed, {"input": [CONTENT, "plain"]}),
}


@pytest.mark.parametrize("where", PASSED_ON)
def test_content_with_bad_strings_is_forwarded_as_sent(tally, upstream, where):
    send, extra = PASSED_ON[where]
    answer = send(tally, user=USER, **extra)
    assert answer.status_code == 200, answer.text
    [received] = upstream.requests
    for name, value in extra.items():
        assert received.body[name] == value  # the same code points, lone surrogates included
    [row] = served_rows(tally.flask_app)
    assert (row.status, row.user.external_id) == (200, USER)


def test_the_upstream_gets_the_escapes_and_utf8_otherwise(tally, upstream):
    """A body with a lone surrogate goes as ASCII JSON, the surrogate escaped as it came
    in; any other body keeps its UTF-8 as it is."""
    assert chat(tally, messages=[{"role": "user", "content": f"é{SURROGATE}"}]).ok
    assert chat(tally, messages=[{"role": "user", "content": "é\U0001f600"}]).ok
    escaped, plain = (r.raw for r in upstream.requests)
    assert b'"content":"\\u00e9\\ud800"' in escaped and escaped.isascii()
    assert '"content":"é\U0001f600"'.encode() in plain


def test_a_token_whose_subject_holds_a_nul_is_refused(tally, upstream, idp):
    error = expect_401(tally, None, idp.token(sub=f"user{NUL}evil"), "token_missing_claim")
    assert "without NUL characters or lone surrogates" in error["message"]
    assert upstream.requests == [] and end_users(tally.flask_app) == []


def test_a_tokens_unstorable_name_and_email_are_left_out(tally, upstream, idp):
    token = idp.token(name=f"Ada{SURROGATE}", email=f"ada{NUL}@example.com")
    answer = call(tally, token)
    assert answer.status_code == 200, answer.text
    [user] = end_users(tally.flask_app)
    assert (user.external_id, user.display_name, user.email) == ("user_2N4Z", None, None)
    [row] = served_rows(tally.flask_app)
    assert row.status == 200
