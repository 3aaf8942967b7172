"""Verified end users: the identity provider, its signing keys (JWKS), and verifying the
end-user tokens that keys created with ``--user-token`` require.
"""
