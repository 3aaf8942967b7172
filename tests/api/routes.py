"""The JSON API's routes as the lean app's URL map lists them (app.py serves ``/v1/``,
``/admin/api/``, the demo upstream and the probes from a second Flask app), so a walk
over them covers a route the day it is added."""

from __future__ import annotations

from flask import Flask
from werkzeug.routing import Rule

SKIPPED_METHODS = {"HEAD", "OPTIONS"}  # HEAD has no body to check; OPTIONS is CORS's
# A body every proxied endpoint takes (chat, responses, embeddings), so a route that
# forgot the key would serve it rather than refuse it for its shape.
ANY_ENDPOINT_BODY = {
    "model": "openai/gpt-4o-mini",
    "messages": [{"role": "user", "content": "Hi there"}],
    "input": "Hi there",
    "user": "walker",
}


def served_apps(app: Flask) -> list[Flask]:
    """Every Flask app behind ``app``'s WSGI chain (middleware, the path dispatcher)."""
    found: list[Flask] = []
    seen: set[int] = set()
    todo: list[object] = [app.wsgi_app]
    while todo:
        item = todo.pop()
        if id(item) in seen:
            continue
        seen.add(id(item))
        owner = getattr(item, "__self__", None)
        if isinstance(owner, Flask):
            found.append(owner)
            continue
        todo += [getattr(item, name) for name in ("wsgi_app", "app") if hasattr(item, name)]
        todo += [cell.cell_contents for cell in getattr(item, "__closure__", None) or ()]
    return found


def api_routes(app: Flask, prefix: str) -> list[tuple[Rule, str]]:
    """Every (rule, method) under ``prefix`` that any app behind ``app`` serves."""
    rules = [
        (rule, method)
        for flask_app in served_apps(app)
        for rule in flask_app.url_map.iter_rules()
        if rule.rule.startswith(prefix)
        for method in sorted(rule.methods - SKIPPED_METHODS)
    ]
    return sorted(rules, key=lambda pair: (pair[0].rule, pair[1]))
