"""Tally under the shipped gunicorn config (gunicorn.conf.py), as a subprocess.

This is not a loopback server of tests.helpers.loopback (an app in a thread of the test
process): it is a real master with real workers and the usage writer process, started
as production starts it, so it has its own starter.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import requests
from gunicorn import util
from gunicorn.http import wsgi
from gunicorn.workers import base

from tests.helpers.loopback import HOST, free_port
from tests.helpers.settings import HASH_KEY, SECRET_KEY

ROOT = Path(__file__).resolve().parents[2]  # the repository: gunicorn.conf.py, wsgi.py
COMMAND = [sys.executable, "-m", "gunicorn", "--config", "gunicorn.conf.py", "wsgi:app"]


def tally_env(database_url: str, **extra: str) -> dict[str, str]:
    """Tally's environment on ``database_url`` with the tests' secrets, plus ``extra``."""
    return {
        "TALLY_DATABASE_URL": database_url,
        "TALLY_HASH_KEY": HASH_KEY,
        "TALLY_SECRET_KEY": SECRET_KEY,
        **extra,
    }


def start_gunicorn(env: dict[str, str], workers: int = 1, stderr=None) -> subprocess.Popen:
    """gunicorn with gunicorn.conf.py and ``env`` (TALLY_DATABASE_URL, TALLY_UPSTREAM_URL,
    TALLY_INSTANCE_PATH …) on a free port; ``proc.url`` once /healthz answers. Its log
    goes to ``stderr`` (a file), else nowhere."""
    port = free_port()
    full = {**os.environ, **env, "TALLY_BIND": f"{HOST}:{port}"}
    full["TALLY_WORKERS"] = str(workers)
    full.pop("TALLY_USAGE_WRITES", None)  # as in production: background writes
    # what a master exports to its own children, never inherited from another
    for name in ("TALLY_USAGE_SOCKET", "TALLY_LIMITS_DB"):
        full.pop(name, None)
    proc = subprocess.Popen(
        COMMAND, cwd=ROOT, env=full, stdout=subprocess.DEVNULL, stderr=stderr or subprocess.DEVNULL
    )
    proc.url = f"http://{HOST}:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            requests.get(proc.url + "/healthz", timeout=5)
            return proc
        except requests.RequestException:
            if proc.poll() is not None or time.monotonic() > deadline:
                stop(proc)
                raise RuntimeError("gunicorn did not start") from None
            time.sleep(0.1)


def stop(proc: subprocess.Popen, timeout: float = 30) -> int:
    """SIGTERM (a graceful stop), SIGKILL if it takes longer than ``timeout``."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            return proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
    return proc.wait()


def writer_pids(master_pid: int) -> list[int]:
    """The usage writer processes among the children of gunicorn's master."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        parent = int(stat.rsplit(")", 1)[1].split()[1])
        if parent == master_pid and b"tally.runtime.writer" in cmdline:
            found.append(int(entry.name))
    return found


def keep_gunicorns_own(monkeypatch) -> None:
    """What tally.runtime.serving.install() swaps in gunicorn, put back after the test."""
    monkeypatch.setattr(wsgi, "Response", wsgi.Response)
    monkeypatch.setattr(base.Worker, "handle_error", base.Worker.handle_error)
    monkeypatch.setattr(util, "write_error", util.write_error)
