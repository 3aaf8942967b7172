"""The JSON APIs, served by the lean app (app.py): bearer keys, no cookies, every error in
OpenAI's shape.

- ``calls``: the ``/v1`` API's calls (chat completions, Responses, embeddings): what one
  call takes over HTTP (``serve``), answered straight from WSGI (``DirectCalls``, in
  front of the lean app) unless a browser sends it;
- ``v1``: the OpenAI-compatible API at ``/v1`` (blueprint ``api``): browsers' calls,
  ``/v1/models`` and the rest, with ``end_users`` (verified end-user tokens, CORS);
- ``admin``: the admin API at ``/admin/api`` (blueprint ``admin_api``);
- ``errors``: the one place an error becomes an answer in OpenAI's shape;
- ``base``: what both share (the request id, the Bearer token, the runtime).

Nothing is imported here: app.py imports the modules it wires.
"""
