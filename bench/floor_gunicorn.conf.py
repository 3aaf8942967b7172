"""gunicorn settings for the floor (bench/floor.py): the values of Tally's
gunicorn.conf.py (bind, workers, worker class, connections, keepalive, timeouts...),
read from that file, without its hooks.

So the floor runs no usage writer process (``when_ready``), keeps gunicorn's own way of
sending answers (``on_starting`` installs Tally's, tally/serving.py) and does not freeze
the garbage collector after start-up (``post_worker_init``): bare gunicorn, with the
same settings. The environment overrides them as it does Tally's (TALLY_BIND, ...).
"""

import runpy
from pathlib import Path
from types import FunctionType, ModuleType

_shipped = runpy.run_path(str(Path(__file__).resolve().parent.parent / "gunicorn.conf.py"))
globals().update(
    {
        name: value
        for name, value in _shipped.items()
        if not name.startswith("_") and not isinstance(value, FunctionType | ModuleType)
    }
)
