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
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.loads import many_streams, sequential_streams, wrk  # noqa: E402
from bench.targets import HOST, ROOT, Tally, Target, free_port, stop, wait_http  # noqa: E402


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
