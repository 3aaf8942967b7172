"""A tiny identity provider for the tests: a JWKS server on loopback with keys made in
the test (RSA, EC P-256, Ed25519), tokens signed with them, and calls that carry them.
Its fixtures (``jwks``, ``idp``, ``user_key``) are in tests.plugins.identity_provider.
"""

from __future__ import annotations

import json
import time
import uuid

import jwt
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from jwt.algorithms import ECAlgorithm, OKPAlgorithm, RSAAlgorithm
from werkzeug.wrappers import Request, Response

from tests.helpers.api import chat
from tests.helpers.loopback import LoopbackServer

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
        self.server = LoopbackServer(self.wsgi)
        self.url = self.server.url + "/jwks.json"

    def wsgi(self, environ, start_response):
        """Answer a fetch: the key set, 503 while down, 404 for any other path."""
        self.fetches += 1
        if self.down or Request(environ).path != "/jwks.json":
            response = Response(status=503 if self.down else 404)
        else:
            response = Response(json.dumps(self.document()), mimetype="application/json")
        return response(environ, start_response)

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
        self.server.close()


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
