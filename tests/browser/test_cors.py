"""CORS in a real browser: a page served from a second loopback origin calls Tally with
``fetch``, as a browser frontend does with a --user-token key. The key's origin gets its
preflight and answer; another origin's call is blocked by the browser before it is sent.
"""

from __future__ import annotations

import pytest
from werkzeug.wrappers import Response

from tally.keys.api_keys import create_api_key
from tests.helpers.loopback import LoopbackServer
from tests.helpers.payloads import completion

CALL = """async ([url, key, token]) => {
  try {
    const answer = await fetch(url + "/v1/chat/completions", {
      method: "POST",
      headers: {
        "Authorization": "Bearer " + key,
        "Content-Type": "application/json",
        "X-Tally-User-Token": token,
        "X-Stainless-Lang": "js",
      },
      body: JSON.stringify({model: "openai/gpt-4o-mini",
                            messages: [{role: "user", content: "Hi"}], user: "mallory"}),
    });
    const body = await answer.json();
    return {status: answer.status, requestId: answer.headers.get("X-Request-Id"),
            text: body.choices ? body.choices[0].message.content : null, error: body.error};
  } catch (e) {
    return {blocked: String(e)};
  }
}"""


PAGE = b"<!doctype html><title>frontend</title><p>a chat frontend</p>"


def frontend(environ, start_response):
    """A web page's own origin: one blank page, whatever the path."""
    return Response(PAGE, mimetype="text/html")(environ, start_response)


@pytest.fixture
def sites():
    """Two origins serving the page: the key's and a stranger's."""
    made = [LoopbackServer(frontend), LoopbackServer(frontend)]
    yield made
    for site in made:
        site.close()


def test_fetch_from_the_keys_origin_works_and_another_origin_is_blocked(
    page, tally, upstream, idp, sites
):
    allowed, stranger = sites
    with tally.flask_app.extensions["tally"].sessions() as session:
        _, key = create_api_key(session, "spa", "test", user_token=True, origins=[allowed.url])
    upstream.reply(json=completion("Hello, browser"))

    page.goto(allowed.url + "/")
    token = idp.token("ed", azp=allowed.url)
    result = page.evaluate(CALL, [tally.url, key, token])
    assert result.get("status") == 200, result
    assert result["text"] == "Hello, browser"
    assert result["requestId"]  # an exposed header: the page can read it
    assert upstream.last.body["user"] != "mallory"
    forged = idp.token("ed", azp=allowed.url, iss="https://evil.example")
    refused = page.evaluate(CALL, [tally.url, key, forged])
    assert refused["status"] == 401 and refused["error"]["code"] == "token_wrong_issuer"

    sent = len(upstream.requests)
    page.goto(stranger.url + "/")
    result = page.evaluate(CALL, [tally.url, key, idp.token("ed", azp=stranger.url)])
    assert "blocked" in result and "Failed to fetch" in result["blocked"], result
    assert len(upstream.requests) == sent  # the preflight failed: the call was never sent
