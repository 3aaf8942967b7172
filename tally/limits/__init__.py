"""Per-user message quotas, rate limits and budgets (PRODUCT.md, Limits).

- :mod:`tally.limits.policy`: policies, scopes and how the ones that apply are chosen;
- :mod:`tally.limits.storage`: where the counters live (``limits`` storages, our own
  compact in-memory one, and the client of the per-instance counter server);
- :mod:`tally.limits.server`: the counter server gunicorn's master starts beside the
  workers, so every worker of one instance counts in the same place;
- :mod:`tally.limits.engine`: one admission decision over every limit that applies.
"""
