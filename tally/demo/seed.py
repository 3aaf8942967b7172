"""Demo traffic for trying the console and for benchmarks. Every row it writes is
marked ``is_demo`` so it can be told apart from (and deleted before) real traffic.

The calls are recorded the way the API records them, through ``record_calls`` in
batches: end users, identifiers (with their request counts), request rows and daily
totals all come out as real traffic would leave them.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import text
from sqlalchemy.orm import Session

from tally.db import utcnow
from tally.end_users.claims import EndUserClaim
from tally.tracking.identifiers import derive_identifier
from tally.tracking.store import active_config
from tally.usage.call import CallRecord, Outcome
from tally.usage.records import record_calls

# model -> (dollars per prompt token, dollars per completion token)
MODELS = {
    "openai/gpt-4o-mini": (0.15e-6, 0.60e-6),
    "anthropic/claude-sonnet-4": (3e-6, 15e-6),
    "google/gemini-2.5-flash": (0.30e-6, 2.5e-6),
    "meta-llama/llama-3.3-70b-instruct": (0.13e-6, 0.40e-6),
}
ENDPOINTS = {"chat.completions": 16, "responses": 3, "embeddings": 1}  # -> weight
FIRST = ["Ada", "Grace", "Alan", "Edsger", "Barbara", "Ken", "Margaret", "Linus", "Radia", "Guido"]
LAST = ["Lovelace", "Hopper", "Turing", "Dijkstra", "Liskov", "Thompson", "Hamilton", "Perlman"]
PLANS = ["free", "pro", "team", "enterprise"]
ERRORS = [
    (429, "429", "Rate limit exceeded upstream"),
    (502, "upstream_error", "Provider error"),
    (499, "client_disconnected", "The client went away mid-stream."),
]
# calls per record_calls transaction: a user seen twice in a batch is upserted once, so
# large batches save most of the end-user and identifier upserts
BATCH = 100_000


@dataclass(frozen=True)
class Seeded:
    """How much demo data was written."""

    requests: int
    users: int


@dataclass(frozen=True)
class _DemoUser:
    identifier: str | None
    first_claim: EndUserClaim  # with the profile, as an ``identity`` sends it
    claim: EndUserClaim  # the id alone, as ``user`` sends it


def seed_demo_traffic(
    session: Session,
    hash_key: bytes,
    *,
    requests: int,
    users: int,
    days: int = 30,
    seed: int = 7,
) -> Seeded:
    """Record ``requests`` demo calls over the last ``days`` by ``users`` demo end users
    (each makes at least one call when there are enough; a few heavy users and a long
    tail, as real products have), in time order, through ``record_calls``."""
    rng = random.Random(seed)
    config = active_config(session)
    people = []
    for n in range(min(users, requests)):
        external_id = f"demo_user_{n:05d}"
        identifier = derive_identifier(config, external_id, hash_key) if config.enabled else None
        first = EndUserClaim(external_id, "identity", _profile(rng, n))
        people.append(_DemoUser(identifier, first, EndUserClaim(external_id, "user")))
    _prepare_bulk(session)
    for batch in _batches(_calls(rng, people, requests, days, config.revision_id), BATCH):
        record_calls(session, batch, seeded=True)
    return Seeded(requests=requests, users=len(people))


def _profile(rng: random.Random, n: int) -> dict:
    first, last, plan = rng.choice(FIRST), rng.choice(LAST), rng.choice(PLANS)
    return {
        "display_name": f"{first} {last}",
        "email": f"{first}.{last}.{n}@example.com".lower(),
        "metadata": [{"plan": plan}],
        "tags": ["demo", f"plan-{plan}"],
    }


def _calls(rng, people, requests, days, revision_id) -> Iterator[tuple]:
    """The calls, oldest first: the first ``len(people)`` go to each user in turn (so
    each is seen), the rest by a Zipf-like weight. A user's first call carries their
    profile (``identity``), the later ones only their id (``user``)."""
    if not people:
        return
    now = utcnow()
    ages = sorted((rng.uniform(0, days * 86400) for _ in range(requests)), reverse=True)
    picks = list(range(len(people))) + rng.choices(
        range(len(people)),
        cum_weights=_cumulative(len(people)),
        k=requests - len(people),
    )
    rng.shuffle(picks)
    # one draw of each attribute for all calls: per-call random.choices cost seconds
    models = rng.choices(list(MODELS), [5, 2, 3, 1], k=requests)
    endpoints = rng.choices(list(ENDPOINTS), list(ENDPOINTS.values()), k=requests)
    seen: set[int] = set()
    for age, pick, model, endpoint in zip(ages, picks, models, endpoints, strict=True):
        person = people[pick]
        first = pick not in seen
        seen.add(pick)
        call = CallRecord(
            request_id=f"{rng.getrandbits(128):032x}",
            api_key_id=None,
            claim=person.first_claim if first else person.claim,
            identifier=person.identifier,
            revision_id=revision_id,
            model=model,
            stream=endpoint != "embeddings" and rng.random() < 0.7,
            endpoint=endpoint,
            is_demo=True,
        )
        yield call, _outcome(rng, call), now - timedelta(seconds=age)


def _cumulative(count: int) -> list[float]:
    total, out = 0.0, []
    for rank in range(count):
        total += 1 / (rank + 1) ** 1.1
        out.append(total)
    return out


def _outcome(rng: random.Random, call: CallRecord) -> Outcome:
    prompt_price, completion_price = MODELS[call.model]
    # log-normal token counts (exp of gauss: lognormvariate's normalvariate is slower)
    prompt = int(math.exp(rng.gauss(6.2, 0.9)))
    completion = 0 if call.endpoint == "embeddings" else int(math.exp(rng.gauss(5.3, 0.8)))
    cached = int(prompt * rng.random()) if rng.random() < 0.3 else 0
    latency = completion * rng.uniform(8, 25) + rng.uniform(150, 600)
    usage = {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "cached_tokens": cached,
        "cost": round(prompt * prompt_price + completion * completion_price, 10),
    }
    outcome = Outcome(
        usage=usage,
        model=call.model,
        generation_id=f"gen-demo-{rng.getrandbits(80):020x}",
        latency_ms=round(latency, 1),
        ttft_ms=round(rng.uniform(150, 900), 1) if call.stream else None,
    )
    if rng.random() < 0.03:
        status, code, message = rng.choice(ERRORS)
        outcome.fail(status, code, message)
        if status != 499:
            outcome.usage = None
    return outcome


def _batches(
    calls: Iterator[tuple], size: int
) -> Iterator[list[tuple[CallRecord, Outcome, datetime]]]:
    batch = []
    for call in calls:
        batch.append(call)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def _prepare_bulk(session: Session) -> None:
    """A large page cache for this SQLite connection: a million rows' random request
    ids would otherwise send each batch's index inserts to disk."""
    if session.get_bind().dialect.name == "sqlite":
        session.execute(text("PRAGMA cache_size=-262144"))  # 256 MiB, this connection only
