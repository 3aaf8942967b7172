"""Tally's benchmark: the mock upstream called directly vs through Tally, side by side.

    python bench/run.py                         # 3 rounds per target: 2-3 minutes
    python bench/run.py --quick                 # 1 round, short runs, 300 streams: ~40 s
    python bench/run.py --worker-class both     # gevent and gthread, side by side: ~4 min

It starts its own mock upstream (bench/mock_upstream.py) and Tally under gunicorn with the
shipped gunicorn.conf.py, on a fresh SQLite database (or ``--database-url``), then, for
the upstream alone and for Tally in front of it, in alternating rounds:

1. latency: 1 client, non-streaming (wrk -c1): p50 and p99;
2. throughput: 32 clients, non-streaming (wrk -c32): requests/s, p99, errors, and the
   CPU time Tally's processes spent per request;
3. streaming: 20 streams one after another (10 tokens 20 ms apart), time to the first
   content event, and how long each event takes from the upstream's write to the
   client's read (the mock stamps each event with its send time; the asyncio client,
   bench/sse_client.py, notes when it lands), each on a new connection; then 200 short
   streams back to back (3 tokens, no delay) on one keep-alive connection, as an SDK's
   pooled HTTP client sends them (and as wrk sends the non-streaming requests): the
   same first-content time, without connection set-up, on a gateway that has not just
   sat idle (on this VM a wake from idle costs each process in the path, and Tally adds
   a process to it);
4. 1,000 concurrent slow streams (a token every 100 ms for 10 s) through one Tally,
   opened over 4 s (250 new streams a second), and once all are open, 10 short
   requests sent from another process: errors, Tally's total RSS (master and
   workers), the short requests' latency, each stream's time to its first token;
5. at the end, the request rows in Tally's database against the requests answered.

Load generators: wrk (Debian package ``wrk``, Lua script bench/chat.lua, 1,000 end users
in turn) for non-streaming; the asyncio client (on uvloop) for streams. The table has
the median of the rounds, Tally minus direct, and Tally / direct. Only 127.0.0.1.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.sse_client import stream_once, streams_on_one_connection  # noqa: E402

HOST = "127.0.0.1"
CHAT = "/v1/chat/completions"
TICK = os.sysconf("SC_CLK_TCK")
PROBE = """
import http.client, json, sys, time
port, key, n, gap = int(sys.argv[1]), sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
body = json.dumps({"model": "bench/mock", "user": "probe",
                   "messages": [{"role": "user", "content": "hi"}]})
out = []
for _ in range(n):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    t = time.perf_counter()
    try:
        conn.request("POST", "/v1/chat/completions", body,
                      {"Authorization": "Bearer " + key, "Content-Type": "application/json"})
        status = conn.getresponse().status
    except OSError:
        status = 0
    out.append([status, (time.perf_counter() - t) * 1000])
    conn.close()
    time.sleep(gap)
print(json.dumps(out))
"""


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
    """Something to send chat requests to: the mock itself, or a Tally in front of it."""

    def __init__(self, name: str, port: int, key: str | None = None):
        self.name, self.port, self.key = name, port, key
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        """Its chat completions URL."""
        return f"http://{HOST}:{self.port}{CHAT}"

    def pids(self) -> list[int]:
        """The process and its children (gunicorn's workers)."""
        if self.proc is None:
            return []
        pids = [self.proc.pid]
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                fields = stat.read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == self.proc.pid:
                pids.append(int(stat.parent.name))
        return pids

    def cpu_seconds(self) -> float:
        """User + system CPU time of the process and its children so far."""
        total = 0
        for pid in self.pids():
            try:
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            total += int(fields[11]) + int(fields[12])
        return total / TICK

    def rss_mb(self) -> float:
        """Resident memory of the process and its children, summed."""
        total = 0
        for pid in self.pids():
            try:
                for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1])
            except OSError:
                pass
        return total / 1024


class Tally(Target):
    """Tally under gunicorn (gunicorn.conf.py) with its own database and API key."""

    def __init__(self, name, upstream_port, workdir: Path, args, worker_class, root=ROOT):
        super().__init__(name, free_port())
        self.root = Path(root)
        self.database_url = args.database_url or f"sqlite:///{workdir / name}.db"
        self.log = workdir / f"{name}.log"
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
                [sys.executable, "-m", "gunicorn", "--config", "gunicorn.conf.py", "wsgi:app"],
                cwd=self.root,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        wait_http(f"http://{HOST}:{self.port}/healthz")

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


# --- load generators --------------------------------------------------------------

_UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0}


def _ms(text: str) -> float:
    number, unit = re.fullmatch(r"([\d.]+)(us|ms|s)", text).groups()
    return float(number) * _UNITS[unit]


def wrk(target: Target, connections: int, seconds: float) -> dict:
    """One wrk run: latency percentiles (ms), requests/s, errors, answers, CPU/request."""
    env = {**os.environ, "TALLY_BENCH_KEY": target.key or ""}
    cmd = ["wrk", f"-t{min(2, connections)}", f"-c{connections}", f"-d{seconds}s", "--latency"]
    cmd += ["-s", str(ROOT / "bench/chat.lua"), target.url]
    cpu = target.cpu_seconds()
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, check=True).stdout
    cpu = target.cpu_seconds() - cpu
    percent = dict(re.findall(r"^\s+(50|99)%\s+(\S+)", out, re.M))
    errors = sum(int(n) for n in re.findall(r"(?:connect|read|write|timeout) (\d+)", out))
    errors += int((re.search(r"Non-2xx or 3xx responses: (\d+)", out) or [0, 0])[1])
    answered = int(re.search(r"(\d+) requests in", out)[1])
    return {
        "p50": _ms(percent["50"]),
        "p99": _ms(percent["99"]),
        "rps": float(re.search(r"Requests/sec:\s+([\d.]+)", out)[1]),
        "requests": answered,
        "errors": errors,
        "cpu_ms": cpu * 1000 / answered if answered else float("nan"),
    }


def run_async(coroutine):
    """asyncio.run on uvloop when installed: the load generator must cost little CPU."""
    try:
        import uvloop

        return uvloop.run(coroutine)
    except ImportError:
        return asyncio.run(coroutine)


def stream_body(tokens: int, delay: float, user: str = "user-7") -> dict:
    """A streamed chat request; the mock reads bench_tokens and bench_delay."""
    return {
        "model": "bench/mock",
        "user": user,
        "stream": True,
        "messages": [{"role": "user", "content": "Count slowly."}],
        "bench_tokens": tokens,
        "bench_delay": delay,
    }


def _p(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(len(values) * q))] if values else float("nan")


def sequential_streams(
    target: Target, count: int = 20, tokens: int = 10, delay: float = 0.02, keep_alive=False
):
    """``count`` streams one after another: TTFB p50; per-event lag p99 and max. Each on a
    new connection, or (``keep_alive``) all on one, as an SDK's pooled client sends them."""
    bodies = [stream_body(tokens, delay, user=f"user-{index % 50}") for index in range(count)]

    async def go():
        if keep_alive:
            return await streams_on_one_connection(HOST, target.port, CHAT, bodies, target.key)
        return [await stream_once(HOST, target.port, CHAT, b, target.key) for b in bodies]

    results = run_async(go())
    lags = [lag for r in results for lag in r.lags_ms]
    return {
        "ttfb": statistics.median(r.ttfb_ms for r in results if r.ttfb_ms is not None),
        "lag99": _p(lags, 0.99),
        "lagmax": max(lags),
        "errors": sum(not r.ok for r in results),
        "requests": count,
    }


def many_streams(target: Target, count: int, tokens: int, delay: float = 0.1) -> dict:
    """``count`` concurrent streams, and short requests from another process meanwhile."""
    peak = [0.0]

    async def go():
        async def watch():
            while True:
                peak[0] = max(peak[0], target.rss_mb())
                await asyncio.sleep(0.5)

        watcher = asyncio.create_task(watch())

        async def one(index: int):
            await asyncio.sleep(index * ramp / count)  # open them over ``ramp`` seconds
            body = stream_body(tokens, delay, f"u-{index}")
            return await stream_once(HOST, target.port, CHAT, body, target.key)

        ramp = min(4.0, tokens * delay / 3)
        streams = asyncio.gather(*(one(i) for i in range(count)))
        await asyncio.sleep(ramp + 0.5)  # every stream under way
        probe = await asyncio.create_subprocess_exec(
            *[sys.executable, "-c", PROBE, str(target.port), target.key or "-", "10", "0.2"],
            stdout=asyncio.subprocess.PIPE,
        )
        probe_out, _ = await probe.communicate()
        results = await streams
        watcher.cancel()
        return results, json.loads(probe_out)

    results, probes = run_async(go())
    latencies = [ms for _status, ms in probes]
    return {
        "errors": sum(not r.ok for r in results),
        "ttfb99": _p([r.ttfb_ms for r in results if r.ttfb_ms is not None], 0.99),
        "lag99": _p([lag for r in results for lag in r.lags_ms], 0.99),
        "probe50": statistics.median(latencies),
        "probemax": max(latencies),
        "probe_errors": sum(status != 200 for status, _ms in probes),
        "rss": peak[0],
        "requests": count + len(probes),
    }


# --- the run ----------------------------------------------------------------------


def main() -> None:
    """Run every target, direct and through Tally, and print the table."""
    parser = argparse.ArgumentParser(description="Tally vs the mock upstream called directly")
    parser.add_argument("--quick", action="store_true", help="1 round, short runs")
    parser.add_argument("--rounds", type=int, help="rounds per target (default 3, quick 1)")
    parser.add_argument("--database-url", help="Tally's database (default: fresh SQLite)")
    parser.add_argument(
        "--worker-class",
        choices=["gevent", "gthread", "both"],
        help="default: as gunicorn.conf.py ships; both: one Tally of each, side by side",
    )
    parser.add_argument("--streams", type=int, help="concurrent slow streams (default 1000)")
    parser.add_argument(
        "--compare-tree",
        metavar="PATH",
        help="also run Tally from another checkout (e.g. a git worktree with a patch applied)",
    )
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is missing: apt-get install -y wrk")
    if args.worker_class == "both" and args.database_url:
        raise SystemExit("--worker-class both needs its own SQLite databases")
    rounds = args.rounds or (1 if args.quick else 3)
    seconds = 3 if args.quick else 5
    streams = args.streams or (300 if args.quick else 1000)
    slow_tokens = 30 if args.quick else 100
    classes = ["gevent", "gthread"] if args.worker_class == "both" else [args.worker_class]

    workdir = Path(tempfile.mkdtemp(prefix="tally-bench-"))
    mock = Target("direct", free_port())
    mock.proc = subprocess.Popen(
        [sys.executable, str(ROOT / "bench/mock_upstream.py"), "--port", str(mock.port)],
        stdout=subprocess.DEVNULL,
    )
    tallies = [
        Tally(f"tally-{wc}" if wc else "tally", mock.port, workdir, args, wc) for wc in classes
    ]
    if args.compare_tree:
        name = f"tally-{Path(args.compare_tree).name}"
        tallies.append(Tally(name, mock.port, workdir, args, classes[0], args.compare_tree))
    targets = [mock, *tallies]
    runs = {t.name: {"lat": [], "thr": [], "str": [], "b2b": []} for t in targets}
    slow, rows = {}, {}
    try:
        wait_http(f"http://{HOST}:{mock.port}/v1/models")
        for tally in tallies:
            tally.start()
        for _ in range(rounds):
            for target in targets:
                runs[target.name]["lat"].append(wrk(target, 1, seconds))
                runs[target.name]["thr"].append(wrk(target, 32, seconds))
                runs[target.name]["str"].append(sequential_streams(target))
                runs[target.name]["b2b"].append(sequential_streams(target, 200, 3, 0.0, True))
        for target in targets:
            slow[target.name] = many_streams(target, streams, slow_tokens)
        for tally in tallies:
            answered = sum(r["requests"] for kind in runs[tally.name].values() for r in kind)
            rows[tally.name] = (tally.rows(), answered + slow[tally.name]["requests"])
    finally:
        for tally in tallies:
            stop(tally.proc)
        stop(mock.proc)
        if args.database_url is None:
            shutil.rmtree(workdir, ignore_errors=True)
    report(args, rounds, streams, slow_tokens, targets, runs, slow, rows)


def report(args, rounds, streams, slow_tokens, targets, runs, slow, rows) -> None:
    """Print the markdown table."""
    names = [t.name for t in targets]
    tally_names = names[1:]

    def med(name, kind, field):
        return statistics.median(r[field] for r in runs[name][kind])

    print(f"\n# Tally benchmark, {datetime.now(UTC):%Y-%m-%d %H:%M} UTC\n")
    print(f"- machine: {os.cpu_count()} cores, {cpu_model()}, Linux {platform.release()}")
    database = "as given" if args.database_url else "SQLite"
    print(f"- Python {platform.python_version()}; database: {database}")
    command = " ".join(["python bench/run.py", *sys.argv[1:]])
    print(f"- rounds: {rounds} (median shown); command: `{command}`")
    print()
    head = " | ".join(f"{n} | added | ratio" for n in tally_names)
    print(f"| target | direct | {head} | goal |")
    print("|---" * (3 + 3 * len(tally_names)) + "|")

    def line(label, kind, field, goal, digits=2, added=True):
        direct = med("direct", kind, field) if kind else slow["direct"][field]
        cells = [f"{direct:.{digits}f}"]
        for name in tally_names:
            value = med(name, kind, field) if kind else slow[name][field]
            cells.append(f"{value:.{digits}f}")
            cells.append(f"{value - direct:+.{digits}f}" if added else "")
            cells.append(f"{value / direct:.2f}×" if direct else "")
        print(f"| {label} | {' | '.join(cells)} | {goal} |")

    line("1 client: p50 (ms)", "lat", "p50", "added ≤ 1.5")
    line("1 client: p99 (ms)", "lat", "p99", "added ≤ 4")
    line("32 clients: requests/s", "thr", "rps", "≥ 1000", 0, added=False)
    line("32 clients: p99 (ms)", "thr", "p99", "≤ 100")
    errors = [sum(r["errors"] for r in runs[n]["thr"]) for n in names]
    cells = [str(errors[0])] + [f"{e} | | " for e in errors[1:]]
    print(f"| 32 clients: errors, all rounds | {' | '.join(cells)} | 0 |")
    cells = [f"{med('direct', 'thr', 'cpu_ms'):.3f}"]
    cells += [f"{med(n, 'thr', 'cpu_ms'):.2f} | | " for n in tally_names]
    print(f"| 32 clients: CPU ms per request | {' | '.join(cells)} | |")
    line("stream: first content p50 (ms)", "str", "ttfb", "added ≤ 2")
    line("stream, back to back, keep-alive: first content p50 (ms)", "b2b", "ttfb", "added ≤ 2")
    line("stream: event lag p99 (ms)", "str", "lag99", "≤ 5")
    line("stream: event lag max (ms)", "str", "lagmax", "")
    failed = [sum(r["errors"] for kind in ("str", "b2b") for r in runs[n][kind]) for n in names]
    cells = [str(failed[0])] + [f"{e} | | " for e in failed[1:]]
    print(f"| streams one after another: failed, all rounds | {' | '.join(cells)} | 0 |")
    label = f"{streams} streams × {slow_tokens} tokens @100 ms"
    line(f"{label}: failed streams", None, "errors", "0", 0, added=False)
    line(f"{label}: RSS (MB)", None, "rss", "< 600", 0, added=False)
    line(f"{label}: first token p99 (ms)", None, "ttfb99", "")
    line(f"{label}: event lag p99 (ms)", None, "lag99", "")
    line("short request meanwhile: p50 (ms)", None, "probe50", "")
    line("short request meanwhile: max (ms)", None, "probemax", "< 100")
    line("short request meanwhile: errors", None, "probe_errors", "0", 0, added=False)
    for name, (written, answered) in rows.items():
        print(
            f"\n{name}: {written} request rows written for {answered} answers "
            f"(wrk abandons up to its connection count in flight at its deadline; "
            f"Tally still answers and records those)"
        )


def cpu_model() -> str:
    """The CPU's model name, as /proc/cpuinfo has it."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


if __name__ == "__main__":
    main()
