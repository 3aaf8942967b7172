"""Usage events out (PRODUCT.md, "Usage events out: metering and alerts"): sinks, the
outbox the usage writer fills, and the delivery loop that empties it."""
