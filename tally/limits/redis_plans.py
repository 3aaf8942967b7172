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
"""

from __future__ import annotations

import json
from typing import Any

from limits.storage import RedisClusterStorage, RedisStorage

from tally.limits.engine import CLAIM_TTL, MARKER_TTL

# KEYS: none. ARGV[1]: the key prefix; ARGV[2]: the plan as JSON; ARGV[3]: its "now", as
# the text the hits are stored with (Lua's own number formatting would round it).
ADMIT = """
local prefix, plan, now_text = ARGV[1] .. ':', cjson.decode(ARGV[2]), ARGV[3]
local now = tonumber(now_text)
local function get(key) return tonumber(redis.call('get', prefix .. key) or '0') end
local function incr(key, expiry, amount)
  local value = redis.call('incrby', prefix .. key, amount)
  if value == amount then redis.call('expire', prefix .. key, expiry) end
  return value
end
for _, reset in ipairs(plan.resets or {}) do
  if get(reset.mark) < reset.at then
    for _, key in ipairs(reset.keys) do redis.call('del', prefix .. key) end
    redis.call('del', prefix .. reset.mark)
    incr(reset.mark, MARKER_TTL, reset.at)
  end
end
for _, marker in ipairs(plan.ready or {}) do incr(marker .. '/ready', MARKER_TTL, 1) end
local unseeded, pending = {}, false
for _, marker in ipairs(plan.markers or {}) do
  if get(marker .. '/ready') == 0 then
    if incr(marker, CLAIM_TTL, 1) == 1 then table.insert(unseeded, marker) else pending = true end
  end
end
if #unseeded > 0 or pending then
  return cjson.encode({unseeded = unseeded, pending = pending, seeding = true})
end
-- the moving window's (oldest live hit, live hits), as limits' moving_window.lua finds them
local function window(key, limit, expiry)
  local low, high, found = 0, math.min(limit, redis.call('llen', prefix .. key)) - 1, nil
  while low <= high do
    local mid = math.floor((low + high) / 2)
    local value = tonumber(redis.call('lindex', prefix .. key, mid))
    if value and value >= now - expiry then found = mid; low = mid + 1 else high = mid - 1 end
  end
  if found == nil then return now, 0 end
  return tonumber(redis.call('lindex', prefix .. key, found)), found + 1
end
local stats, refused, worst = {}, false, 0
for index, check in ipairs(plan.checks) do
  local reset, remaining, passes
  if check.kind == 'window' then
    local oldest, count = window(check.key, check.limit, check.expiry)
    reset, remaining = oldest + check.expiry, check.limit - count
    passes = remaining >= 1
  else
    local used = get(check.key)
    reset, remaining = check.reset, math.max(0, check.limit - used)
    passes = used < check.limit
  end
  stats[index] = {reset, remaining}
  if not passes and (not refused or reset > stats[worst][1]) then
    refused, worst = true, index
  end
end
if refused then return cjson.encode({refused = worst - 1, stats = stats}) end
if plan.hit ~= false then
  for index, check in ipairs(plan.checks) do
    if check.kind == 'window' then
      local key = prefix .. check.key
      redis.call('lpush', key, now_text)
      redis.call('ltrim', key, 0, check.limit - 1)
      redis.call('expire', key, check.expiry)
      if stats[index][2] == check.limit then stats[index][1] = now + check.expiry end
      stats[index][2] = stats[index][2] - 1
    end
  end
end
return cjson.encode({stats = stats})
""".replace("MARKER_TTL", str(MARKER_TTL)).replace("CLAIM_TTL", str(CLAIM_TTL))

# ARGV[1]: the key prefix; ARGV[2]: [[key, expiry, amount], …] as JSON.
ADD_USAGE = """
local prefix = ARGV[1] .. ':'
for _, entry in ipairs(cjson.decode(ARGV[2])) do
  local key, expiry, amount = prefix .. entry[1], entry[2], entry[3]
  if amount ~= 0 then
    local value = redis.call('incrby', key, amount)
    if value == amount then redis.call('expire', key, expiry) end
  end
end
return 0
"""


class RedisPlans:
    """Runs admission plans and usage additions on a ``limits`` RedisStorage, one
    script call each."""

    def __init__(self, storage: RedisStorage):
        self.storage = storage
        connection = storage.get_connection()
        self._admit = connection.register_script(ADMIT)
        self._add = connection.register_script(ADD_USAGE)

    def evaluate(self, plan: dict[str, Any]) -> dict[str, Any]:
        """The engine's answer to ``plan`` (see :func:`tally.limits.engine.evaluate`)."""
        now = repr(float(plan["now"]))
        answer = json.loads(self._admit(args=[self.storage.key_prefix, _dump(plan), now]))
        if answer.pop("seeding", False):
            answer["unseeded"] = answer["unseeded"] or []  # cjson sends {} for an empty list
            return answer
        answer["stats"] = [[float(reset), remaining] for reset, remaining in answer["stats"]]
        answer.setdefault("refused", None)
        return answer

    def add_usage(self, additions: list[list[Any]]) -> None:
        """Add a call's tokens and cost to their counters."""
        if any(amount for _, _, amount in additions):
            self._add(args=[self.storage.key_prefix, _dump(additions)])


def plans_for(storage) -> RedisPlans | None:
    """The script runner for a single Redis (or Sentinel's master); None for anything
    else, a Redis Cluster included."""
    if isinstance(storage, RedisStorage) and not isinstance(storage, RedisClusterStorage):
        return RedisPlans(storage)
    return None


def _dump(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"))
