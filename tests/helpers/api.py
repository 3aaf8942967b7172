"""Calling Tally's API over real HTTP, as a client does: chat completions, the Responses
API and embeddings, with the served Tally's key (``server.key``) unless told otherwise."""

from __future__ import annotations

import requests

MESSAGES = [{"role": "user", "content": "Hi there"}]
BASE = {"model": "openai/gpt-4o-mini", "messages": MESSAGES}
RESPONSES_BODY = {"model": "openai/gpt-4o-mini", "input": "Hi there"}
EMBEDDINGS_BODY = {"model": "openai/text-embedding-3-small", "input": ["first text", "second text"]}


def chat(server, body=None, *, key=None, headers=None, stream=False, **extra):
    """POST a chat completion to Tally over HTTP; ``stream`` sets the body's ``stream``
    and reads the answer as it arrives."""
    if stream:
        extra["stream"] = True
    payload = {**BASE, **extra} if body is None else body
    sent = {"Authorization": f"Bearer {key or server.key}", **(headers or {})}
    kwargs = {"data": payload} if isinstance(payload, bytes | str) else {"json": payload}
    return requests.post(
        f"{server.url}/v1/chat/completions", headers=sent, stream=stream, timeout=10, **kwargs
    )


def respond(server, body=None, *, stream=False, headers=None, **extra):
    """POST a Responses API call to Tally."""
    payload = {**RESPONSES_BODY, **extra, **({"stream": True} if stream else {})}
    return requests.post(
        f"{server.url}/v1/responses",
        json=payload if body is None else body,
        headers={"Authorization": f"Bearer {server.key}", **(headers or {})},
        stream=stream,
        timeout=10,
    )


def embed(server, body=None, *, headers=None, **extra):
    """POST an embeddings call to Tally."""
    return requests.post(
        f"{server.url}/v1/embeddings",
        json={**EMBEDDINGS_BODY, **extra} if body is None else body,
        headers={"Authorization": f"Bearer {server.key}", **(headers or {})},
        timeout=10,
    )


def body_of(response) -> bytes:
    """A streamed answer's whole body, read as it arrives."""
    return b"".join(response.iter_content(chunk_size=None))
