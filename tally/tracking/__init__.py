"""Tracking: the operator's config (every change a revision), how an end user's id becomes
the upstream identifier, and how it is attached in the upstream's dialect.
"""
