"""Tally's benchmark: the mock upstream called directly, through the floor, and through
Tally, side by side.

    python bench/run.py                         # 3 rounds per target: 3-5 minutes
    python bench/run.py --quick                 # 1 round, short runs, 300 streams: ~75 s
    python bench/run.py --worker-class both     # gevent and gthread, side by side: ~7 min
    python bench/run.py --endpoint responses    # /v1/responses instead of chat completions

It starts its own mock upstream (bench/mock_upstream.py); the floor (bench/floor.py: a bare
Flask + urllib3 gateway that checks the key, hashes ``user`` and forwards, with no
database and no logging) under gunicorn with gunicorn.conf.py's settings and server
hooks but no usage writer process (bench/floor_gunicorn.conf.py); and Tally under
gunicorn with the shipped gunicorn.conf.py, on a fresh SQLite database (or
``--database-url``). Then, for the upstream alone, the floor and Tally in front of it,
in rounds, each starting one target further than the last (direct, floor, Tally; then
floor, Tally, direct; ...), the throughput runs (2) of a round first, side by side, each
after a second's pause (the usage writers idle: a run pays for its own rows), then the
other loads target by target:

1. latency: 1 client, non-streaming (wrk -c1): p50 and p99;
2. throughput: 32 clients, non-streaming (wrk -c32): requests/s, p99, errors, and the
   CPU time the target's processes spent per request (all of them: gunicorn's master,
   its workers and, for Tally, the usage writer process);
3. streaming: 20 streams one after another (10 tokens 20 ms apart), time to the first
   content event, and how long each event takes from the upstream's write to the
   client's read (the mock stamps each event with its send time; the asyncio client,
   bench/sse_client.py, notes when it lands), each on a new connection; then 200 short
   streams back to back (3 tokens, no delay) on one keep-alive connection, as an SDK's
   pooled HTTP client sends them (and as wrk sends the non-streaming requests): the
   same first-content time, without connection set-up, on a gateway that has not just
   sat idle (on this VM a wake from idle costs each process in the path, and Tally adds
   a process to it);
4. 1,000 concurrent slow streams (a token every 100 ms for 10 s) through each target,
   opened over 4 s (250 new streams a second), and once all are open, 10 short
   requests sent from another process: errors, the target's total RSS (every process),
   the short requests' latency, each stream's time to its first token;
5. at the end, the request rows in Tally's database against the requests answered;
6. what limiting costs: two more Tallies, started fresh and alike but for their limits:
   one with the shipped default (``messages=1000`` per rolling 24 h for every user, so
   every request is admitted and counted), one with no limit (``limits set tier:default
   messages=none``). Each was sent one request per end user first (so each user's
   counters exist: the steady state); after the rounds, the two take loads 1 and 2 back
   to back in ``--ab-pairs`` pairs (default 4 × rounds), each pair in turn first (ABBA:
   drift cancels out), with a pause before each run so the usage writers are idle. The
   table's last lines give the median of each and the median of the pairs' differences
   (on this VM one run differs from the next by up to ±10 %: a pair's two runs are
   seconds apart, so their ratio is what to read). Their storage is the default (the
   instance's ``tally+lmdb://`` file) unless ``--ratelimit-storage`` names one, e.g.
   ``redis://127.0.0.1:6379/14``, for both. ``--limits daily_tokens=1000000000
   daily_budget=1000000`` adds limits to the limits-on Tally's default tier (large
   enough never to refuse): then every call also reserves and settles its tokens and
   cost.

``--endpoint`` picks what the non-streaming loads (wrk, the short requests) ask for, on
every target: chat completions (default), ``/v1/responses`` or ``/v1/embeddings``. The
streams go to ``/v1/responses`` with ``responses`` and to chat completions otherwise
(embeddings do not stream). ``--worker-class both`` runs a floor and a Tally of each.

Load generators: wrk (Debian package ``wrk``, Lua script bench/chat.lua, 5,000 end users
in turn, so the limits' counters are not all hot) for non-streaming; the asyncio client
(on uvloop) for streams. The table
(bench/table.py) has the median of the rounds for each target, Tally minus direct,
Tally / direct, and Tally / floor (its floor: the one with its worker class; the median
of the rounds' own ratios, as ``--max-cpu-ratio`` reads it: one round's runs are close in
time, and from one minute to the next these VMs drift by up to 2×). Only 127.0.0.1.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.loads import PATHS, every_user, many_streams, sequential_streams, wrk  # noqa: E402
from bench.table import Table  # noqa: E402
from bench.targets import HOST, ROOT, Floor, Tally, Target, free_port, stop, wait_http  # noqa: E402

USERS = 5000  # end users the non-streaming loads rotate through (bench/chat.lua)


def main() -> None:
    """Run every load on every target (direct, the floor, Tally) and print the table."""
    args = parse_args()
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is missing: apt-get install -y wrk")
    if args.worker_class == "both" and args.database_url:
        raise SystemExit("--worker-class both needs its own SQLite databases")
    rounds = args.rounds or (1 if args.quick else 3)
    seconds = 3 if args.quick else 5
    streams = args.streams or (300 if args.quick else 1000)
    slow_tokens = 30 if args.quick else 100
    classes = ["gevent", "gthread"] if args.worker_class == "both" else [args.worker_class]
    streamed = "responses" if args.endpoint == "responses" else "chat"  # embeddings: no streams

    workdir = Path(tempfile.mkdtemp(prefix="tally-bench-"))
    mock = Target("direct", free_port())
    mock.proc = subprocess.Popen(
        [sys.executable, str(ROOT / "bench/mock_upstream.py"), "--port", str(mock.port)],
        stdout=subprocess.DEVNULL,
    )
    floors = {wc: Floor(f"floor-{wc}" if wc else "floor", mock.port, workdir, wc) for wc in classes}
    os.environ["TALLY_BENCH_USERS"] = str(USERS)
    tallies = [
        Tally(f"tally-{wc}" if wc else "tally", mock.port, workdir, args, wc) for wc in classes
    ]
    limited = Tally("tally-limits-on", mock.port, workdir, args, classes[0])
    unlimited = Tally("tally-limits-off", mock.port, workdir, args, classes[0])
    for tally in (*tallies, limited, unlimited):
        if args.ratelimit_storage:
            tally.env["TALLY_RATELIMIT_STORAGE_URI"] = args.ratelimit_storage
    if args.compare_tree:
        name = f"tally-{Path(args.compare_tree).name}"
        tallies.append(Tally(name, mock.port, workdir, args, classes[0], args.compare_tree))
    pairs = [(tally.name, floors[tally.worker_class].name) for tally in tallies]
    gateways = [*floors.values(), *tallies]
    targets = [mock, *gateways]
    runs = {t.name: {"lat": [], "thr": [], "str": [], "b2b": []} for t in targets}
    slow, rows = {}, {}
    try:
        wait_http(f"http://{HOST}:{mock.port}/v1/models")
        for runtime in [*gateways, limited, unlimited]:
            runtime.start()
        unlimited.cli("limits", "set", "tier:default", "messages=none")
        if args.limits:  # e.g. a token limit and a budget besides the message quota
            limited.cli("limits", "set", "tier:default", *args.limits)
        warmed = {}  # every user's counters made once: the steady state
        for tally in (*tallies, limited, unlimited):  # the compared tree too: a fair start
            warmed[tally.name] = every_user(tally, USERS, args.endpoint)
        for index in range(rounds):
            # direct, floor, Tally, then floor, Tally, direct...: each round starts one
            # target further, so no target is always measured after the same one
            shift = index % len(targets)
            order = targets[shift:] + targets[:shift]
            # the throughput runs side by side, seconds apart: a round's ratio of Tally
            # to its floor is not a minute's drift of the machine (bench/table.py)
            for target in order:
                time.sleep(1)  # the usage writers idle: each run pays for its own rows
                runs[target.name]["thr"].append(wrk(target, 32, seconds, args.endpoint))
            for target in order:
                run = runs[target.name]
                run["lat"].append(wrk(target, 1, seconds, args.endpoint))
                run["str"].append(sequential_streams(target, endpoint=streamed))
                run["b2b"].append(sequential_streams(target, 200, 3, 0.0, True, streamed))
        limits_ab(limited, unlimited, args.ab_pairs or 4 * rounds, 3, args.endpoint)
        for target in targets:
            slow[target.name] = many_streams(
                target, streams, slow_tokens, endpoint=streamed, probe_endpoint=args.endpoint
            )
        for tally in tallies:
            answered = sum(r["requests"] for kind in runs[tally.name].values() for r in kind)
            answered += warmed.get(tally.name, 0)
            rows[tally.name] = (tally.rows(), answered + slow[tally.name]["requests"])
    finally:
        for runtime in [*gateways, limited, unlimited]:
            stop(runtime.proc)
        stop(mock.proc)
        if args.database_url is None:
            shutil.rmtree(workdir, ignore_errors=True)
    head(args, rounds, streamed)
    table = Table(list(floors.values()), pairs, runs, slow)
    table.print(streams, slow_tokens)
    policy = " ".join(args.limits or ["messages=1000"])
    table.limits_cost(limited, unlimited, args.ratelimit_storage or "default", policy)
    for name, (written, answered) in rows.items():
        print(
            f"\n{name}: {written} request rows written for {answered} answers "
            f"(wrk abandons up to its connection count in flight at its deadline; "
            f"Tally still answers and records those)"
        )
    if args.max_cpu_ratio is not None:
        sys.exit(hold_the_line(table.cpu_ratios(), args.max_cpu_ratio))


def hold_the_line(ratios: dict[str, float], threshold: float) -> int:
    """Exit status 1, with one line each, when a Tally's CPU per request over its floor's
    (32 clients, this run) is above ``threshold``; 0 otherwise."""
    over = {name: value for name, value in ratios.items() if value > threshold}
    for name, value in ratios.items():
        verdict = "over" if name in over else "within"
        print(f"\n{name}: CPU per request {value:.2f}× its floor's, {verdict} {threshold:.2f}×")
    return 1 if over else 0


def limits_ab(limited: Tally, unlimited: Tally, pairs: int, seconds: int, endpoint: str) -> None:
    """Limits on and off, the non-streaming loads only, back to back in ``pairs`` pairs,
    each pair in turn first (ABBA: drift cancels out), after a pause that lets the usage
    writers finish the rows of what ran before; into ``limited.ab`` and
    ``unlimited.ab``, run i of one paired with run i of the other."""
    limited.ab, unlimited.ab = {"lat": [], "thr": []}, {"lat": [], "thr": []}
    for index in range(pairs):
        for tally in (limited, unlimited)[:: -1 if index % 2 else 1]:
            time.sleep(2)
            tally.ab["lat"].append(wrk(tally, 1, seconds, endpoint))
            tally.ab["thr"].append(wrk(tally, 32, seconds, endpoint))


def parse_args() -> argparse.Namespace:
    """The command line."""
    parser = argparse.ArgumentParser(description="Tally vs the floor vs the mock upstream")
    parser.add_argument("--quick", action="store_true", help="1 round, short runs")
    parser.add_argument("--rounds", type=int, help="rounds per target (default 3, quick 1)")
    parser.add_argument("--database-url", help="Tally's database (default: fresh SQLite)")
    parser.add_argument(
        "--worker-class",
        choices=["gevent", "gthread", "both"],
        help="default: as gunicorn.conf.py ships; both: one Tally (and floor) of each",
    )
    parser.add_argument(
        "--endpoint",
        choices=sorted(PATHS),
        default="chat",
        help="what the wrk loads and the short requests ask for (default chat); streams "
        "use /v1/responses with responses, /v1/chat/completions otherwise",
    )
    parser.add_argument("--streams", type=int, help="concurrent slow streams (default 1000)")
    parser.add_argument(
        "--ratelimit-storage",
        metavar="URI",
        help="TALLY_RATELIMIT_STORAGE_URI for both Tallies (default: the instance's file)",
    )
    parser.add_argument(
        "--limits",
        nargs="+",
        metavar="FIELD=VALUE",
        help="the limits-on Tally's tier:default besides the shipped messages=1000, e.g. "
        "daily_tokens=1000000000 daily_budget=1000000 (reservations on every call)",
    )
    parser.add_argument(
        "--ab-pairs",
        type=int,
        metavar="N",
        help="limits on/off pairs of 3 s runs (default 4 × rounds)",
    )
    parser.add_argument(
        "--max-cpu-ratio",
        type=float,
        metavar="R",
        help="exit 1 when a Tally's CPU per request (32 clients) is over R times its "
        "floor's in this run (for CI or a reviewer to hold the line; e.g. 1.6)",
    )
    parser.add_argument(
        "--compare-tree",
        metavar="PATH",
        help="also run Tally from another checkout (e.g. a git worktree with a patch applied)",
    )
    return parser.parse_args()


def head(args: argparse.Namespace, rounds: int, streamed: str) -> None:
    """The lines above the table: when, on what, how."""
    print(f"\n# Tally benchmark, {datetime.now(UTC):%Y-%m-%d %H:%M} UTC\n")
    print(f"- machine: {os.cpu_count()} cores, {cpu_model()}, Linux {platform.release()}")
    database = "as given" if args.database_url else "SQLite"
    print(f"- Python {platform.python_version()}; database: {database}")
    command = " ".join(["python bench/run.py", *sys.argv[1:]])
    print(f"- rounds: {rounds} (median shown); command: `{command}`")
    print(f"- requests: {PATHS[args.endpoint]}; streams: {PATHS[streamed]}")
    print(
        "- added: Tally − direct; ratio: Tally / direct; / floor: Tally / the floor "
        "(bench/floor.py, a bare Flask + urllib3 gateway under the same gunicorn settings); "
        "CPU: every process of the target (Tally: master, workers, usage writer process)"
    )
    print()


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
