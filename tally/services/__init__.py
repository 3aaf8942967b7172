"""Use cases. Each public function is one domain verb; the ones that change state
commit once, so callers (views, CLI) never commit."""
