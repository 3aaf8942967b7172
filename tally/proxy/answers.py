"""What the upstream answered, as Tally passes it on: the answer a view sends back, the
upstream's own errors in OpenAI's shape (status and message kept, its key scrubbed),
and the model list."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass

from tally.errors import UpstreamError
from tally.proxy.upstream import UpstreamClient


@dataclass
class ProxyResponse:
    """What the view sends back: a whole body, or an iterator of SSE bytes."""

    status: int
    headers: dict[str, str]
    body: bytes | Iterator[bytes]


def list_models(upstream: UpstreamClient) -> ProxyResponse:
    """The upstream's model list, passed through."""
    response = upstream.get("/models")
    try:
        content = response.read()
    finally:
        response.close()
    if response.status >= 400:
        raise upstream_error(response.status, content, upstream)
    try:
        json.loads(content)
    except (ValueError, RecursionError):  # not JSON, or nested past recursion
        raise UpstreamError(
            "The upstream's model list is not JSON.", code="upstream_malformed"
        ) from None
    return ProxyResponse(200, {"Content-Type": "application/json"}, content)


def upstream_error(status: int, content: bytes, upstream: UpstreamClient) -> UpstreamError:
    """The upstream's own error (status and message kept), in OpenAI's shape."""
    message, kind, code, param = f"The upstream answered with status {status}.", None, None, None
    try:
        error = json.loads(content).get("error")
    except (ValueError, RecursionError, AttributeError):
        error = None
    if isinstance(error, dict):
        message = error.get("message") if isinstance(error.get("message"), str) else message
        kind, code, param = error.get("type"), error.get("code"), error.get("param")
    elif isinstance(error, str):
        message = error
    return UpstreamError(
        upstream.scrub(message),
        param if isinstance(param, str) else None,
        code=str(code) if code is not None else f"upstream_{status}",
        upstream_status=status,
        upstream_type=kind if isinstance(kind, str) else None,
    )
