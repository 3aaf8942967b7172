"""Verified end users on the API: X-Tally-User-Token checked against a JWKS server on
loopback, with keys made in the test (RSA, EC, Ed25519)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import time

import pytest
from cryptography.hazmat.primitives import serialization

from tally.tracking.config import TrackingConfig
from tally.tracking.identifiers import derive_identifier
from tests.helpers.api import chat
from tests.helpers.identity_provider import ISSUER, ORIGIN, call, expect_401
from tests.helpers.limits import set_limits
from tests.helpers.payloads import completion
from tests.helpers.rows import configure, end_users, request_rows
from tests.helpers.settings import HASH_KEY


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def forged(header: dict, payload: dict, sign=lambda signing_input: b"") -> str:
    signing_input = f"{b64(json.dumps(header).encode())}.{b64(json.dumps(payload).encode())}"
    return f"{signing_input}.{b64(sign(signing_input.encode()))}"


@pytest.mark.parametrize("kind", ["rsa", "ec", "ed"])
def test_a_valid_token_is_the_end_user_whatever_the_body_says(tally, upstream, idp, user_key, kind):
    upstream.reply(json=completion())
    token = idp.token(kind, name="Ada Lovelace", email="ada@example.com", azp=ORIGIN)
    answer = call(tally, token, user_key, user="mallory", identity={"id": "eve"})
    assert answer.status_code == 200, answer.text
    expected = derive_identifier(TrackingConfig(), "user_2N4Z", HASH_KEY.encode())
    assert upstream.last.body["user"] == expected
    assert "identity" not in upstream.last.body
    [row] = request_rows(tally.flask_app)
    assert row.user.external_id == "user_2N4Z" and row.identifier.identifier == expected
    [user] = end_users(tally.flask_app)
    assert (user.verified, user.display_name, user.email) == (
        True,
        "Ada Lovelace",
        "ada@example.com",
    )


def test_an_ordinary_key_may_send_a_token_and_then_its_sub_wins(tally, upstream, idp):
    configure(tally.flask_app, hash_mode="none")
    answer = call(tally, idp.token(sub="user_verified"), user="user_claimed")
    assert answer.status_code == 200, answer.text
    assert upstream.last.body["user"] == "tally_user_verified"
    assert call(tally, None, user="user_claimed").status_code == 200
    assert upstream.last.body["user"] == "tally_user_claimed"
    users = {u.external_id: u.verified for u in end_users(tally.flask_app)}
    assert users == {"user_verified": True, "user_claimed": False}


def _public_pem(idp) -> bytes:
    return (
        idp.keys["rsa"][1]
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )


BAD_TOKENS = {
    "token_expired": lambda idp: idp.token(exp=int(time.time()) - 120),
    "token_not_yet_valid": lambda idp: idp.token(nbf=int(time.time()) + 120),
    "token_wrong_issuer": lambda idp: idp.token(iss="https://evil.example"),
    "token_wrong_azp": lambda idp: idp.token(azp="https://evil.example"),
    "token_malformed": lambda idp: "not.a.jwt",
    "token_missing_claim": lambda idp: idp.token(sub=None),
    "token_invalid_signature": lambda idp: _tampered(idp.token(), sub="user_admin"),
    "token_invalid_signature/forger's key": lambda idp: idp.token(signed_with=_stranger_rsa()),
    "token_invalid_algorithm/none": lambda idp: forged(
        {"alg": "none", "typ": "JWT", "kid": idp.keys["rsa"][0]},
        {"sub": "user_admin", "iss": ISSUER, "exp": int(time.time()) + 60},
    ),
    "token_invalid_algorithm/hs256-with-public-key": lambda idp: forged(
        {"alg": "HS256", "typ": "JWT", "kid": idp.keys["rsa"][0]},
        {"sub": "user_admin", "iss": ISSUER, "exp": int(time.time()) + 60},
        lambda data: hmac.new(_public_pem(idp), data, hashlib.sha256).digest(),
    ),
    "token_invalid_algorithm/rs-key-es-alg": lambda idp: idp.token("ec", kid=idp.keys["rsa"][0]),
}


def _tampered(token: str, **changes) -> str:
    header, payload, signature = token.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    claims.update(changes)
    return f"{header}.{b64(json.dumps(claims).encode())}.{signature}"


def _stranger_rsa():
    from cryptography.hazmat.primitives.asymmetric import rsa

    return rsa.generate_private_key(65537, 2048)


@pytest.mark.parametrize("case", list(BAD_TOKENS))
def test_a_bad_token_is_401_naming_the_problem(tally, upstream, idp, user_key, case, caplog):
    caplog.set_level(logging.DEBUG)
    token = BAD_TOKENS[case](idp)
    expect_401(tally, user_key, token, case.split("/")[0])
    assert upstream.requests == []
    assert request_rows(tally.flask_app) == []
    assert token not in caplog.text  # tokens are never logged


def test_wrong_audience_when_one_is_configured(tally, idp, user_key):
    from tally.verification.idp import save_idp

    with tally.flask_app.extensions["tally"].sessions() as session:
        save_idp(session, {"audience": "tally-api"}, "test")
    expect_401(tally, user_key, idp.token(), "token_missing_claim")
    expect_401(tally, user_key, idp.token(aud="another-api"), "token_wrong_audience")
    assert call(tally, idp.token(aud="tally-api"), user_key).status_code == 200


def test_a_user_token_key_refuses_calls_without_a_token(tally, idp, user_key):
    error = expect_401(tally, user_key, None, "token_missing")
    assert "X-Tally-User-Token" in error["message"]
    models = tally_get(tally, "/v1/models", user_key)
    assert models.status_code == 401 and models.json()["error"]["code"] == "token_missing"


def test_the_model_list_carries_the_verified_users_limit_headers(tally, idp, user_key):
    set_limits(tally.flask_app, "user:user_2N4Z", "messages=2")
    set_limits(tally.flask_app, "user:mallory", "messages=7")
    assert call(tally, idp.token(), user_key).status_code == 200
    models = tally_get(
        tally,
        "/v1/models",
        user_key,
        **{"X-Tally-User-Token": idp.token(), "X-Tally-User": "mallory"},
    )
    assert models.status_code == 200, models.text
    assert models.json()["data"][0]["id"] == "openai/gpt-4o-mini"
    assert models.headers["X-RateLimit-Limit"] == "2"
    assert models.headers["X-RateLimit-Remaining"] == "1"
    # an ordinary key that sends a token: its sub wins over X-Tally-User there too
    ordinary = tally_get(
        tally,
        "/v1/models",
        tally.key,
        **{"X-Tally-User-Token": idp.token(), "X-Tally-User": "mallory"},
    )
    assert ordinary.headers["X-RateLimit-Limit"] == "2"
    expired = tally_get(
        tally,
        "/v1/models",
        user_key,
        **{"X-Tally-User-Token": idp.token(exp=int(time.time()) - 120), "X-Tally-User": "mallory"},
    )
    assert expired.status_code == 401 and expired.json()["error"]["code"] == "token_expired"
    assert "X-RateLimit-Limit" not in expired.headers
    bare = tally_get(tally, "/v1/models", user_key, **{"X-Tally-User": "mallory"})
    assert bare.status_code == 401 and bare.json()["error"]["code"] == "token_missing"
    assert "X-RateLimit-Limit" not in bare.headers


def tally_get(tally, path, key, **headers):
    import requests

    return requests.get(
        tally.url + path, headers={"Authorization": f"Bearer {key}", **headers}, timeout=10
    )


def test_unknown_kid_refetches_once_then_401(tally, idp, user_key):
    assert call(tally, idp.token(), user_key).status_code == 200
    assert idp.fetches == 1
    expect_401(tally, user_key, idp.token(kid="rotated-away"), "token_unknown_kid")
    assert idp.fetches == 2  # one refetch, in case the provider rotated its keys
    for n in range(20):  # a flood of random kids: no more fetches within the minute
        expect_401(tally, user_key, idp.token(kid=f"random-{n}"), "token_unknown_kid")
    assert idp.fetches == 2


def test_a_rotated_key_is_picked_up_by_its_refetch(tally, idp, user_key):
    assert call(tally, idp.token(), user_key).status_code == 200
    kid, private = idp.keys["ec"]
    idp.keys["new"] = ("rotated-in", private)
    token = idp.token("ec", kid="rotated-in")
    del idp.keys["new"]
    idp.keys["ec"] = ("rotated-in", private)
    assert call(tally, token, user_key).status_code == 200
    assert idp.fetches == 2


def test_jwks_down_is_503_for_user_token_keys_while_ordinary_keys_work(tally, idp, user_key):
    idp.down = True
    answer = call(tally, idp.token(), user_key)
    assert answer.status_code == 503, answer.text
    error = answer.json()["error"]
    assert error["code"] == "idp_unavailable" and "identity provider" in error["message"]
    assert int(answer.headers["Retry-After"]) >= 1
    assert call(tally, None, user="user_plain").status_code == 200  # an ordinary key


def test_no_identity_provider_configured_is_503(tally, user_key):
    answer = call(tally, "a.b.c", user_key)
    assert answer.status_code == 503
    assert answer.json()["error"]["code"] == "idp_not_configured"


def test_cors_for_the_keys_origins_only(tally, idp, user_key):
    import requests

    def preflight(origin):
        return requests.options(
            tally.url + "/v1/chat/completions",
            headers={
                "Origin": origin,
                "Access-Control-Request-Method": "POST",
                "Access-Control-Request-Headers": (
                    "authorization,content-type,x-tally-user-token,x-stainless-os,x-evil"
                ),
            },
            timeout=10,
        )

    allowed = preflight(ORIGIN)
    assert allowed.status_code == 204
    assert allowed.headers["Access-Control-Allow-Origin"] == ORIGIN
    assert allowed.headers["Access-Control-Allow-Headers"] == (
        "authorization, content-type, x-tally-user-token, x-stainless-os"
    )
    assert "POST" in allowed.headers["Access-Control-Allow-Methods"]
    refused = preflight("https://evil.example")
    assert not any(h.lower().startswith("access-control-") for h in refused.headers)

    answer = chat(
        tally, key=user_key, headers={"Origin": ORIGIN, "X-Tally-User-Token": idp.token()}
    )
    assert answer.status_code == 200
    assert answer.headers["Access-Control-Allow-Origin"] == ORIGIN
    assert "X-Request-Id" in answer.headers["Access-Control-Expose-Headers"]
    assert "Origin" in answer.headers["Vary"]
    other = chat(tally, key=user_key, headers={"Origin": "https://evil.example"})
    assert "Access-Control-Allow-Origin" not in other.headers
    # the ordinary key has no origins: no CORS for it even from the SPA's origin
    plain = chat(tally, headers={"Origin": ORIGIN})
    assert plain.status_code == 200 and "Access-Control-Allow-Origin" not in plain.headers
