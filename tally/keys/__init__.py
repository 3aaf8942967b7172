"""Bearer secrets Tally mints and checks: API keys (bound users, verified end users, allowed
origins) and admin API tokens.
"""
