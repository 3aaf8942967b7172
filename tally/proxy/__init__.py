"""One API call through the gateway: the pipeline every endpoint shares, what each endpoint
adds (``endpoints/``), the upstream client, and relaying server-sent events.
"""
