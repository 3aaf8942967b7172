"""Where an instance's counter file (tally/limits/storage/lmdb_file.py) lives: a private directory
gunicorn's master makes before the first worker forks and removes after the last."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from tally.limits.storage.lmdb_env import close


def create() -> str:
    """A private directory (0700) for an instance's counters, in memory (``/dev/shm``)
    where there is one, named after this process; the counter file's path in it. gunicorn's
    master calls this before the first worker forks. Directories left by masters that
    died without cleaning up (their process is gone) are removed first."""
    shm = "/dev/shm"
    base = shm if os.path.isdir(shm) and os.access(shm, os.W_OK) else tempfile.gettempdir()
    for stale in Path(base).glob("tally-limits-*-*"):
        pid = stale.name.split("-")[2]
        if pid.isdigit() and not _alive(int(pid)):
            shutil.rmtree(stale, ignore_errors=True)
    directory = tempfile.mkdtemp(prefix=f"tally-limits-{os.getpid()}-", dir=base)
    return os.path.join(directory, "limits")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's: alive
        return True
    return True


def remove(path: str) -> None:
    """Remove the counters' directory (gunicorn's master, after the last worker)."""
    close(path)
    shutil.rmtree(os.path.dirname(path), ignore_errors=True)
