"""The usage writer process as gunicorn's master sees it (tally/usage/writer/process.py
is the process itself): started before the first worker, its socket exported to the
workers, watched and started again when it dies, stopped after the last worker."""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time

from tally.settings import default_instance_path, export_usage_socket

log = logging.getLogger("tally.usage.writer.process")  # the name its lines always had


class WriterProcess:
    """The writer process as gunicorn's master sees it: started, watched, started again
    at the same socket path if it dies (the workers reconnect on their own), stopped."""

    RESTART_DELAY = 0.5  # seconds between a death and the next start: no busy loop

    def __init__(
        self, directory: str, instance_path: str, cwd: str | None = None, module: str = ""
    ):
        self.directory, self.instance_path, self.cwd = directory, instance_path, cwd
        self.module = module or "tally.usage.writer.process"  # run as python -m MODULE
        self.path = os.path.join(directory, "usage.sock")
        self._stopping = threading.Event()
        self.proc = self._spawn()

    def wait_ready(self, timeout: float) -> bool:
        """Whether the process listens on its socket within ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while not os.path.exists(self.path):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                return False
            time.sleep(0.05)
        return True

    def supervise(self) -> None:
        """Watch the process from a thread of the master; start it again when it dies."""
        threading.Thread(target=self._watch, name="tally-writer-watch", daemon=True).start()

    def stop(self, timeout: float = 60.0) -> None:
        """SIGTERM, wait for the queue to be written, then clean up."""
        self._stopping.set()
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                log.error("usage writer process did not stop in %ss; killed", timeout)
                self.proc.kill()
                self.proc.wait()
        shutil.rmtree(self.directory, ignore_errors=True)

    def _spawn(self) -> subprocess.Popen:
        os.makedirs(self.directory, mode=0o700, exist_ok=True)
        if os.path.exists(self.path):  # a killed process's socket: bind would fail
            os.unlink(self.path)
        return subprocess.Popen(
            [sys.executable, "-m", self.module, self.path, self.instance_path],
            cwd=self.cwd,
        )

    def _watch(self) -> None:
        while not self._stopping.is_set():
            code = self.proc.wait()
            if self._stopping.wait(self.RESTART_DELAY):
                return
            log.error("usage writer process exited (%s); starting it again", code)
            self.proc = self._spawn()
            if not self.wait_ready(30.0):
                log.error("usage writer process did not come back; workers write their rows")


def start(
    cwd: str | None = None,
    instance_path: str | None = None,
    timeout: float = 30.0,
    module: str = "",
) -> WriterProcess | None:
    """Start the writer process, watched and restarted when it dies, and export its
    socket to the workers forked after this (``TALLY_USAGE_SOCKET``, see
    :func:`tally.settings.export_usage_socket`). None, with an error logged, when it does
    not come up: the workers then write their own rows."""
    directory = tempfile.mkdtemp(prefix="tally-usage-")  # mode 0700
    writer = WriterProcess(directory, instance_path or default_instance_path(), cwd, module)
    if not writer.wait_ready(timeout):
        log.error("usage writer process did not start; workers write their own rows")
        writer.stop(timeout=5)
        return None
    writer.supervise()
    export_usage_socket(writer.path)
    return writer
