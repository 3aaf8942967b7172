"""The load generators: wrk for non-streaming requests, the asyncio SSE client for streams,
and a short-request probe run from another process while many streams are open. Each
can aim at chat completions, the Responses API or (non-streaming only) embeddings."""

from __future__ import annotations

import asyncio
import json
import os
import re
import statistics
import subprocess
import sys

from bench.sse_client import stream_once, streams_on_one_connection
from bench.targets import HOST, ROOT, Target

PATHS = {
    "chat": "/v1/chat/completions",
    "responses": "/v1/responses",
    "embeddings": "/v1/embeddings",
}
PROBE = """
import http.client, json, sys, time
port, key, n, gap = int(sys.argv[1]), sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
path, body = sys.argv[5], sys.argv[6]
out = []
for _ in range(n):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    t = time.perf_counter()
    try:
        conn.request("POST", path, body,
                      {"Authorization": "Bearer " + key, "Content-Type": "application/json"})
        status = conn.getresponse().status
    except OSError:
        status = 0
    out.append([status, (time.perf_counter() - t) * 1000])
    conn.close()
    time.sleep(gap)
print(json.dumps(out))
"""


_UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0}


def _ms(text: str) -> float:
    number, unit = re.fullmatch(r"([\d.]+)(us|ms|s)", text).groups()
    return float(number) * _UNITS[unit]


def wrk(target: Target, connections: int, seconds: float, endpoint: str = "chat") -> dict:
    """One wrk run on ``endpoint`` (chat, responses, embeddings): latency percentiles (ms),
    requests/s, errors, answers, CPU per answer (every process of the target)."""
    env = {**os.environ, "TALLY_BENCH_KEY": target.key or "", "TALLY_BENCH_ENDPOINT": endpoint}
    cmd = ["wrk", f"-t{min(2, connections)}", f"-c{connections}", f"-d{seconds}s", "--latency"]
    cmd += ["-s", str(ROOT / "bench/chat.lua"), target.url(PATHS[endpoint])]
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


def every_user(target: Target, users: int, endpoint: str = "chat", clients: int = 16) -> int:
    """One request for each of ``users`` end users (``user-1``…, as bench/chat.lua names
    them), ``clients`` at a time on keep-alive connections: every user's limit counters
    made once, so later loads measure the steady state. The answers that were 200."""
    import http.client
    from concurrent.futures import ThreadPoolExecutor

    payload = (
        {"input": "Say hello in five words."}
        if endpoint != "chat"
        else {"messages": [{"role": "user", "content": "Say hello in five words."}]}
    )
    headers = {"Authorization": f"Bearer {target.key}", "Content-Type": "application/json"}

    def send(first: int) -> int:
        conn, ok = http.client.HTTPConnection(HOST, target.port, timeout=30), 0
        for user in range(first, users + 1, clients):
            body = json.dumps({"model": "bench/mock", "user": f"user-{user}", **payload})
            conn.request("POST", PATHS[endpoint], body, headers)
            response = conn.getresponse()
            response.read()
            ok += response.status == 200
        conn.close()
        return ok

    with ThreadPoolExecutor(clients) as pool:
        return sum(pool.map(send, range(1, clients + 1)))


def run_async(coroutine):
    """asyncio.run on uvloop when installed: the load generator must cost little CPU."""
    try:
        import uvloop

        return uvloop.run(coroutine)
    except ImportError:
        return asyncio.run(coroutine)


def request_body(endpoint: str, user: str, text: str = "Say hello in five words.", **extra):
    """A request body for ``endpoint`` (chat, responses, embeddings) for end user ``user``."""
    body = {"model": "bench/mock", "user": user, **extra}
    if endpoint == "chat":
        body["messages"] = [{"role": "user", "content": text}]
    else:
        body["input"] = text
    return body


def stream_body(tokens: int, delay: float, user: str = "user-7", endpoint: str = "chat") -> dict:
    """A streamed chat or Responses request; the mock reads bench_tokens and bench_delay."""
    return request_body(
        endpoint, user, "Count slowly.", stream=True, bench_tokens=tokens, bench_delay=delay
    )


def _p(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(len(values) * q))] if values else float("nan")


def sequential_streams(
    target: Target,
    count: int = 20,
    tokens: int = 10,
    delay: float = 0.02,
    keep_alive: bool = False,
    endpoint: str = "chat",
) -> dict:
    """``count`` streams one after another: TTFB p50; per-event lag p99 and max. Each on a
    new connection, or (``keep_alive``) all on one, as an SDK's pooled client sends them."""
    path = PATHS[endpoint]
    bodies = [stream_body(tokens, delay, f"user-{i % 50}", endpoint) for i in range(count)]

    async def go():
        if keep_alive:
            return await streams_on_one_connection(HOST, target.port, path, bodies, target.key)
        return [await stream_once(HOST, target.port, path, b, target.key) for b in bodies]

    results = run_async(go())
    lags = [lag for r in results for lag in r.lags_ms]
    return {
        "ttfb": statistics.median(r.ttfb_ms for r in results if r.ttfb_ms is not None),
        "lag99": _p(lags, 0.99),
        "lagmax": max(lags),
        "errors": sum(not r.ok for r in results),
        "requests": count,
    }


def many_streams(
    target: Target,
    count: int,
    tokens: int,
    delay: float = 0.1,
    endpoint: str = "chat",
    probe_endpoint: str = "chat",
) -> dict:
    """``count`` concurrent streams on ``endpoint``, and short (non-streaming) requests on
    ``probe_endpoint`` from another process meanwhile."""
    path = PATHS[endpoint]
    probe_path, probe_body = (
        PATHS[probe_endpoint],
        json.dumps(request_body(probe_endpoint, "probe", "hi")),
    )
    peak = [0.0]

    async def go():
        async def watch():
            while True:
                peak[0] = max(peak[0], target.rss_mb())
                await asyncio.sleep(0.5)

        watcher = asyncio.create_task(watch())

        async def one(index: int):
            await asyncio.sleep(index * ramp / count)  # open them over ``ramp`` seconds
            body = stream_body(tokens, delay, f"u-{index}", endpoint)
            return await stream_once(HOST, target.port, path, body, target.key)

        ramp = min(4.0, tokens * delay / 3)
        streams = asyncio.gather(*(one(i) for i in range(count)))
        await asyncio.sleep(ramp + 0.5)  # every stream under way
        argv = [str(target.port), target.key or "-", "10", "0.2", probe_path, probe_body]
        probe = await asyncio.create_subprocess_exec(
            sys.executable, "-c", PROBE, *argv, stdout=asyncio.subprocess.PIPE
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
