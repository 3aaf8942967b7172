"""CORS in a real browser: a page served from a second loopback origin calls Tally with
``fetch``, as a browser frontend does with a --user-token key. The key's origin gets its
preflight and answer; another origin's call is blocked by the browser before it is sent.
"""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from tally.keys.api_keys import create_api_key
from tests.fakes import completion

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


class Site:
    """A web page's own origin: serves one blank page on a loopback port."""

    def __init__(self):
        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 (http.server's name)
                body = b"<!doctype html><title>frontend</title><p>a chat frontend</p>"
                self.send_response(200)
                self.send_header("Content-Type", "text/html")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.origin = f"http://127.0.0.1:{self._httpd.server_port}"
        threading.Thread(target=self._httpd.serve_forever, args=(0.05,), daemon=True).start()

    def close(self):
        self._httpd.shutdown()
        self._httpd.server_close()


@pytest.fixture
def sites():
    made = [Site(), Site()]
    yield made
    for site in made:
        site.close()


def test_fetch_from_the_keys_origin_works_and_another_origin_is_blocked(
    page, tally, upstream, idp, sites
):
    allowed, stranger = sites
    with tally.flask_app.extensions["tally"].sessions() as session:
        _, key = create_api_key(session, "spa", "test", user_token=True, origins=[allowed.origin])
    upstream.reply(json=completion("Hello, browser"))

    page.goto(allowed.origin + "/")
    token = idp.token("ed", azp=allowed.origin)
    result = page.evaluate(CALL, [tally.url, key, token])
    assert result.get("status") == 200, result
    assert result["text"] == "Hello, browser"
    assert result["requestId"]  # an exposed header: the page can read it
    assert upstream.last.body["user"] != "mallory"
    forged = idp.token("ed", azp=allowed.origin, iss="https://evil.example")
    refused = page.evaluate(CALL, [tally.url, key, forged])
    assert refused["status"] == 401 and refused["error"]["code"] == "token_wrong_issuer"

    sent = len(upstream.requests)
    page.goto(stranger.origin + "/")
    result = page.evaluate(CALL, [tally.url, key, idp.token("ed", azp=stranger.origin)])
    assert "blocked" in result and "Failed to fetch" in result["blocked"], result
    assert len(upstream.requests) == sent  # the preflight failed: the call was never sent
