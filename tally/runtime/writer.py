"""``python -m tally.runtime.writer SOCKET INSTANCE_PATH``: the usage writer process
(tally.usage.writer.process) as gunicorn.conf.py starts it, with its reconciler's
corrections going to the limits' counters (tally.limits.corrections) on the
deployment's limit storage: the instance's counter file (``TALLY_LIMITS_DB``, exported by
the master) or ``TALLY_RATELIMIT_STORAGE_URI``."""

from __future__ import annotations

from functools import partial

from tally.limits.alerts import threshold_alerts
from tally.limits.corrections import correct_counters
from tally.limits.runtime import LimitsRuntime, make_storage
from tally.settings import Settings
from tally.usage.writer import process


def corrections(settings: Settings):
    """Where a reconciled call's difference goes: the deployment's limit storage (None
    when the instance has no storage a writer process can share)."""
    if not (settings.ratelimit_storage_uri or settings.limits_db):
        return None
    storage, description = make_storage(settings.ratelimit_storage_uri, settings.limits_db)
    limits = LimitsRuntime(storage, description=description)
    return partial(correct_counters, limits)


def alerts(settings: Settings, sessions):
    """What checks each written batch for limit alerts (tally.limits.alerts), reading the
    deployment's limit storage (None when the writer process cannot share it)."""
    if not (settings.ratelimit_storage_uri or settings.limits_db):
        return None
    storage, description = make_storage(settings.ratelimit_storage_uri, settings.limits_db)
    limits = LimitsRuntime(storage, sessions=sessions, description=description)
    return partial(threshold_alerts, limits, sessions)


if __name__ == "__main__":
    process.main(corrections, alerts)
