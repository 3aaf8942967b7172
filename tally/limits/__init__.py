"""Per-user message quotas, rate limits and budgets (PRODUCT.md, Limits).

- :mod:`tally.limits.policy`: policies, scopes and how the ones that apply are chosen;
- :mod:`tally.limits.storage.registry`: our compact in-memory ``limits`` storage (one process);
- :mod:`tally.limits.storage.lmdb_file`: the file every worker of one instance counts in,
  and :mod:`tally.limits.storage.lmdb_plans`: an admission as one transaction on it;
- :mod:`tally.limits.engine`: one admission decision over every limit that applies;
- :mod:`tally.limits.storage.redis_plans`: that decision as one Lua script on Redis.
"""
