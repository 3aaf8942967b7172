"""Tally's interfaces: the JSON API, the demo upstream, the console and the CLI."""
