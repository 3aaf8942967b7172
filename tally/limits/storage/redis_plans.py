"""A whole admission plan in one Redis round trip: :mod:`tally.limits.engine`'s
decision, written in Lua and run with ``EVALSHA``, on the data ``limits``'
:class:`~limits.storage.RedisStorage` keeps (the same keys, prefix and layouts: a moving
window is a list of hit timestamps, newest first, trimmed to the limit; a counter is an
integer with an expiry). Everything else that reads or writes the counters (the console's
status, ``limits reset``, rebuilding from the log) still goes through the library.

The script runs atomically on the server, so on Redis too a plan's tests and hits are
one step: no overshoot from requests admitted at the same instant on other instances,
and a request refused by a later limit keeps no earlier hit. It names its keys inside
the script, which a single Redis (or the master Sentinel points at) allows; a Redis
Cluster spreads them over shards, so there the engine runs call by call instead.

Mirroring the layout leans on ``limits``' internals, so the script runs only on the
``limits`` releases in :data:`LIMITS_CHECKED` (checked once, when the storage's runner is
first built); on any other, the engine runs call by call through ``limits``' own API, as
on a Cluster, and one log line says so. tests/limits/test_redis_layout.py has ``limits``'
own storage and strategies and the script count in the same keys, and fails when the
layout moves or the installed release leaves the range. Kept over those calls for speed
too: 154 µs per admission at p50 against 472 µs (bench/limits_cost.py, 2026-12-02).
"""

from __future__ import annotations

import json
import logging
import re
from importlib import metadata
from typing import Any

from limits.storage import RedisClusterStorage, RedisStorage
from redis.exceptions import ConnectionError, NoScriptError, TimeoutError

from tally.limits.engine import CLAIM_TTL, HOLD_RETRY, MARKER_TTL
from tally.versions import RedisVersion

log = logging.getLogger(__name__)
# [first, past-the-end) limits (major, minor) whose RedisStorage keeps the layout the
# script mirrors (``key_prefix`` ":" key, the attribute since 5.1; a window newest first,
# trimmed to its limit; a counter INCRBY'd, its expiry set on creation): pyproject.toml's
# range. 5.1 to 5.8 checked with tests/limits/test_redis_layout.py.
LIMITS_CHECKED = ((5, 1), (6, 0))

# KEYS: none. ARGV: the key prefix; the plan's "now", as the text the hits are stored
# with (Lua's own number formatting would round it); "1" to hit, "0" to look; the
# plan's resets, rebuilt markers and markers as JSON, or "" (the usual: none); the
# cache version the request's tracking config was loaded under, or "" (tally/cache.py:
# checked here, it needs no GET of its own); the demand (tally.limits.engine.reservation):
# the call's id ("": no demand, the other nine are then ""), the reservations' lease,
# the prompt's tokens, the completion's cap (-1: none), the prompt's cost in
# nano-dollars (-1: the model has no price), the completion's price per token, and the
# model's four peak keys; then five per check: "w" (window), "t" (tokens) or "u" (USD),
# key, limit, expiry, reset. No JSON on the usual path: decoding and encoding it was
# most of the script's time.
# Answer: {"stale"} (the version moved on: nothing done), {"seeding", pending (0/1),
# unseeded marker, ...} or {"ok" | "refused", refused check (1-based, 0: none), the
# reserved tokens, nano-dollars and the model's peak cost, then per check its reset
# (text) and remaining}.
# Reservations: a hash per counter (``<key>/held``), call id -> "amount:until".
ADMIT = """
local prefix, now_text, hit = ARGV[1] .. ':', ARGV[2], ARGV[3] == '1'
local now = tonumber(now_text)
if ARGV[5] ~= '' and (redis.call('get', 'VERSION_KEY') or '0') ~= ARGV[5] then
  return {'stale'}
end
local function get(key) return tonumber(redis.call('get', prefix .. key) or '0') end
local function incr(key, expiry, amount)
  local value = redis.call('incrby', prefix .. key, amount)
  if value == amount then redis.call('expire', prefix .. key, expiry) end
  return value
end
if ARGV[4] ~= '' then
  local extras = cjson.decode(ARGV[4])
  for _, reset in ipairs(extras.resets) do
    if get(reset.mark) < reset.at then
      for _, key in ipairs(reset.keys) do redis.call('del', prefix .. key) end
      redis.call('del', prefix .. reset.mark)
      incr(reset.mark, MARKER_TTL, reset.at)
    end
  end
  for _, marker in ipairs(extras.ready) do incr(marker .. '/ready', MARKER_TTL, 1) end
  local answer, pending = {'seeding', 0}, false
  for _, marker in ipairs(extras.markers) do
    if get(marker .. '/ready') == 0 then
      if incr(marker, CLAIM_TTL, 1) == 1 then table.insert(answer, marker) else answer[2] = 1 end
    end
  end
  if #answer > 2 or answer[2] == 1 then return answer end
end
-- the moving window's (oldest live hit, live hits), as limits' moving_window.lua finds
-- them: the list is newest first and trimmed to the limit; all of it is live unless its
-- last is stale (then a binary search)
local function window(key, limit, expiry)
  local full = prefix .. key
  local size = math.min(limit, redis.call('llen', full))
  if size == 0 then return now, 0 end
  local last = tonumber(redis.call('lindex', full, size - 1))
  if last >= now - expiry then return last, size end
  local low, high, found = 0, size - 2, nil
  while low <= high do
    local mid = math.floor((low + high) / 2)
    local value = tonumber(redis.call('lindex', full, mid))
    if value >= now - expiry then found = mid; low = mid + 1 else high = mid - 1 end
  end
  if found == nil then return now, 0 end
  return tonumber(redis.call('lindex', full, found)), found + 1
end
-- the live reservations under a counter (expired ones go)
local function held(key)
  local full = prefix .. key .. '/held'
  local entries = redis.call('hgetall', full)
  local total = 0
  for i = 1, #entries, 2 do
    local value = entries[i + 1]
    local sep = string.find(value, ':', 1, true)
    if tonumber(string.sub(value, sep + 1)) > now then
      total = total + tonumber(string.sub(value, 1, sep - 1))
    else
      redis.call('hdel', full, entries[i])
    end
  end
  return total
end
local HEAD = 15
local count = (#ARGV - HEAD) / 5
local stats, worst = {}, 0
for index = 1, count do
  local at = HEAD + (index - 1) * 5
  local kind, key = ARGV[at + 1], ARGV[at + 2]
  local limit, expiry = tonumber(ARGV[at + 3]), tonumber(ARGV[at + 4])
  local reset, remaining, passes
  if kind == 'w' then
    local oldest, live = window(key, limit, expiry)
    reset, remaining = oldest + expiry, limit - live
    passes = remaining >= 1
  else
    local used, reserved = get(key), held(key)
    passes = used + reserved < limit
    reset = tonumber(ARGV[at + 5])
    if not passes and used < limit then reset = now + HOLD_RETRY end
    remaining = math.max(0, limit - used - reserved)
  end
  stats[index] = {reset, remaining}
  if not passes and (worst == 0 or reset > stats[worst][1]) then worst = index end
end
local tokens, nano, peak_cost = 0, 0, 0
if worst == 0 and ARGV[6] ~= '' then
  local completion = tonumber(ARGV[9])
  if completion < 0 then completion = math.max(get(ARGV[12]), get(ARGV[13])) end
  peak_cost = math.max(get(ARGV[14]), get(ARGV[15]))
  local prompt_nano = tonumber(ARGV[10])
  if prompt_nano < 0 then nano = peak_cost
  else nano = prompt_nano + math.ceil(completion * tonumber(ARGV[11])) end
  tokens = tonumber(ARGV[8]) + completion
end
if worst == 0 and hit then
  for index = 1, count do
    local at = HEAD + (index - 1) * 5
    local kind = ARGV[at + 1]
    if kind == 'w' then
      local key, limit, expiry = prefix .. ARGV[at + 2], tonumber(ARGV[at + 3]), ARGV[at + 4]
      redis.call('lpush', key, now_text)
      redis.call('ltrim', key, 0, limit - 1)
      redis.call('expire', key, expiry)
      if stats[index][2] == limit then stats[index][1] = now + expiry end
      stats[index][2] = stats[index][2] - 1
    elseif ARGV[6] ~= '' then
      local amount = kind == 'u' and nano or tokens
      if amount > 0 then
        local full, lease = prefix .. ARGV[at + 2] .. '/held', tonumber(ARGV[7])
        redis.call('hset', full, ARGV[6], string.format('%d', amount) .. ':' .. (now + lease))
        redis.call('expire', full, lease)
      end
    end
  end
end
local answer = {worst == 0 and 'ok' or 'refused', worst, tokens, nano, peak_cost}
for index = 1, count do
  table.insert(answer, tostring(stats[index][1]))
  table.insert(answer, stats[index][2])
end
return answer
"""
ADMIT = ADMIT.replace("MARKER_TTL", str(MARKER_TTL)).replace("CLAIM_TTL", str(CLAIM_TTL))
ADMIT = ADMIT.replace("HOLD_RETRY", str(HOLD_RETRY))
ADMIT = ADMIT.replace("VERSION_KEY", RedisVersion.KEY)

# ARGV[1]: the key prefix; ARGV[2]: the settlement as JSON
# (tally.limits.engine.settle: release, add, adjust, peaks).
SETTLE = """
local prefix = ARGV[1] .. ':'
local settlement = cjson.decode(ARGV[2])
for _, entry in ipairs(settlement.release or {}) do
  redis.call('hdel', prefix .. entry[1], entry[2])
end
for _, entry in ipairs(settlement.add or {}) do
  local key, expiry, amount = prefix .. entry[1], entry[2], entry[3]
  if amount ~= 0 then
    local value = redis.call('incrby', key, amount)
    if value == amount then redis.call('expire', key, expiry) end
  end
end
for _, entry in ipairs(settlement.adjust or {}) do
  if entry[2] ~= 0 and redis.call('exists', prefix .. entry[1]) == 1 then
    redis.call('incrby', prefix .. entry[1], entry[2])
  end
end
for _, entry in ipairs(settlement.peaks or {}) do
  local key, expiry, value = prefix .. entry[1], entry[2], entry[3]
  if value > tonumber(redis.call('get', key) or '0') then
    redis.call('set', key, string.format('%d', value), 'EX', expiry)
  end
end
return 0
"""


# ARGV[1]: the key prefix; ARGV[2]: the window's key; ARGV[3]: its expiry; then its hits'
# timestamps, newest first (limits' layout), at most its limit.
SEED_WINDOW = """
local key = ARGV[1] .. ':' .. ARGV[2]
redis.call('del', key)
for index = 4, #ARGV do redis.call('rpush', key, ARGV[index]) end
if #ARGV >= 4 then redis.call('expire', key, ARGV[3]) end
return 0
"""

NO_DEMAND = [""] * 10


class RedisPlans:
    """Runs admission plans and usage additions on a ``limits`` RedisStorage, one
    script call each, on a connection of the storage's pool (the client's command
    machinery around one call, retries included, cost as much as the call: a failed
    call is the limits' outage handling's, tally/limits/admission.py)."""

    def __init__(self, storage: RedisStorage):
        self.storage = storage
        connection = storage.get_connection()
        self._pool = connection.connection_pool
        self._admit = connection.register_script(ADMIT)
        self._settle = connection.register_script(SETTLE)
        self._seed = connection.register_script(SEED_WINDOW)

    def evaluate(self, plan: dict[str, Any]) -> dict[str, Any]:
        """The engine's answer to ``plan`` (see :func:`tally.limits.engine.evaluate`)."""
        extras = ""
        if plan.get("resets") or plan.get("markers") or plan.get("ready"):
            extras = _dump({name: plan.get(name) or [] for name in ("resets", "ready", "markers")})
        args = [self.storage.key_prefix, repr(float(plan["now"]))]
        version = plan.get("version")
        args += ["1" if plan.get("hit", True) else "0", extras, "" if version is None else version]
        demand = plan.get("demand")
        if demand is None:
            args += NO_DEMAND
        else:
            price = demand["price"]
            args += [str(demand["id"]), demand["lease"], demand["prompt"], demand["completion"]]
            args += [-1, 0] if price is None else [price[0], repr(float(price[1]))]
            args += demand["peaks"]
        for check in plan["checks"]:
            kind = "w" if check["kind"] == "window" else check["unit"][0]
            args += [kind, check["key"], check["limit"], check["expiry"], repr(check["reset"])]
        answer = [_text(item) for item in self._run(self._admit, args)]
        if answer[0] == "stale":
            return {"stale": True}
        if answer[0] == "seeding":
            return {"unseeded": answer[2:], "pending": answer[1] == 1}
        values = answer[5:]
        stats = [[float(values[i]), values[i + 1]] for i in range(0, len(values), 2)]
        if answer[1]:
            return {"refused": answer[1] - 1, "stats": stats}
        if demand is None:
            return {"refused": None, "stats": stats}
        return {"refused": None, "stats": stats, "reserved": answer[2:5]}

    def settle(self, settlement: dict[str, Any]) -> None:
        """A call's end on the counters, in one script call (tally.limits.engine.settle)."""
        release = [[held, str(ident)] for held, ident, _ in settlement.get("release", ())]
        add = [entry for entry in settlement.get("add", ()) if entry[2]]
        peaks = settlement.get("peaks", [])
        adjust = [entry for entry in settlement.get("adjust", ()) if entry[1]]
        if release or add or peaks or adjust:
            body = {"release": release, "add": add, "peaks": peaks, "adjust": adjust}
            self._run(self._settle, [self.storage.key_prefix, _dump(body)])

    def seed_window(self, key: str, stamps: list[float], expiry: int) -> None:
        """Put a window's hits back at the times they were made (a rebuild from the
        request log, tally/limits/rebuild.py): what it held is replaced."""
        newest_first = [repr(float(s)) for s in sorted(stamps, reverse=True)]
        self._run(self._seed, [self.storage.key_prefix, key, expiry, *newest_first])

    def _run(self, script, args: list[Any]) -> Any:
        """``EVALSHA`` (``EVAL`` once when Redis does not hold the script yet) on a
        pooled connection."""
        connection = self._pool.get_connection()
        try:
            try:
                connection.send_command("EVALSHA", script.sha, 0, *args)
                return connection.read_response()
            except NoScriptError:
                connection.send_command("EVAL", script.script, 0, *args)
                return connection.read_response()
        except (ConnectionError, TimeoutError):
            connection.disconnect()
            raise
        finally:
            self._pool.release(connection)


def plans_for(storage) -> RedisPlans | None:
    """The script runner for a single Redis (or Sentinel's master) on a ``limits`` release
    in :data:`LIMITS_CHECKED`; None for anything else, a Redis Cluster included (on an
    unchecked release, with one log line: the engine then runs call by call)."""
    if not isinstance(storage, RedisStorage) or isinstance(storage, RedisClusterStorage):
        return None
    if not supported():
        log.warning(
            "limits %s is outside %s.%s-%s.%s, the releases tally.limits.storage.redis_plans "
            "was checked against: admissions on Redis run call by call through limits' own "
            "API (not atomic: requests admitted at the same instant may overshoot)",
            metadata.version("limits"),
            *LIMITS_CHECKED[0],
            *LIMITS_CHECKED[1],
        )
        return None
    return RedisPlans(storage)


def supported(version: str | None = None) -> bool:
    """True when ``version`` (default: the installed ``limits``') is in
    :data:`LIMITS_CHECKED`."""
    major, minor = re.match(r"(\d+)\.(\d+)", version or metadata.version("limits")).groups()
    return LIMITS_CHECKED[0] <= (int(major), int(minor)) < LIMITS_CHECKED[1]


def _text(item: Any) -> Any:
    """A reply item as text (the client may or may not decode replies)."""
    return item.decode() if isinstance(item, bytes) else item


def _dump(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"))
