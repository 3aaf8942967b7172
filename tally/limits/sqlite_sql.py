"""The SQL of the instance's counter file (tally/limits/sqlite.py).

``counters``: fixed windows (tokens, budgets, markers, login throttling), each with its
expiry. Moving windows: one ``windows`` row per key, its hits in ``hits`` (hits made at
the same instant share a row, ``n`` counting them: about 20 bytes a hit).
"""

SCHEMA = (
    "CREATE TABLE IF NOT EXISTS counters (key TEXT PRIMARY KEY, value INTEGER NOT NULL,"
    " expires_at REAL NOT NULL) WITHOUT ROWID",
    "CREATE TABLE IF NOT EXISTS windows (id INTEGER PRIMARY KEY, key TEXT NOT NULL UNIQUE,"
    " expiry REAL NOT NULL)",
    # hits made at the same instant share a row: (window, at) is the key, n the count
    "CREATE TABLE IF NOT EXISTS hits (window INTEGER NOT NULL, at REAL NOT NULL,"
    " n INTEGER NOT NULL, PRIMARY KEY (window, at)) WITHOUT ROWID",
)
INCR = (
    "INSERT INTO counters (key, value, expires_at) VALUES (:key, :amount, :now + :expiry) "
    "ON CONFLICT (key) DO UPDATE SET "
    "value = CASE WHEN expires_at <= :now THEN :amount ELSE value + :amount END, "
    "expires_at = CASE WHEN expires_at <= :now THEN :now + :expiry ELSE expires_at END "
    "RETURNING value"
)
LIVE_HITS = "SELECT coalesce(sum(n), 0), min(at) FROM hits WHERE window = ? AND at >= ?"
# a moving window's id (NULL when it has none), live hits and oldest live hit, in one read
WINDOW_STATS = (
    "SELECT w.id, coalesce(sum(h.n), 0), min(h.at) FROM windows w"
    " LEFT JOIN hits h ON h.window = w.id AND h.at >= :since WHERE w.key = :key"
)
NEW_WINDOW = "INSERT INTO windows (key, expiry) VALUES (?, ?) RETURNING id"
COUNTER = "SELECT value FROM counters WHERE key = ? AND expires_at > ?"
ADD_HITS = (
    "INSERT INTO hits (window, at, n) VALUES (?, ?, ?) "
    "ON CONFLICT (window, at) DO UPDATE SET n = n + excluded.n"
)
SWEEP_BATCH = 100  # keys of each table looked at per batch
BATCH_END = {
    table: f"SELECT max(key) FROM (SELECT key FROM {table} WHERE key > ? ORDER BY key LIMIT ?)"
    for table in ("counters", "windows")
}
IN_BATCH = "key > :after AND key <= :last"
SWEEPS = {
    "counters": (f"DELETE FROM counters WHERE {IN_BATCH} AND expires_at <= :now",),
    "windows": (
        f"DELETE FROM hits WHERE window IN (SELECT id FROM windows WHERE {IN_BATCH})"
        " AND at < :now - (SELECT expiry FROM windows WHERE windows.id = hits.window)",
        f"DELETE FROM windows WHERE {IN_BATCH}"
        " AND NOT EXISTS (SELECT 1 FROM hits WHERE hits.window = windows.id)",
    ),
}
