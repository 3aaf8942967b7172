"""The built-in demo upstream (an OpenAI-compatible endpoint that calls no model) and demo
traffic for trying the console and for benchmarks.
"""
