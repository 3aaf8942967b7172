"""The background usage writer: request rows committed in batches after the answers left,
in the worker or in a process of its own, spooled to disk while the database is away.
"""
