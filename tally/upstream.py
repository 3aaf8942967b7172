"""The upstream router client: the only module that uses ``requests``.

One pooled :class:`requests.Session` per process. Connection-level failures become
:class:`UpstreamError` (502) or :class:`UpstreamTimeout` (504); an upstream answer of
any status is handed back for the caller to relay.
"""

from __future__ import annotations

import json
from typing import Any

import requests
from requests.adapters import HTTPAdapter
from urllib3.exceptions import ReadTimeoutError

from tally.errors import UpstreamError, UpstreamTimeout

DEMO_BASE_URL = "http://demo-upstream.tally.invalid/v1"
CONNECT_TIMEOUT = 10.0


class UpstreamClient:
    """Talks to the configured OpenAI-compatible upstream (or the built-in demo)."""

    def __init__(
        self,
        base_url: str | None,
        api_key: str | None,
        timeout: float,
        *,
        pool_size: int = 256,
        demo_token_delay: float = 0.03,
    ):
        self.is_demo = base_url is None
        self.base_url = DEMO_BASE_URL if base_url is None else base_url.rstrip("/")
        self._api_key = api_key
        self.timeout = (min(CONNECT_TIMEOUT, timeout), timeout)
        self._session = requests.Session()
        self._session.trust_env = False  # no proxy or netrc surprises from the environment
        adapter = HTTPAdapter(pool_connections=4, pool_maxsize=pool_size, max_retries=0)
        self._session.mount("http://", adapter)
        self._session.mount("https://", adapter)
        if self.is_demo:
            from tally.demo import DemoAdapter

            self._session.mount(DEMO_BASE_URL, DemoAdapter(token_delay=demo_token_delay))

    def __repr__(self) -> str:  # the API key stays out of reprs and logs
        return f"UpstreamClient(base_url={self.base_url!r}, demo={self.is_demo})"

    def post_chat(self, body: dict[str, Any], *, stream: bool) -> requests.Response:
        """POST ``/chat/completions``; with ``stream`` the body is read as it arrives."""
        data = json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
        headers = {"Content-Type": "application/json"}
        if stream:
            headers["Accept"] = "text/event-stream"
        return self._send("POST", "/chat/completions", data=data, headers=headers, stream=stream)

    def get_models(self) -> requests.Response:
        """GET ``/models``."""
        return self._send("GET", "/models", headers={}, stream=False)

    def scrub(self, text: str) -> str:
        """Remove the upstream API key from text that came back from the upstream."""
        return text.replace(self._api_key, "[redacted]") if self._api_key else text

    def _send(self, method: str, path: str, *, headers: dict, stream: bool, data=None):
        if self._api_key:
            headers["Authorization"] = f"Bearer {self._api_key}"
        try:
            return self._session.request(
                method,
                self.base_url + path,
                data=data,
                headers=headers,
                stream=stream,
                timeout=self.timeout,
                allow_redirects=False,
            )
        except requests.exceptions.Timeout:
            raise UpstreamTimeout(
                f"The upstream did not answer within {self.timeout[1]:g} seconds."
            ) from None
        except requests.exceptions.RequestException as exc:
            if is_read_timeout(exc):
                raise UpstreamTimeout(
                    f"The upstream did not answer within {self.timeout[1]:g} seconds."
                ) from None
            if isinstance(exc, requests.exceptions.ChunkedEncodingError):
                raise UpstreamError(
                    "The upstream connection broke before the answer was complete.",
                    code="upstream_disconnected",
                ) from None
            raise UpstreamError(
                f"The upstream could not be reached ({type(exc).__name__})."
            ) from None


def is_read_timeout(exc: BaseException) -> bool:
    """True when a requests error (raised while reading a body) is a read timeout."""
    if isinstance(exc, requests.exceptions.Timeout):
        return True
    return any(isinstance(arg, ReadTimeoutError) for arg in getattr(exc, "args", ()))
