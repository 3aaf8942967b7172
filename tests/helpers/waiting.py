"""Waiting for what happens after an answer (a stream's row, a spool drained, a process
restarted) without sleeping longer than it takes."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def wait_for(predicate: Callable[[], T], timeout: float = 5.0, step: float = 0.02) -> T:
    """Poll ``predicate()`` every ``step`` seconds until truthy or ``timeout``; its last
    value."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(step)
