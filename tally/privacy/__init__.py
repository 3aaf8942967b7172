"""Erasure: an end user's personal data found and removed everywhere, their totals kept."""
