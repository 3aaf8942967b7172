"""What the benchmark measures: the mock upstream; the floor (bench/floor.py, a bare Flask
gateway under gunicorn with Tally's settings) in front of it; and Tally under gunicorn in
front of it (with its own database and API key): each as a process tree (a gunicorn
master, its workers, Tally's usage writer process) whose CPU time and memory are read."""

from __future__ import annotations

import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
HOST = "127.0.0.1"
CHAT = "/v1/chat/completions"
TICK = os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    """A port nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


def wait_http(url: str, timeout: float = 30.0) -> None:
    """Poll ``url`` until it answers."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(url, timeout=2).read()
            return
        except OSError:
            time.sleep(0.1)
    raise SystemExit(f"{url} did not come up")


class Target:
    """Something to send requests to: the mock itself, or a gateway (the floor, Tally) in
    front of it."""

    def __init__(self, name: str, port: int, key: str | None = None):
        self.name, self.port, self.key = name, port, key
        self.proc: subprocess.Popen | None = None

    def url(self, path: str = CHAT) -> str:
        """The URL of ``path`` on it (chat completions by default)."""
        return f"http://{HOST}:{self.port}{path}"

    def pids(self) -> list[int]:
        """The process and all its descendants: gunicorn's master, its workers and, for
        Tally, the usage writer process the master starts."""
        if self.proc is None:
            return []
        children: dict[int, list[int]] = {}
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                fields = stat.read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
        pids, todo = [], [self.proc.pid]
        while todo:
            pid = todo.pop()
            pids.append(pid)
            todo.extend(children.get(pid, ()))
        return pids

    def cpu_seconds(self) -> float:
        """User + system CPU time of the process and its descendants so far (each one's
        own time: a process that has ended is no longer counted)."""
        total = 0
        for pid in self.pids():
            try:
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            total += int(fields[11]) + int(fields[12])
        return total / TICK

    def rss_mb(self) -> float:
        """Resident memory of the process and its descendants, summed."""
        total = 0
        for pid in self.pids():
            try:
                for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1])
            except OSError:
                pass
        return total / 1024


class Floor(Target):
    """The floor (bench/floor.py) under gunicorn with gunicorn.conf.py's settings and server
    hooks, without the usage writer process (bench/floor_gunicorn.conf.py)."""

    def __init__(self, name: str, upstream_port: int, workdir: Path, worker_class: str | None):
        super().__init__(name, free_port(), key=f"sk-floor-{secrets.token_hex(8)}")
        self.upstream_port = upstream_port
        self.log = workdir / f"{name}.log"
        self.env = {**os.environ, "TALLY_BIND": f"{HOST}:{self.port}"}
        if worker_class:
            self.env["TALLY_WORKER_CLASS"] = worker_class

    def start(self) -> None:
        """Start gunicorn and wait for /healthz."""
        app = f"bench.floor:create_app(upstream_port={self.upstream_port}, key={self.key!r})"
        config = str(ROOT / "bench/floor_gunicorn.conf.py")
        with open(self.log, "w") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "gunicorn", "--config", config, app],
                cwd=ROOT,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        wait_http(f"http://{HOST}:{self.port}/healthz")


class Tally(Target):
    """Tally under gunicorn (gunicorn.conf.py) with its own database and API key."""

    def __init__(
        self, name, upstream_port, workdir: Path, args, worker_class, root=ROOT, app="wsgi:app"
    ):
        super().__init__(name, free_port())
        self.worker_class = worker_class
        self.app = app  # what gunicorn serves: the shipped app, or a bench's factory
        self.root = Path(root)
        files = workdir / name.replace(" ", "-")  # its database and its log
        self.database_url = args.database_url or f"sqlite:///{files}.db"
        self.log = Path(f"{files}.log")
        self.env = {
            **os.environ,
            "TALLY_DATABASE_URL": self.database_url,
            "TALLY_UPSTREAM_URL": f"http://{HOST}:{upstream_port}/v1",
            "TALLY_UPSTREAM_API_KEY": "sk-bench-upstream",
            "TALLY_BIND": f"{HOST}:{self.port}",
            "TALLY_LOG_FORMAT": "json",
        }
        if worker_class:
            self.env["TALLY_WORKER_CLASS"] = worker_class

    def start(self) -> None:
        """Migrate, mint a key, start gunicorn and wait for /healthz."""
        flask = [sys.executable, "-m", "flask", "--app", "app"]
        run = {"cwd": self.root, "env": self.env, "check": True, "capture_output": True}
        subprocess.run([*flask, "db", "upgrade"], **run)
        create = [*flask, "keys", "create", f"{self.name}-{os.getpid()}-{time.time_ns()}"]
        self.key = subprocess.run(create, text=True, **run).stdout.strip().splitlines()[-1]
        with open(self.log, "w") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "gunicorn", "--config", "gunicorn.conf.py", self.app],
                cwd=self.root,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        wait_http(f"http://{HOST}:{self.port}/healthz")

    def cli(self, *arguments: str) -> str:
        """Run ``flask --app app ARGUMENTS…`` against its database; its output."""
        command = [sys.executable, "-m", "flask", "--app", "app", *arguments]
        done = subprocess.run(
            command, cwd=self.root, env=self.env, check=True, capture_output=True, text=True
        )
        return done.stdout

    def rows(self) -> int:
        """Request rows in its database, once the background writers have caught up."""
        from sqlalchemy import create_engine, func, select

        from tally.models import RequestLog

        engine = create_engine(self.database_url)
        last, stable_since = -1, time.monotonic()
        try:
            while True:
                with engine.connect() as conn:
                    count = conn.execute(select(func.count()).select_from(RequestLog)).scalar()
                if count != last:
                    last, stable_since = count, time.monotonic()
                elif time.monotonic() - stable_since > 1.5:
                    return count
                time.sleep(0.25)
        finally:
            engine.dispose()


def mock_upstream() -> Target:
    """bench/mock_upstream.py started on a free port (the "direct" target): wait for it
    with ``wait_http(target.url("/v1/models"))``, end it with ``stop(target.proc)``."""
    mock = Target("direct", free_port())
    mock.proc = subprocess.Popen(
        [sys.executable, str(ROOT / "bench/mock_upstream.py"), "--port", str(mock.port)],
        stdout=subprocess.DEVNULL,
    )
    return mock


def worktree(ref: str, workdir: Path) -> Path:
    """``ref`` checked out (detached) under ``workdir`` (remove it with ``git worktree
    remove --force``)."""
    path = workdir / "base"
    subprocess.run(
        ["git", "worktree", "add", "--detach", str(path), ref],
        cwd=ROOT,
        check=True,
        capture_output=True,
    )
    return path


def stop(proc: subprocess.Popen | None) -> None:
    """SIGTERM (a graceful stop), then SIGKILL if it lingers."""
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
