"""gunicorn settings for Tally (``gunicorn --config gunicorn.conf.py wsgi:app``).

gevent workers: a stream costs a greenlet, not a thread, so one instance holds a
thousand slow streams in a few hundred MB, and requests queue behind no thread pool.
Measured against gthread in docs/benchmarks.md; the reasons are in docs/deployment.md.
TALLY_BIND, TALLY_WORKERS, TALLY_WORKER_CLASS and TALLY_THREADS (gthread only) override;
they are read, and checked, by tally/settings.py (``load_server_settings``).

Usage rows: the workers hand them to a usage writer process that the master starts
before them and stops after them (tally/usage/writer/process.py).

Metrics: every worker writes its Prometheus values to files in a fresh private directory
(``PROMETHEUS_MULTIPROC_DIR``, made here in the master before any worker forks and
before prometheus_client is imported anywhere); ``GET /metrics`` adds them up. A worker
that exits is marked dead (``child_exit``); the directory goes at ``on_exit``.

Shutdown: on SIGTERM a worker stops accepting, lets in-flight requests and streams run
to their end for up to ``graceful_timeout`` seconds, then hands over the usage rows still
queued (``worker_exit``) before it exits; the writer process writes them and stops last.
"""

import gc
import os
import shutil
import sys

from tally.settings import (
    SettingsError,
    export_limits_db,
    export_metrics_dir,
    load_server_settings,
)

try:
    tally_settings = load_server_settings()
except SettingsError as exc:  # one line naming the variable, not a traceback
    sys.exit(f"gunicorn.conf.py: {exc}")
# Before prometheus_client is imported (it reads the variable at import): nothing above
# imports it, and the workers inherit the variable when they fork.
tally_metrics_dir = export_metrics_dir()
bind = tally_settings.bind
workers = tally_settings.workers  # one per core
worker_class = tally_settings.worker_class
worker_connections = 2000  # gevent: open connections (streams included) per worker
threads = tally_settings.threads  # gthread only: one per open stream
backlog = 2048
timeout = 120  # a worker whose main loop is silent this long is restarted
graceful_timeout = 120  # SIGTERM: streams get this long to finish (minute-long answers)
keepalive = 5
accesslog = None  # Tally writes its own JSON access log (tally.logs)
# gevent's default resolver hands every getaddrinfo to a thread pool; c-ares resolves
# asynchronously on the event loop (measured: a burst of new upstream connections).
# gevent's own variable, not a Tally setting: an operator's GEVENT_RESOLVER wins.
os.environ.setdefault("GEVENT_RESOLVER", "ares")


def on_starting(server):
    """Before any worker forks: answers leave with their head and first body bytes in one
    send (tally/runtime/serving.py; on a gunicorn it supports, else one log line)."""
    from tally.runtime.serving import install

    install(server.log)


def when_ready(server):
    """Start the usage writer process before the first worker: the workers send it their
    usage rows (tally/usage/writer/process.py). Without TALLY_RATELIMIT_STORAGE_URI,
    also make the file every worker counts limits in (tally/limits/storage/lmdb_file.py)."""
    if not tally_settings.ratelimit_storage_uri:
        from tally.limits.storage.counter_file import create

        server.tally_limits_db = create()
        export_limits_db(server.tally_limits_db)
    if tally_settings.usage_writes == "inline":
        return  # every row is written before its answer ends: nothing to hand over
    from tally.usage.writer.supervisor import start

    # the writer process, its reconciler correcting the limits' counters too
    server.tally_usage_writer = start(cwd=server.cfg.chdir, module="tally.runtime.writer")


def on_exit(server):
    """After the last worker: the usage writer process writes what it holds and stops."""
    writer = getattr(server, "tally_usage_writer", None)
    if writer is not None:
        writer.stop()
    limits_db = getattr(server, "tally_limits_db", None)
    if limits_db is not None:
        from tally.limits.storage.counter_file import remove

        remove(limits_db)
    shutil.rmtree(tally_metrics_dir, ignore_errors=True)


def child_exit(server, worker):
    """A worker has exited: its live-gauge files go (counters and histograms stay summed,
    so nothing counted is lost when a worker is restarted)."""
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid, tally_metrics_dir)


def post_worker_init(worker):
    """Move everything the app built at start-up out of the garbage collector's sight:
    a full collection then walks only what requests made, not the app itself."""
    gc.collect()
    gc.freeze()


def worker_exit(server, worker):
    """Hand over (or write) the usage rows still queued before the worker process ends,
    and export the spans it still holds (traces on: tally/traces/)."""
    app = getattr(worker, "wsgi", None)
    runtime = getattr(app, "extensions", {}).get("tally") if app is not None else None
    if runtime is not None:
        runtime.usage.close()
        if runtime.pipeline.tracer is not None:
            runtime.pipeline.tracer.close()
