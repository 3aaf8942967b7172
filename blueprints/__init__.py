"""Tally's interfaces, one package per surface: ``api/`` (the OpenAI-compatible API and
the admin API, JSON), ``console/`` (HTML, one module per page) with ``auth`` (login) and
``extensions``, ``cli/`` (the flask commands); and ``demo`` (the demo upstream) and
``health`` (the probes, /metrics); ``bodies``, the deadline of every request body (WSGI
middleware). app.py wires them."""
