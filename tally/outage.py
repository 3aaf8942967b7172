"""One process's view of a database outage: when it began, whether to try again yet,
and one log line when it begins and one when it ends (not one stack trace a request).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

log = logging.getLogger(__name__)


class Outage:
    """Failures and recoveries of the database as one process sees them.

    After a failure, :meth:`should_try` says no for ``retry_interval`` seconds: requests
    served from the caches meanwhile do not each wait for a connect timeout.
    """

    def __init__(self, retry_interval: float = 1.0, clock: Callable[[], float] = time.monotonic):
        self.retry_interval = retry_interval
        self._clock = clock
        self._lock = threading.Lock()
        self.since: float | None = None  # when the current outage began
        self._retry_at = 0.0

    @property
    def down(self) -> bool:
        """Whether the last attempt failed."""
        return self.since is not None

    def should_try(self) -> bool:
        """Whether to reach for the database now (always, unless it failed just now)."""
        return self.since is None or self._clock() >= self._retry_at

    def failed(self, error: BaseException) -> None:
        """Note a failure; the first of an outage is logged, as one line."""
        with self._lock:
            now = self._clock()
            self._retry_at = now + self.retry_interval
            if self.since is not None:
                return
            self.since = now
        detail = str(getattr(error, "orig", None) or error).strip().splitlines()
        log.error(
            "database unavailable (%s: %s); serving from cache where possible",
            type(error).__name__,
            detail[0] if detail else "",
        )

    def recovered(self) -> None:
        """Note a success; the end of an outage is logged."""
        if self.since is None:
            return
        with self._lock:
            since, self.since = self.since, None
        if since is not None:
            log.warning("database available again after %.1f s", self._clock() - since)
