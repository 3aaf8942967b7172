"""A --user-token key with the official SDKs, unchanged: the openai Python SDK
(``default_headers``) and the Vercel AI SDK (createOpenAI's ``headers``), streaming."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import openai
import pytest

from tests.helpers.payloads import chunks, response_events
from tests.helpers.rows import configure, request_rows
from tests.helpers.waiting import wait_for

JS = Path(__file__).resolve().parents[1] / "js"  # tests/js


def test_openai_sdk_streams_with_a_user_token(tally, upstream, idp, user_key):
    configure(tally.flask_app, hash_mode="none")
    upstream.reply(events=chunks(["Hel", "lo"]))
    sdk = openai.OpenAI(
        base_url=f"{tally.url}/v1",
        api_key=user_key,
        max_retries=0,
        default_headers={"X-Tally-User-Token": idp.token("ed")},
    )
    stream = sdk.chat.completions.create(
        model="openai/gpt-4o-mini",
        messages=[{"role": "user", "content": "Hi"}],
        user="someone_else",
        stream=True,
    )
    pieces = [c.choices[0].delta.content for c in stream if c.choices]
    assert "".join(p or "" for p in pieces) == "Hello"
    assert upstream.last.body["user"] == "tally_user_2N4Z"
    [row] = wait_for(lambda: request_rows(tally.flask_app))
    assert (row.stream, row.status, row.user.external_id) == (True, 200, "user_2N4Z")


def test_openai_sdk_sees_a_bad_token_as_an_authentication_error(tally, idp, user_key):
    sdk = openai.OpenAI(
        base_url=f"{tally.url}/v1",
        api_key=user_key,
        max_retries=0,
        default_headers={"X-Tally-User-Token": idp.token(iss="https://evil.example")},
    )
    with pytest.raises(openai.AuthenticationError) as caught:
        sdk.chat.completions.create(
            model="openai/gpt-4o-mini", messages=[{"role": "user", "content": "Hi"}]
        )
    assert caught.value.code == "token_wrong_issuer"


def _run_vercel(tally, key: str, token: str, api: str) -> dict:
    if not (shutil.which("node") and (JS / "node_modules" / "ai").is_dir()):
        if os.environ.get("TALLY_REQUIRE_NODE"):
            pytest.fail("Node.js and `npm ci --prefix tests/js` are required")
        pytest.skip("Node.js or tests/js/node_modules missing")
    done = subprocess.run(
        ["node", str(JS / "client.mjs"), f"{tally.url}/v1", key, "stream", "mallory", api],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={**os.environ, "TALLY_USER_TOKEN": token},
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_vercel_ai_sdk_streams_chat_with_a_user_token(tally, upstream, idp, user_key):
    configure(tally.flask_app, hash_mode="none")
    upstream.reply(events=chunks(["Hel", "lo", "!"]))
    result = _run_vercel(tally, user_key, idp.token("rsa"), "chat")
    assert "".join(result["parts"]) == "Hello!" and result["finishReason"] == "stop"
    assert upstream.last.body["user"] == "tally_user_2N4Z"  # not "mallory" from the body
    [row] = wait_for(lambda: request_rows(tally.flask_app))
    assert (row.stream, row.status, row.user.external_id) == (True, 200, "user_2N4Z")


def test_vercel_ai_sdk_streams_responses_with_a_user_token(tally, upstream, idp, user_key):
    configure(tally.flask_app, hash_mode="none", dialect="openai")
    upstream.reply(events=response_events(["Hel", "lo", "!"]), done=False)
    result = _run_vercel(tally, user_key, idp.token("ec"), "responses")
    assert "".join(result["parts"]) == "Hello!" and result["errors"] == []
    assert upstream.last.body["safety_identifier"] == "tally_user_2N4Z"
    [row] = wait_for(lambda: request_rows(tally.flask_app))
    assert (row.endpoint, row.user.external_id) == ("responses", "user_2N4Z")
