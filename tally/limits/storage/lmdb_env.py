"""The LMDB environment of a counter file, one per file per process (tally.limits.storage
.lmdb_file): LMDB forbids opening a file twice in a process (closing the second would
drop the first's locks), and a forked child must open its own rather than use its
parent's."""

from __future__ import annotations

import os
from typing import Any

import lmdb

MAP_SIZE = 4 << 30  # the most the file may grow to (its pages are used as needed)


def open_environment(path: str) -> tuple[lmdb.Environment, Any, Any, Any]:
    """This process's environment on ``path`` and its two sub-databases: one per file
    per process, shared by every storage on it (LMDB forbids opening a file twice in a
    process: closing the second would drop the first's locks)."""
    if _OPEN["forks"] != _FORKS[0]:  # a forked child: its parent's are not its own
        _INHERITED.extend(opened[0] for opened in _OPEN["envs"].values())  # never closed
        _OPEN["envs"], _OPEN["forks"] = {}, _FORKS[0]
    opened = _OPEN["envs"].get(path)
    if opened is None:
        # not synced: in memory, and rebuilt from the request log when lost
        options = {"sync": False, "metasync": False, "readahead": False, "meminit": False}
        env = lmdb.open(path, subdir=False, map_size=MAP_SIZE, max_dbs=3, **options)
        dbs = (env.open_db(b"counters"), env.open_db(b"windows"), env.open_db(b"holds"))
        opened = _OPEN["envs"][path] = (env, *dbs)
    return opened


def close(path: str) -> None:
    """Close this process's environment on ``path`` (its file is about to go)."""
    opened = _OPEN["envs"].pop(path, None)
    if opened is not None:
        opened[0].close()


_FORKS = [0]  # forks this process's line has made: a forked child opens its own
_OPEN: dict[str, Any] = {"forks": 0, "envs": {}}
_INHERITED: list[lmdb.Environment] = []  # a parent's environments, never used nor closed
os.register_at_fork(after_in_child=lambda: _FORKS.__setitem__(0, _FORKS[0] + 1))
