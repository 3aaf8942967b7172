"""Usage: the request log, daily totals, what each call cost (upstream, price table, estimate,
reconciled), retention, and the background writer (``writer/``).
"""
