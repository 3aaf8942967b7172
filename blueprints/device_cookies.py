"""Device cookies (OWASP's pattern, tally/operators/throttle.py): a browser that signed in
as an operator keeps a cookie naming that operator, so failures from elsewhere never lock
it out. One cookie per operator per browser, ``tally_device_<operator id>``, holding the
operator's id and a random nonce (the browser's own failure budget), signed with the app's
secret key (itsdangerous, as Flask's session), ``HttpOnly``, ``SameSite=Strict``, sent to
``/login`` only, ``Secure`` over HTTPS; renewed (a new nonce) at every sign-in."""

from __future__ import annotations

import secrets

from flask import current_app, request
from flask.wrappers import Response
from itsdangerous import BadSignature, URLSafeTimedSerializer

COOKIE_PREFIX = "tally_device_"
MAX_AGE = 365 * 24 * 3600  # a browser unused for a year is a stranger again
SALT = "tally.device-cookie"  # this signer's own: a session cookie is never a device cookie
PATH = "/login"


def _serializer() -> URLSafeTimedSerializer:
    return URLSafeTimedSerializer(current_app.secret_key, salt=SALT)


def cookie_name(operator_id: int) -> str:
    """The device cookie's name for this operator."""
    return f"{COOKIE_PREFIX}{operator_id}"


def device_nonce(operator_id: int | None) -> str | None:
    """The nonce of the request's device cookie for ``operator_id`` when it is valid
    (signed by this app, not expired, naming that operator), else None."""
    if operator_id is None:
        return None
    value = request.cookies.get(cookie_name(operator_id))
    if not value or len(value) > 200:
        return None
    try:
        payload = _serializer().loads(value, max_age=MAX_AGE)
    except BadSignature:  # forged, altered, expired or another signer's
        return None
    if not isinstance(payload, list) or len(payload) != 2:
        return None
    named, nonce = payload
    if named != operator_id or not isinstance(nonce, str) or not nonce:
        return None
    return nonce


def set_device_cookie(response: Response, operator_id: int) -> None:
    """Give the browser a new device cookie for ``operator_id`` (a fresh nonce)."""
    value = _serializer().dumps([operator_id, secrets.token_urlsafe(16)])
    secure = bool(current_app.config["SESSION_COOKIE_SECURE"]) or request.is_secure
    response.set_cookie(
        cookie_name(operator_id),
        value,
        max_age=MAX_AGE,
        path=PATH,
        secure=secure,
        httponly=True,
        samesite="Strict",
    )
