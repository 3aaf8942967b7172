"""gunicorn settings for the floor (bench/floor.py): those of Tally's gunicorn.conf.py,
read from that file, with its server-level hooks and without Tally's own.

Kept: every setting (bind, workers, worker class, connections, keepalive, timeouts...,
and the c-ares resolver), ``on_starting`` (gunicorn sends a response's head with its
first body bytes, tally/runtime/serving.py) and ``post_worker_init`` (``gc.freeze()``), so the
floor is served exactly as Tally is. Left out: ``when_ready`` and ``on_exit`` (the usage
writer process: the floor has none) and ``worker_exit`` (Tally's usage queue). The
environment overrides the settings as it does Tally's (TALLY_BIND, TALLY_WORKERS, ...).
"""

import runpy
from pathlib import Path
from types import ModuleType

_SERVER_HOOKS = ("on_starting", "post_worker_init")
_shipped = runpy.run_path(str(Path(__file__).resolve().parent.parent / "gunicorn.conf.py"))
globals().update(
    {
        name: value
        for name, value in _shipped.items()
        if not name.startswith("_")
        and not isinstance(value, ModuleType)
        and (not callable(value) or name in _SERVER_HOOKS)
    }
)
