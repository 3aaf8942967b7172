"""Verified end users under the shipped gunicorn config (gevent workers): the JWKS is
fetched through the patched standard library, and the verified user's row is written
by the usage writer process."""

from __future__ import annotations

import requests

from tally.keys.api_keys import create_api_key
from tally.verification.idp import save_idp
from tests.helpers.identity_provider import ISSUER
from tests.helpers.payloads import chunks
from tests.helpers.rows import request_rows
from tests.helpers.waiting import wait_for


def test_a_user_token_key_streams_under_gunicorn(gunicorn, upstream, app, jwks):
    with app.extensions["tally"].sessions() as session:
        save_idp(session, {"issuer": ISSUER, "jwks_url": jwks.url}, "test")
        _, key = create_api_key(session, "spa", "test", user_token=True)
    upstream.reply(events=chunks(["Hel", "lo"]))
    headers = {"Authorization": f"Bearer {key}", "X-Tally-User-Token": jwks.token("ed")}
    body = {"model": "m", "messages": [{"role": "user", "content": "hi"}], "stream": True}
    answer = requests.post(
        gunicorn.url + "/v1/chat/completions", json=body, headers=headers, timeout=30
    )
    assert answer.status_code == 200, answer.text
    assert answer.text.rstrip().endswith("data: [DONE]")
    refused = requests.post(
        gunicorn.url + "/v1/chat/completions",
        json=body,
        headers={**headers, "X-Tally-User-Token": jwks.token("ed", iss="https://x.example")},
        timeout=30,
    )
    assert refused.status_code == 401
    assert refused.json()["error"]["code"] == "token_wrong_issuer"
    [row] = wait_for(lambda: request_rows(app), timeout=10)
    assert row.user.external_id == "user_2N4Z" and row.user.verified
    assert jwks.fetches == 1
