"""Tally's domain: identity derivation, tracking config, usage records and the upstream client.

Nothing here imports Flask's request globals; views pass what the domain needs.
"""
