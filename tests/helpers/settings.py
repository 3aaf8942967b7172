"""The secrets every Tally the tests start shares, in-process or under gunicorn, so a
test can derive what Tally derives (identifiers, erasure references)."""

HASH_KEY = "test-hash-key"
SECRET_KEY = "test-secret-key"
