"""Usage read back for people and tools: the dashboard, breakdowns, exports, the admin API's
queries, the top users and per-user latency.
"""
