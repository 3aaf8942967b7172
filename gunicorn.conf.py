"""gunicorn settings for Tally (``gunicorn --config gunicorn.conf.py wsgi:app``).

Worker class: see docs/deployment.md for the measurements behind the choice.
TALLY_BIND, TALLY_WORKERS, TALLY_THREADS and TALLY_WORKER_CLASS override the defaults.
"""

import os

bind = os.environ.get("TALLY_BIND", "127.0.0.1:8000")
worker_class = os.environ.get("TALLY_WORKER_CLASS", "gthread")
workers = int(os.environ.get("TALLY_WORKERS", "2"))
threads = int(os.environ.get("TALLY_THREADS", "600"))  # gthread: one per open stream
worker_connections = 2000  # gevent: open connections per worker
backlog = 2048
timeout = 120  # a worker silent this long is restarted; streams keep it alive
graceful_timeout = 60  # on SIGTERM, in-flight streams get this long to finish
keepalive = 5
accesslog = None  # Tally writes its own JSON access log (tally.logs)
