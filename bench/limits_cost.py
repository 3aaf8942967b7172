"""What limiting costs per request, storage by storage: ``admit`` (policy lookup, plan,
one admission on the storage) for 5,000 end users in turn, so counters are not all hot;
then, with a daily token limit and a daily budget besides the message limit, ``admit``
with the call's reservation and the settlement at its end (``count_usage``: the holds
released, the usage added, the model's peaks raised), the two together.

    python bench/limits_cost.py [--requests 20000] [--redis redis://127.0.0.1:6379/15]
    python bench/limits_cost.py --memory 100000   # the counter file's size per user

Storages: none (no policy applies: the cost of looking), tally+memory:// (in this
process), tally+lmdb:// (the file every worker of an instance shares under
gunicorn), and Redis when given (one Lua script per admission). Prints p50 / p99 /
mean in microseconds.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from app import create_app  # noqa: E402
from tally import schema  # noqa: E402
from tally.end_users.claims import EndUserClaim  # noqa: E402
from tally.keys.api_keys import AuthenticatedKey  # noqa: E402
from tally.limits.admission import Admission, admit, count_usage  # noqa: E402
from tally.limits.demand import Demand  # noqa: E402
from tally.limits.policy_store import set_policy  # noqa: E402
from tally.limits.runtime import make_storage  # noqa: E402
from tally.limits.storage.counter_file import create, remove  # noqa: E402
from tally.limits.storage.lmdb_file import LMDBStorage  # noqa: E402

USERS = 5000


USAGE = {"prompt_tokens": 12, "completion_tokens": 40, "total_tokens": 52, "cost": 0.00003}


def measure(flask_app, requests: int, settle: bool = False) -> list[float]:
    """Microseconds per ``admit`` call (and, with ``settle``, its reservation and the
    call's ``count_usage``), users in turn (a first pass warms every counter)."""
    limits = flask_app.extensions["tally"].limits
    key = AuthenticatedKey(1, "bench", None)
    claims = [EndUserClaim(f"user-{i}", "user") for i in range(USERS)]

    def one(index: int, claim: EndUserClaim) -> None:
        admission = Admission()
        if not settle:
            admit(limits, key, claim, admission)
            return
        demand = Demand(f"req-{index}", "bench/model", 12, None, None)
        admit(limits, key, claim, admission, demand=lambda: demand)
        count_usage(limits, admission, USAGE)

    for index, claim in enumerate(claims):  # first sight: rebuilt from the (empty) log
        one(index, claim)
    took = []
    for index in range(requests):
        started = time.perf_counter()
        one(index, claims[index % USERS])
        took.append((time.perf_counter() - started) * 1e6)
    return took


def file_bytes_per_user(users: int, hits: int) -> float:
    """The instance's counter file's used pages per user, each user's 24 h window
    holding ``hits`` messages (the moving window stores every hit)."""
    path = create()
    storage = LMDBStorage(f"tally+lmdb://{path}")
    with storage.lock:  # one transaction: fills fast
        for user in range(users):
            key = f"tally/msg/user:user_{user:012d}"
            storage.seed_entries(key, [storage.clock() - i for i in range(hits)], 86400)
    with storage.lock:
        used = storage.txn.stat(storage.windows)
    pages = used["branch_pages"] + used["leaf_pages"] + used["overflow_pages"]
    remove(path)
    return pages * used["psize"] / users


def memory_table(users: int) -> None:
    """Print the counter file's size per user at 1, 50 and 1,000 messages each."""
    print(f"tally+lmdb:// counter file, {users} users, one 24 h window each")
    print(f"{'messages per user':18} {'bytes per user':>15} {'at 100,000 users':>17}")
    for hits in (1, 50, 1000):
        size = file_bytes_per_user(users, hits)
        print(f"{hits:18} {size:15.0f} {size * 100_000 / 1e6:14.0f} MB")


def main() -> None:
    """Run each storage and print the table."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=20000)
    parser.add_argument("--redis", default=os.environ.get("TALLY_TEST_REDIS_URL"))
    parser.add_argument(
        "--memory", type=int, metavar="USERS", help="only the counter file's size per user"
    )
    args = parser.parse_args()
    if args.memory:
        memory_table(args.memory)
        return
    folder = tempfile.mkdtemp(prefix="tally-limits-bench-")
    flask_app = create_app({"INSTANCE_PATH": folder, "TALLY_LOG_FORMAT": "text"})
    schema.upgrade(flask_app.extensions["tally"].engine)
    limits_runtime = flask_app.extensions["tally"].limits
    rows = []

    def run(name: str, settle: bool = False) -> None:
        took = sorted(measure(flask_app, args.requests, settle))
        p50, p99 = took[len(took) // 2], took[int(len(took) * 0.99)]
        rows.append((name, p50, p99, statistics.fmean(took)))

    def policy(**fields) -> None:
        with flask_app.extensions["tally"].sessions() as session:
            set_policy(session, "tier:default", fields, "bench")

    def storages(suffix: str = "", settle: bool = False) -> None:
        limits_runtime.storage = memory
        run(f"tally+memory:// (in process){suffix}", settle)
        counters = create()
        limits_runtime.storage = LMDBStorage(f"tally+lmdb://{counters}")
        run(f"tally+lmdb:// (the instance's file){suffix}", settle)
        remove(counters)
        if args.redis:
            limits_runtime.storage, _ = make_storage(args.redis, None)
            for key in limits_runtime.storage.storage.scan_iter(match="*tally/*", count=1000):
                limits_runtime.storage.storage.delete(key)  # only Tally's: Redis is shared
            run(f"redis://{suffix}", settle)

    memory = limits_runtime.storage
    policy(messages=None)
    run("no limit applies")
    policy(messages=10**9)
    storages()
    policy(messages=10**9, daily_tokens=10**12, daily_budget=10**6)
    storages(" + tokens, budget: admit and settle", settle=True)
    print(f"admit() per request, {USERS} users in turn, {args.requests} requests")
    print(f"{'storage':72} {'p50 µs':>8} {'p99 µs':>8} {'mean µs':>8}")
    for name, p50, p99, mean in rows:
        print(f"{name:72} {p50:8.0f} {p99:8.0f} {mean:8.0f}")


if __name__ == "__main__":
    main()
