"""The process: what one process builds once (database, caches, upstream, limits, usage
writer), its readiness checks, and what Tally changes in gunicorn.
"""
