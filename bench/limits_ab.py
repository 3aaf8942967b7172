"""What limiting costs through the whole stack: Tally under gunicorn with limits on (the
shipped default, messages=1000 per user) and off (tier:default messages=none), A/B in
alternating rounds on the same running instance, 5,000 end users in turn.

    python bench/limits_ab.py [--rounds 3] [--seconds 5] [--redis redis://127.0.0.1:6379/14]

Targets: the default storage (the counter server) and, with --redis, Redis. A warm-up
first sends every user a request with limits on, so each counter has been rebuilt from
the request log once (that costs a database read per user the first time a storage
sees them, measured apart by bench/limits_cost.py); the rounds show the steady state.
Each round measures 1 client (p50, p99) and 32 clients (requests/s, p99, and the CPU
time Tally's processes spent per request, the counter server included) with wrk. The policy is
switched with the CLI (``flask limits set``), as an operator would; the workers use it
from their next request.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.loads import wrk  # noqa: E402
from bench.targets import HOST, ROOT, Tally, Target, free_port, stop, wait_http  # noqa: E402


def set_limits(tally: Tally, value: str) -> None:
    """``flask limits set tier:default messages=VALUE`` against the target's database."""
    cmd = [sys.executable, "-m", "flask", "--app", "app", "limits", "set", "tier:default"]
    subprocess.run(
        [*cmd, f"messages={value}"], cwd=ROOT, env=tally.env, check=True, capture_output=True
    )
    time.sleep(1.2)  # within 1 s every worker uses it; a margin for the loaded VM


def main() -> None:
    """Run the rounds and print the table."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=int, default=5)
    parser.add_argument("--redis", help="also measure with this Redis as the storage")
    args = parser.parse_args()
    args.database_url = None
    os.environ["TALLY_BENCH_USERS"] = "5000"
    workdir = Path(tempfile.mkdtemp(prefix="tally-limits-ab-"))
    mock = Target("direct", free_port())
    mock.proc = subprocess.Popen(
        [sys.executable, str(ROOT / "bench/mock_upstream.py"), "--port", str(mock.port)],
        stdout=subprocess.DEVNULL,
    )
    tallies = [Tally("default", mock.port, workdir, args, None)]
    if args.redis:
        redis = Tally("redis", mock.port, workdir, args, None)
        redis.env["TALLY_RATELIMIT_STORAGE_URI"] = args.redis
        tallies.append(redis)
    runs = {(t.name, mode): {"lat": [], "thr": []} for t in tallies for mode in ("off", "on")}
    try:
        wait_http(f"http://{HOST}:{mock.port}/v1/models")
        for tally in tallies:
            tally.start()
            warmed = 0
            while warmed < 6000:  # every user's counters rebuilt once: the steady state
                warmed += wrk(tally, 32, 5)["requests"]
        for _ in range(args.rounds):
            for tally in tallies:
                for mode, value in (("off", "none"), ("on", "1000")):
                    set_limits(tally, value)
                    runs[(tally.name, mode)]["lat"].append(wrk(tally, 1, args.seconds))
                    runs[(tally.name, mode)]["thr"].append(wrk(tally, 32, args.seconds))
    finally:
        for tally in tallies:
            stop(tally.proc)
        stop(mock.proc)
    med = statistics.median
    print(f"limits off vs on, {args.rounds} rounds of {args.seconds:g} s, 5,000 users, medians")
    header = (
        f"{'storage':10} {'limits':6} {'p50 ms':>7} {'p99 ms':>7} {'32c rps':>8} {'32c p99':>8}"
    )
    print(header + f" {'CPU ms/req':>10}")
    for tally in tallies:
        base = None
        for mode in ("off", "on"):
            r = runs[(tally.name, mode)]
            p50 = med(x["p50"] for x in r["lat"])
            p99 = med(x["p99"] for x in r["lat"])
            rps = med(x["rps"] for x in r["thr"])
            tp99 = med(x["p99"] for x in r["thr"])
            cpu = med(x["cpu_ms"] for x in r["thr"])
            errors = sum(x["errors"] for x in r["lat"] + r["thr"])
            line = f"{tally.name:10} {mode:6} {p50:7.2f} {p99:7.2f} {rps:8.0f} {tp99:8.2f}"
            line += f" {cpu:10.2f}"
            if base:
                line += f"   Δp50 {p50 - base[0]:+.2f} ms, rps {100 * (rps / base[1] - 1):+.1f} %"
            if errors:
                line += f"   errors {errors}"
            base = base or (p50, rps)
            print(line)


if __name__ == "__main__":
    main()
