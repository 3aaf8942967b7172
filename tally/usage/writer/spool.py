"""The usage spool: request rows the database could not take, kept on local disk, in
order, until it takes them again.

A spool is a folder of *segments* (``<instance>/usage-spool/*.spool``). Each process
appends to segments of its own, each batch as one frame of the writer socket's format
(tally/usage/writer/wire.py: a 4-byte length and a JSON array), written and
fsync'd once per batch. A process holds an exclusive ``flock`` on every segment it
owns, for as long as it lives: a segment whose lock can be taken belongs to a process
that is gone (a worker restarted, the writer process killed), and any other writer of
the same instance folder adopts and replays it.

Replays are idempotent (``record_calls`` skips request ids it already has), so a
segment replayed twice, or a crash half-way through one, never counts a row twice.
The folder is bounded (``max_bytes``): once full, batches are refused with an error
log line each, and the caller says how many rows were lost.
"""

from __future__ import annotations

import fcntl
import logging
import os
import sys
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path

from tally.usage.writer.wire import FRAME, Item, decode_batch, encode_batch

log = logging.getLogger(__name__)
SUFFIX = ".spool"
SEGMENT_BYTES = 8 * 1024 * 1024  # a new segment after this: replays read one at a time
REPLAY_ROWS = 500  # rows per replayed transaction: spooled frames are often a few rows


class Spool:
    """One process's side of an instance folder's usage spool."""

    def __init__(self, directory: str | os.PathLike, max_bytes: int):
        self.directory = Path(directory)
        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.max_bytes = max_bytes
        self._lock = _native_rlock()
        self._owned: dict[Path, int] = {}  # segment -> fd holding its flock
        self._current: Path | None = None  # the segment new batches go to
        self._written = 0  # bytes in it
        self._full = False

    def append(self, items: list[Item]) -> bool:
        """Add one batch, on disk (fsync'd) when this returns True; False when full."""
        frame = encode_batch(items)
        with self._lock:
            if self.size() + len(frame) > self.max_bytes:
                if not self._full:
                    log.error(
                        "USAGE SPOOL FULL (%d bytes in %s): request rows are being lost "
                        "until the database takes them again",
                        self.max_bytes,
                        self.directory,
                    )
                self._full = True
                return False
            self._full = False
            if self._current is None or self._written > SEGMENT_BYTES:
                self._current, self._written = self._new_segment(), 0
            fd = self._owned[self._current]
            os.write(fd, frame)
            os.fsync(fd)
            self._written += len(frame)
            return True

    def pending(self) -> bool:
        """Whether anything, this process's or an orphan's, waits to be replayed."""
        return any(self.directory.glob("*" + SUFFIX))

    def size(self) -> int:
        """Bytes in the whole spool folder (every process's segments)."""
        total = 0
        for path in self.directory.glob("*" + SUFFIX):
            try:
                total += path.stat().st_size
            except FileNotFoundError:  # replayed and removed meanwhile
                continue
        return total

    def drain(self, write: Callable[[list[Item]], object]) -> int:
        """Replay every segment this process owns or can adopt, oldest first, through
        ``write`` (which raises when the database still refuses); a segment is removed
        once all its batches are written. Returns the number of rows replayed."""
        rows = 0
        with self._lock:
            self._current = None  # batches spooled from now on go to a newer segment
            owned = sorted(self._owned)  # names begin with their creation time
        for path in owned + self._orphans():
            chunk: list[Item] = []
            for items in read_segment(path):
                chunk.extend(items)
                if len(chunk) >= REPLAY_ROWS:
                    write(chunk)
                    rows, chunk = rows + len(chunk), []
            if chunk:
                write(chunk)
                rows += len(chunk)
            with self._lock:
                path.unlink(missing_ok=True)
                os.close(self._owned.pop(path))
        return rows

    def close(self) -> None:
        """Release this process's segments (they stay on disk, for whoever comes next)."""
        with self._lock:
            for fd in self._owned.values():
                os.close(fd)
            self._owned.clear()
            self._current = None

    def _new_segment(self) -> Path:
        name = f"{time.time_ns():020d}-{os.getpid()}-{uuid.uuid4().hex[:6]}{SUFFIX}"
        path = self.directory / name
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_EXCL, 0o600)
        fcntl.flock(fd, fcntl.LOCK_EX)
        self._owned[path] = fd
        return path

    def _orphans(self) -> list[Path]:
        """Segments of processes that are gone, now locked by this one."""
        adopted = []
        for path in sorted(self.directory.glob("*" + SUFFIX)):
            with self._lock:
                if path in self._owned:
                    continue
                try:
                    fd = os.open(path, os.O_RDONLY)
                except FileNotFoundError:
                    continue
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:  # its process is alive and replays it itself
                    os.close(fd)
                    continue
                if not path.exists():  # replayed and removed while we opened it
                    os.close(fd)
                    continue
                self._owned[path] = fd
            adopted.append(path)
        return adopted


def read_segment(path: Path) -> list[list[Item]]:
    """The batches of one segment; a frame cut short (a crash mid-write) ends it."""
    data = path.read_bytes()
    batches, offset = [], 0
    while offset + FRAME.size <= len(data):
        (size,) = FRAME.unpack_from(data, offset)
        start = offset + FRAME.size
        if start + size > len(data):
            log.warning("usage spool %s ends with a cut frame; its rest is ignored", path)
            break
        batches.append(decode_batch(data[start : start + size]))
        offset = start + size
    return batches


def _native_rlock():
    """A lock of the operating system's threads even under gevent's monkey patching: in a
    worker, spooling and replays both run on native threads (``run_native``), where a
    gevent lock would try to switch greenlets of another thread's hub."""
    if "gevent" in sys.modules:
        from gevent import monkey

        if monkey.is_module_patched("threading"):
            return monkey.get_original("_thread", "RLock")()
    return threading.RLock()
