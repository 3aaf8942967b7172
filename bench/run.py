"""Tally's benchmark: the mock upstream called directly vs through Tally, side by side.

    python bench/run.py            # full: 3 rounds per target, about 5 minutes
    python bench/run.py --quick    # 1 round, short runs, fewer streams: about a minute

It starts its own mock upstream (bench/mock_upstream.py) and Tally under gunicorn with the
shipped gunicorn.conf.py, on a fresh SQLite database (or ``--database-url``), then:

1. latency: 1 client, non-streaming (wrk -c1), p50 and p99;
2. throughput: 32 clients, non-streaming (wrk -c32), requests/s, p99, errors;
3. streaming: sequential streams, time to first content byte and the time each event
   spends between the upstream's write and the client's read (Python client,
   bench/sse_client.py: the mock stamps each event with its send time);
4. 1,000 concurrent slow streams (a token every 100 ms for 10 s) through one Tally,
   with short requests sent meanwhile from another process; errors, Tally's total RSS
   (master and workers), the short requests' latency;
5. after each, the request rows in Tally's database against the requests answered.

Load generators: wrk (Debian package ``wrk``, Lua script bench/chat.lua) for
non-streaming; the asyncio client for streams. Medians over the rounds are printed,
with the added latency (Tally minus direct) and ratios. Only 127.0.0.1 is used.
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

from bench.sse_client import stream_once  # noqa: E402

HOST = "127.0.0.1"
CHAT = "/v1/chat/completions"
PROBE = """
import http.client, json, sys, time
port, key, n, gap = int(sys.argv[1]), sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
body = json.dumps({"model": "bench/mock", "user": "probe",
                   "messages": [{"role": "user", "content": "hi"}]})
out = []
for _ in range(n):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    t = time.perf_counter()
    conn.request("POST", "/v1/chat/completions", body,
                  {"Authorization": "Bearer " + key, "Content-Type": "application/json"})
    status = conn.getresponse().status
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
            urllib.request.urlopen(url, timeout=1).read()
            return
        except OSError:
            time.sleep(0.1)
    raise SystemExit(f"{url} did not come up")


class Stack:
    """The mock upstream and one Tally (gunicorn) in front of it."""

    def __init__(self, args):
        self.args = args
        self.tmp = Path(tempfile.mkdtemp(prefix="tally-bench-"))
        self.mock_port, self.tally_port = free_port(), free_port()
        self.database_url = args.database_url or f"sqlite:///{self.tmp / 'tally.db'}"
        self.env = {
            **os.environ,
            "TALLY_DATABASE_URL": self.database_url,
            "TALLY_UPSTREAM_URL": f"http://{HOST}:{self.mock_port}/v1",
            "TALLY_UPSTREAM_API_KEY": "sk-bench-upstream",
            "TALLY_BIND": f"{HOST}:{self.tally_port}",
            "TALLY_LOG_FORMAT": "json",
        }
        if args.worker_class:
            self.env["TALLY_WORKER_CLASS"] = args.worker_class
        self.procs: list[subprocess.Popen] = []

    def start(self) -> None:
        """Mock upstream, migrations, an API key, then gunicorn."""
        python = sys.executable
        self.procs.append(
            subprocess.Popen(
                [python, str(ROOT / "bench/mock_upstream.py"), "--port", str(self.mock_port)],
                stdout=subprocess.DEVNULL,
            )
        )
        flask = [python, "-m", "flask", "--app", "app"]
        run = {"cwd": ROOT, "env": self.env, "check": True}
        subprocess.run([*flask, "db", "upgrade"], capture_output=True, **run)
        create = [*flask, "keys", "create", f"bench-{os.getpid()}"]
        out = subprocess.run(create, capture_output=True, text=True, **run)
        self.key = out.stdout.strip().splitlines()[-1]
        self.log = open(self.tmp / "gunicorn.log", "w")  # noqa: SIM115 - closed in stop()
        self.gunicorn = subprocess.Popen(
            [python, "-m", "gunicorn", "--config", "gunicorn.conf.py", "wsgi:app"],
            cwd=ROOT,
            env=self.env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        self.procs.append(self.gunicorn)
        wait_http(f"http://{HOST}:{self.tally_port}/healthz")
        wait_http(f"http://{HOST}:{self.mock_port}/v1/models")

    def url(self, target: str) -> str:
        """The chat URL of ``direct`` (the mock) or ``tally``."""
        port = self.mock_port if target == "direct" else self.tally_port
        return f"http://{HOST}:{port}{CHAT}"

    def rows(self) -> int:
        """Request rows in Tally's database, once the background writers have caught up."""
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
                elif time.monotonic() - stable_since > 1.0:
                    return count
                time.sleep(0.2)
        finally:
            engine.dispose()

    def rss_mb(self) -> float:
        """Resident memory of gunicorn's master and workers, summed."""
        pids = [self.gunicorn.pid]
        for status in Path("/proc").glob("[0-9]*/stat"):
            try:
                fields = status.read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == self.gunicorn.pid:
                pids.append(int(status.parent.name))
        total = 0
        for pid in pids:
            try:
                for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1])
            except OSError:
                pass
        return total / 1024

    def stop(self) -> None:
        """Stop everything this run started."""
        for proc in reversed(self.procs):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs:
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
        if getattr(self, "log", None):
            self.log.close()
        if self.args.database_url is None:
            shutil.rmtree(self.tmp, ignore_errors=True)


# --- load generators --------------------------------------------------------------

_UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0}


def _ms(text: str) -> float:
    number, unit = re.fullmatch(r"([\d.]+)(us|ms|s)", text).groups()
    return float(number) * _UNITS[unit]


def wrk(url: str, connections: int, seconds: float, key: str | None) -> dict:
    """One wrk run; latency percentiles in ms, requests/s, errors, requests answered."""
    env = {**os.environ, "TALLY_BENCH_KEY": key or ""}
    threads = min(2, connections)
    cmd = ["wrk", f"-t{threads}", f"-c{connections}", f"-d{seconds}s", "--latency"]
    cmd += ["-s", str(ROOT / "bench/chat.lua"), url]
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, check=True).stdout
    percent = dict(re.findall(r"^\s+(50|99)%\s+(\S+)", out, re.M))
    errors = sum(int(n) for n in re.findall(r"(?:connect|read|write|timeout) (\d+)", out))
    errors += int((re.search(r"Non-2xx or 3xx responses: (\d+)", out) or [0, 0])[1])
    return {
        "p50": _ms(percent["50"]),
        "p99": _ms(percent["99"]),
        "rps": float(re.search(r"Requests/sec:\s+([\d.]+)", out)[1]),
        "requests": int(re.search(r"(\d+) requests in", out)[1]),
        "errors": errors,
    }


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


def run_async(coroutine):
    """asyncio.run on uvloop when installed: the load generator must cost little CPU."""
    try:
        import uvloop

        return uvloop.run(coroutine)
    except ImportError:
        return asyncio.run(coroutine)


def sequential_streams(port: int, key: str | None, count: int, tokens: int, delay: float):
    """``count`` streams one after another: TTFB p50 and per-event lag p50/p99/max."""

    async def go():
        results = []
        for index in range(count):
            body = stream_body(tokens, delay, user=f"user-{index % 50}")
            results.append(await stream_once(HOST, port, CHAT, body, key))
        return results

    results = run_async(go())
    lags = sorted(lag for r in results for lag in r.lags_ms)
    return {
        "ttfb": statistics.median(r.ttfb_ms for r in results if r.ttfb_ms is not None),
        "lag50": lags[len(lags) // 2],
        "lag99": lags[int(len(lags) * 0.99)],
        "lagmax": lags[-1],
        "errors": sum(not r.ok for r in results),
        "requests": count,
    }


def many_streams(stack: Stack, port: int, key, count: int, tokens: int, delay: float) -> dict:
    """``count`` concurrent streams to ``port``, short requests probing meanwhile."""
    peak = [0.0]

    async def go():
        async def watch():
            while True:
                peak[0] = max(peak[0], stack.rss_mb())
                await asyncio.sleep(0.5)

        watcher = asyncio.create_task(watch())
        tasks = [
            stream_once(HOST, port, CHAT, stream_body(tokens, delay, f"user-{i}"), key)
            for i in range(count)
        ]
        gathered = asyncio.gather(*tasks)
        await asyncio.sleep(min(3.0, tokens * delay / 3))  # every stream under way
        probe = await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            PROBE,
            str(port),
            key or "-",
            "10",
            "0.2",
            stdout=asyncio.subprocess.PIPE,
        )
        probe_out, _ = await probe.communicate()
        results = await gathered
        watcher.cancel()
        return results, json.loads(probe_out)

    results, probes = run_async(go())
    latencies = sorted(ms for status, ms in probes)
    return {
        "errors": sum(not r.ok for r in results),
        "probe_errors": sum(status != 200 for status, ms in probes),
        "probe50": latencies[len(latencies) // 2],
        "probemax": latencies[-1],
        "rss": peak[0],
        "requests": count + len(probes),
        "lag99": sorted(lag for r in results for lag in r.lags_ms)[
            int(sum(len(r.lags_ms) for r in results) * 0.99)
        ],
    }


# --- the run ----------------------------------------------------------------------


def median(runs: list[dict], field: str) -> float:
    """The median of ``field`` over rounds."""
    return statistics.median(run[field] for run in runs)


def main() -> None:
    """Run every target, direct and through Tally, and print the table."""
    parser = argparse.ArgumentParser(description="Tally vs the mock upstream called directly")
    parser.add_argument("--quick", action="store_true", help="1 round, short runs")
    parser.add_argument("--rounds", type=int, help="rounds per target (default 3, quick 1)")
    parser.add_argument("--database-url", help="Tally's database (default: fresh SQLite)")
    parser.add_argument("--worker-class", choices=["gthread", "gevent"], help="override")
    parser.add_argument("--streams", type=int, help="concurrent slow streams (default 1000)")
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is missing: apt-get install -y wrk")
    rounds = args.rounds or (1 if args.quick else 3)
    seconds = 3 if args.quick else 5
    streams = args.streams or (300 if args.quick else 1000)
    slow_tokens = 30 if args.quick else 100

    stack = Stack(args)
    rows_expected = 0
    try:
        stack.start()
        results: dict[str, dict[str, list]] = {}
        for _ in range(rounds):
            for target in ("direct", "tally"):
                key = stack.key if target == "tally" else None
                port = stack.mock_port if target == "direct" else stack.tally_port
                runs = results.setdefault(target, {"lat": [], "thr": [], "str": []})
                runs["lat"].append(wrk(stack.url(target), 1, seconds, key))
                runs["thr"].append(wrk(stack.url(target), 32, seconds, key))
                runs["str"].append(sequential_streams(port, key, 20, 10, 0.02))
                if target == "tally":
                    rows_expected += sum(runs[k][-1]["requests"] for k in ("lat", "thr", "str"))
        rows_after_fast = stack.rows()
        slow_direct = many_streams(stack, stack.mock_port, None, streams, slow_tokens, 0.1)
        slow = many_streams(stack, stack.tally_port, stack.key, streams, slow_tokens, 0.1)
        rows_expected_slow = rows_after_fast + slow["requests"]
        rows_final = stack.rows()
    finally:
        stack.stop()

    d, t = results["direct"], results["tally"]
    print()
    print(f"# Tally benchmark, {datetime.now(UTC):%Y-%m-%d %H:%M} UTC")
    print(f"machine: {os.cpu_count()} cores, {cpu_model()}, Python {platform.python_version()}")
    print(
        f"worker class: {args.worker_class or 'as shipped'}; rounds: {rounds}; db: "
        f"{'SQLite' if args.database_url is None else 'given URL'}"
    )
    print()
    print("| target | direct | Tally | added | ratio | goal |")
    print("|---|---|---|---|---|---|")
    row("1 client p50 (ms)", median(d["lat"], "p50"), median(t["lat"], "p50"), "added ≤ 1.5")
    row("1 client p99 (ms)", median(d["lat"], "p99"), median(t["lat"], "p99"), "added ≤ 4")
    row("32 clients req/s", median(d["thr"], "rps"), median(t["thr"], "rps"), "≥ 1000", 0)
    row("32 clients p99 (ms)", median(d["thr"], "p99"), median(t["thr"], "p99"), "≤ 100")
    errs = sum(r["errors"] for r in t["thr"])
    print(f"| 32 clients errors | {sum(r['errors'] for r in d['thr'])} | {errs} | | | 0 |")
    row("stream TTFB p50 (ms)", median(d["str"], "ttfb"), median(t["str"], "ttfb"), "added ≤ 2")
    row("event lag p99 (ms)", median(d["str"], "lag99"), median(t["str"], "lag99"), "≤ 5")
    row("event lag max (ms)", median(d["str"], "lagmax"), median(t["str"], "lagmax"), "")
    sd, s = slow_direct, slow
    print(f"| {streams} slow streams: errors | {sd['errors']} | {s['errors']} | | | 0 |")
    print(f"| {streams} slow streams: Tally RSS (MB) | | {s['rss']:.0f} | | | < 600 |")
    row(f"{streams} slow streams: event lag p99 (ms)", sd["lag99"], s["lag99"], "")
    row("short request meanwhile p50 (ms)", sd["probe50"], s["probe50"], "")
    row("short request meanwhile max (ms)", sd["probemax"], s["probemax"], "< 100")
    print(f"| short requests meanwhile: errors | {sd['probe_errors']} | {s['probe_errors']} |||0|")
    print(
        f"| request rows written | | {rows_final} | | | {rows_expected_slow} answered, "
        f"+ up to 32 per wrk run cut at its deadline |"
    )
    print(f"\n(rows after the fast targets: {rows_after_fast} for {rows_expected} answered)")


def row(name: str, direct: float, tally: float, goal: str, digits: int = 2) -> None:
    """One table line: direct, Tally, Tally minus direct, Tally / direct."""
    added = tally - direct
    ratio = tally / direct if direct else float("nan")
    fmt = f"{{:.{digits}f}}"
    print(
        f"| {name} | {fmt.format(direct)} | {fmt.format(tally)} | {fmt.format(added)} | "
        f"{ratio:.2f}× | {goal} |"
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
