"""OpenRouter's app attribution (PRODUCT.md, Chat API): a client's ``HTTP-Referer`` and
``X-Title`` reach the upstream as sent, on every endpoint and in a stream; no other client
header does, and none can take the place of Tally's own (the upstream key above all)."""

from __future__ import annotations

import pytest

from tests.helpers.api import body_of, chat, embed, respond

ATTRIBUTION = {"HTTP-Referer": "https://chat.example.com/", "X-Title": "Example Chat"}


@pytest.mark.parametrize(
    "send",
    [
        lambda tally, headers: chat(tally, headers=headers, user="ada"),
        lambda tally, headers: body_of(chat(tally, headers=headers, user="ada", stream=True)),
        lambda tally, headers: respond(tally, headers=headers, user="ada"),
        lambda tally, headers: embed(tally, headers=headers, user="ada"),
    ],
    ids=["chat", "chat-stream", "responses", "embeddings"],
)
def test_attribution_headers_reach_the_upstream_as_sent(tally, upstream, send):
    send(tally, ATTRIBUTION)
    received = upstream.last.headers
    assert received["Http-Referer"] == "https://chat.example.com/"
    assert received["X-Title"] == "Example Chat"


def test_no_other_client_header_goes_upstream(tally, upstream):
    sent = {
        **ATTRIBUTION,
        "X-Custom": "secret-ish",
        "Cookie": "session=abc",
        "OpenAI-Organization": "org-123",
        "User-Agent": "my-app/1.0",
        "X-Tally-User": "bob",
    }
    assert chat(tally, headers=sent).status_code == 200
    received = {name.lower(): value for name, value in upstream.last.headers.items()}
    for name in ("x-custom", "cookie", "openai-organization", "x-tally-user"):
        assert name not in received
    assert received["user-agent"] != "my-app/1.0"  # Tally's own
    assert received["authorization"] == "Bearer sk-up-secret"
    assert received["x-title"] == "Example Chat"


def test_without_them_nothing_is_added(tally, upstream):
    assert embed(tally).status_code == 200
    received = {name.lower() for name in upstream.last.headers}
    assert "http-referer" not in received and "x-title" not in received


def test_a_title_in_latin_1_passes_byte_for_byte(tally, upstream):
    # HTTP header values are bytes; requests sends a str as Latin-1, as browsers may
    chat(tally, headers={"X-Title": "Café Crème"}, user="ada")
    assert upstream.last.headers["X-Title"].encode("latin-1") == "Café Crème".encode("latin-1")
