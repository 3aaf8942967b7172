"""An identity provider's published signing keys (its JWKS), fetched and kept per process.

PyJWT parses the keys (:class:`jwt.PyJWKSet`); fetching and caching are ours, because
PyJWKClient cannot do three things Tally needs: serve its cached keys while the
provider is down (an IdP outage must not log every user out), bound refetches on unknown
``kid`` s by a clock the tests control (a flood of tokens with random ``kid`` s must not
become a flood of fetches), and refuse symmetric keys outright.

The rules, per :class:`KeySet`:

- keys are fetched on first use and again once :data:`LIFESPAN` has passed;
- a token whose ``kid`` is not in the set causes a refetch (the provider may have
  rotated its keys), at most once every :data:`REFETCH_INTERVAL` seconds; in between
  such tokens are refused at once, and an expired set is refetched at most as often;
- when a fetch fails, the keys already held keep serving for :data:`STALE_FOR` seconds
  past their lifespan; without keys, a failed fetch is retried after
  :data:`RETRY_AFTER` seconds and :class:`JwksUnavailable` is raised meanwhile.
"""

from __future__ import annotations

import http.client
import json
import logging
import threading
import time
import urllib.request
from collections.abc import Callable
from typing import Any
from urllib.error import URLError

from jwt import PyJWK, PyJWKSet
from jwt.exceptions import PyJWKSetError

log = logging.getLogger(__name__)

FETCH_TIMEOUT = 5.0  # seconds, connect and read
MAX_JWKS_BYTES = 1024 * 1024
LIFESPAN = 300.0  # seconds a fetched key set is fresh
REFETCH_INTERVAL = 60.0  # at most one fetch a minute while keys are held
STALE_FOR = 3600.0  # how long past its lifespan a key set serves while fetches fail
RETRY_AFTER = 5.0  # without keys, how long after a failed fetch the next one may go
# Only asymmetric algorithms: a key set holding a shared secret is not a public key set,
# and an HS* token "signed" with a public key must never verify.
ALGORITHMS = frozenset(
    {"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"}
)


class JwksUnavailable(Exception):
    """The provider's keys could not be fetched and none are held."""


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    """A JWKS URL that redirects is refused: the configured URL is the one trusted."""

    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        """Never follow."""
        return None


def fetch_jwks(url: str, timeout: float = FETCH_TIMEOUT) -> dict[str, Any]:
    """GET the JWKS document at ``url``; raise JwksUnavailable on any failure."""
    request = urllib.request.Request(url, headers={"Accept": "application/json"})
    opener = urllib.request.build_opener(_NoRedirects())
    try:
        with opener.open(request, timeout=timeout) as response:
            raw = response.read(MAX_JWKS_BYTES + 1)
    except (URLError, TimeoutError, OSError, http.client.HTTPException) as exc:
        raise JwksUnavailable(f"could not fetch the JWKS: {exc}") from None
    if len(raw) > MAX_JWKS_BYTES:
        raise JwksUnavailable("the JWKS document is larger than 1 MiB")
    try:
        data = json.loads(raw)
    except ValueError:
        raise JwksUnavailable("the JWKS document is not JSON") from None
    if not isinstance(data, dict):
        raise JwksUnavailable("the JWKS document is not a JSON object")
    return data


def signing_keys(document: dict[str, Any]) -> dict[str | None, PyJWK]:
    """The usable signing keys of a JWKS document by ``kid``: asymmetric, for signing.
    Raises JwksUnavailable when there are none."""
    try:
        parsed = PyJWKSet.from_dict(document)
    except (PyJWKSetError, TypeError, AttributeError):
        raise JwksUnavailable("the JWKS holds no usable keys") from None
    keys = {
        key.key_id: key
        for key in parsed.keys
        if key.public_key_use in ("sig", None) and key.algorithm_name in ALGORITHMS
    }
    if not keys:
        raise JwksUnavailable("the JWKS holds no asymmetric signing keys")
    return keys


class KeySet:
    """One provider's keys in this process, fetched and refreshed by the rules above."""

    def __init__(
        self,
        url: str,
        fetch: Callable[[str], dict[str, Any]] = fetch_jwks,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.url = url
        self.fetch = fetch
        self.clock = clock
        self.fetches = 0  # attempts made, for tests and metrics
        self._keys: dict[str | None, PyJWK] | None = None
        self._fetched_at = 0.0
        self._attempted_at: float | None = None
        self._refetched_at: float | None = None  # the last fetch an unknown kid caused
        # Under gevent this is a cooperative lock: one greenlet fetches, the others wait
        # for its result instead of fetching too.
        self._lock = threading.Lock()

    def get(self, kid: str | None) -> PyJWK | None:
        """The key for ``kid`` (a token without one is matched when the set holds exactly
        one key), or None when the provider has no such key. Raises JwksUnavailable when
        no keys can be had."""
        with self._lock:
            now = self.clock()
            stale = self._keys is None or now - self._fetched_at >= LIFESPAN
            if stale and self._may_fetch(now):
                self._refresh(now)
            if not self._usable(now):
                raise JwksUnavailable(f"no keys from {self.url}")
            key = self._find(kid)
            if key is None and self._may_refetch(now):
                self._refetched_at = now
                self._refresh(now)
                key = self._find(kid)
            return key

    def retry_after(self) -> int:
        """Seconds until the next fetch may be attempted (at least 1)."""
        if self._attempted_at is None:
            return 1
        wait = self._attempted_at + RETRY_AFTER - self.clock()
        return max(1, int(wait + 0.999))

    def _usable(self, now: float) -> bool:
        return self._keys is not None and now - self._fetched_at < LIFESPAN + STALE_FOR

    def _may_fetch(self, now: float) -> bool:
        if self._attempted_at is None:
            return True
        interval = REFETCH_INTERVAL if self._usable(now) else RETRY_AFTER
        return now - self._attempted_at >= interval

    def _may_refetch(self, now: float) -> bool:
        """An unknown kid may mean the provider rotated its keys: one refetch a minute."""
        return self._refetched_at is None or now - self._refetched_at >= REFETCH_INTERVAL

    def _refresh(self, now: float) -> None:
        """Fetch; a failure keeps what is held (and is logged)."""
        self._attempted_at = now
        self.fetches += 1
        try:
            self._keys = signing_keys(self.fetch(self.url))
            self._fetched_at = now
        except JwksUnavailable as exc:
            log.warning("identity provider keys: %s (%s)", exc, self.url)

    def _find(self, kid: str | None) -> PyJWK | None:
        keys = self._keys or {}
        if kid is None:
            return next(iter(keys.values())) if len(keys) == 1 else None
        return keys.get(kid)


class KeySets:
    """The key sets of this process, one per JWKS URL (a config change brings a new one;
    the last few are kept, so flipping between two URLs does not refetch)."""

    MAX = 4

    def __init__(self, clock: Callable[[], float] = time.monotonic, fetch=fetch_jwks):
        self.clock = clock
        self.fetch = fetch
        self._sets: dict[str, KeySet] = {}
        self._lock = threading.Lock()

    def for_url(self, url: str) -> KeySet:
        """The key set of ``url``, made on first use."""
        with self._lock:
            found = self._sets.get(url)
            if found is None:
                while len(self._sets) >= self.MAX:
                    self._sets.pop(next(iter(self._sets)))
                found = self._sets[url] = KeySet(url, self.fetch, lambda: self.clock())
            return found
