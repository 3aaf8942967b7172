"""A tiny identity provider for the tests: a JWKS server on loopback with keys made in
the test (RSA, EC P-256, Ed25519), and tokens signed with them.

Import the fixtures into a test module: ``from tests.idp_support import idp  # noqa``.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from jwt.algorithms import ECAlgorithm, OKPAlgorithm, RSAAlgorithm

from tally.keys.api_keys import create_api_key
from tally.verification.idp import save_idp
from tests.support import chat

ISSUER = "https://clerk.example.test"
ORIGIN = "http://app.example.test"
ALGORITHMS = {"rsa": "RS256", "ec": "ES256", "ed": "EdDSA"}


def _make_keys() -> dict[str, tuple[str, object]]:
    """kind -> (kid, private key), one of each kind."""
    return {
        "rsa": ("rsa-" + uuid.uuid4().hex[:6], rsa.generate_private_key(65537, 2048)),
        "ec": ("ec-" + uuid.uuid4().hex[:6], ec.generate_private_key(ec.SECP256R1())),
        "ed": ("ed-" + uuid.uuid4().hex[:6], ed25519.Ed25519PrivateKey.generate()),
    }


_KEYS = _make_keys()  # RSA generation is slow: one set per test run


def public_jwk(kind: str, kid: str, private) -> dict:
    """The public JWK of a private key, as a provider publishes it (no ``alg``: PyJWT
    derives it from kty and crv, as Tally must)."""
    exporter = {"rsa": RSAAlgorithm, "ec": ECAlgorithm, "ed": OKPAlgorithm}[kind]
    jwk = exporter.to_jwk(private.public_key(), as_dict=True)
    return {**jwk, "kid": kid, "use": "sig"}


class JwksServer:
    """Serves ``/jwks.json`` on a loopback port; counts fetches; can go down (503)."""

    def __init__(self):
        self.keys = dict(_KEYS)
        self.fetches = 0
        self.down = False
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 (http.server's name)
                server.fetches += 1
                if server.down or self.path != "/jwks.json":
                    self.send_response(503 if server.down else 404)
                    self.end_headers()
                    return
                body = json.dumps(server.document()).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._httpd.server_port}/jwks.json"
        threading.Thread(target=self._httpd.serve_forever, args=(0.05,), daemon=True).start()

    def document(self) -> dict:
        """The JWKS the provider publishes now."""
        return {"keys": [public_jwk(kind, kid, key) for kind, (kid, key) in self.keys.items()]}

    def token(
        self, kind: str = "rsa", *, kid=None, headers=None, signed_with=None, **claims
    ) -> str:
        """A token signed with the provider's ``kind`` key (or ``signed_with``, a forger's
        key); claims default to a valid Clerk-like session token for user ``user_2N4Z``
        (a claim given as None is left out)."""
        now = int(time.time())
        payload = {"sub": "user_2N4Z", "iss": ISSUER, "iat": now, "nbf": now - 5}
        payload["exp"] = now + 60
        payload.update(claims)
        payload = {k: v for k, v in payload.items() if v is not None}
        own_kid, private = self.keys[kind]
        return jwt.encode(
            payload,
            signed_with or private,
            algorithm=ALGORITHMS[kind],
            headers={"kid": kid or own_kid, **(headers or {})},
        )

    def close(self) -> None:
        """Stop serving."""
        self._httpd.shutdown()
        self._httpd.server_close()


@pytest.fixture
def jwks():
    """The test identity provider's JWKS server."""
    server = JwksServer()
    yield server
    server.close()


@pytest.fixture
def idp(tally, jwks):
    """The served Tally configured with the test identity provider; returns the JWKS
    server (tokens: ``idp.token(...)``)."""
    with tally.flask_app.extensions["tally"].sessions() as session:
        save_idp(session, {"issuer": ISSUER, "jwks_url": jwks.url}, "test")
    return jwks


@pytest.fixture
def user_key(tally):
    """A --user-token key of the served Tally, with one allowed origin."""
    with tally.flask_app.extensions["tally"].sessions() as session:
        _, raw = create_api_key(session, "spa", "test", user_token=True, origins=[ORIGIN])
    return raw


def call(tally, token=None, key=None, **body):
    """A chat call with ``token`` in X-Tally-User-Token (none when None)."""
    headers = {} if token is None else {"X-Tally-User-Token": token}
    return chat(tally, key=key, headers=headers, **body)


def expect_401(tally, key, token, code: str) -> dict:
    """Call with ``token``; assert a 401 with ``code`` in OpenAI's shape; the error."""
    answer = call(tally, token, key)
    assert answer.status_code == 401, answer.text
    error = answer.json()["error"]
    assert error["code"] == code, error
    assert error["param"] == "X-Tally-User-Token" and error["message"]
    assert answer.headers["WWW-Authenticate"]
    return error
