"""gunicorn settings for Tally (``gunicorn --config gunicorn.conf.py wsgi:app``).

Streams hold a worker thread for their whole length, so workers are threaded (gthread).
TALLY_BIND, TALLY_WORKERS and TALLY_THREADS override the defaults below.
"""

import os

bind = os.environ.get("TALLY_BIND", "127.0.0.1:8000")
workers = int(os.environ.get("TALLY_WORKERS", "2"))
worker_class = "gthread"
threads = int(os.environ.get("TALLY_THREADS", "32"))
timeout = 120  # a worker silent this long is restarted; streams keep it alive
graceful_timeout = 60  # on SIGTERM, in-flight streams get this long to finish
keepalive = 5
accesslog = "-"
