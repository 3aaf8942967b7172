"""End-user tokens: verify a signed token (a JWT from Clerk, Auth0, any OIDC provider)
and turn it into the request's end user.

The algorithm is the key's, never the token's: the token's header only picks the key (by
``kid``); ``none`` and HS* are refused before any key is looked at, and a token whose
``alg`` differs from its key's is refused. The token itself is never logged, stored or
echoed: error messages name the problem, not the token.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jwt
from jwt import exceptions as jwt_errors

from tally.db import storable
from tally.end_users.claims import EMAIL_RE, MAX_ID_LENGTH, MAX_TEXT_LENGTH, EndUserClaim
from tally.errors import AuthenticationFailed, Unavailable
from tally.verification.idp_config import IdpConfig
from tally.verification.jwks import ALGORITHMS, JwksUnavailable, KeySet

LEEWAY = 30  # seconds of clock skew allowed on exp, nbf and iat
MAX_TOKEN_LENGTH = 16 * 1024
HEADER = "X-Tally-User-Token"


class TokenError(AuthenticationFailed):
    """The end-user token is missing, malformed, forged, expired or foreign; ``code``
    names the problem (``token_expired``, ``token_invalid_signature``, …)."""

    default_code = "token_invalid"

    def __init__(self, code: str, message: str):
        super().__init__(message, HEADER, code=code)


class IdpUnavailable(Unavailable):
    """Tokens cannot be verified now (the provider's keys cannot be fetched, or no
    provider is configured)."""

    default_code = "idp_unavailable"


# PyJWT's error -> (code, message); the first match wins (subclasses before bases).
_DECODE_ERRORS: Sequence[tuple[type[Exception], str, str]] = (
    (jwt_errors.ExpiredSignatureError, "token_expired", "The user token has expired."),
    (
        jwt_errors.ImmatureSignatureError,
        "token_not_yet_valid",
        "The user token is not valid yet (nbf or iat in the future).",
    ),
    (
        jwt_errors.InvalidIssuerError,
        "token_wrong_issuer",
        "The user token's issuer is not the configured identity provider.",
    ),
    (
        jwt_errors.InvalidAudienceError,
        "token_wrong_audience",
        "The user token is not meant for this audience.",
    ),
    (
        jwt_errors.InvalidSignatureError,
        "token_invalid_signature",
        "The user token's signature does not verify against the identity provider's key.",
    ),
    (
        jwt_errors.MissingRequiredClaimError,
        "token_missing_claim",
        "The user token lacks a required claim.",
    ),
    (
        jwt_errors.InvalidAlgorithmError,
        "token_invalid_algorithm",
        "The user token's algorithm is not its key's.",
    ),
    (jwt_errors.DecodeError, "token_malformed", "The user token is not a well-formed JWT."),
)


def verify_token(
    token: str | None,
    config: IdpConfig,
    keys: KeySet,
    origins: Sequence[str] = (),
) -> EndUserClaim:
    """The end user a token proves, or TokenError (401) naming the problem, or
    IdpUnavailable (503) when the provider's keys cannot be had.

    ``origins``: the key's allowed origins; a token with an ``azp`` (Clerk puts the
    page's origin there) must name one of them when the key has any.
    """
    if not token or not token.strip():
        raise TokenError("token_missing", f"This API key needs an end-user token in {HEADER}.")
    token = token.strip()
    if token.lower().startswith("bearer "):
        token = token[7:].strip()
    header = _header(token)
    try:
        key = keys.get(header.get("kid"))
    except JwksUnavailable:
        raise _unavailable(keys) from None
    if key is None:
        raise TokenError(
            "token_unknown_kid",
            "The user token's key id (kid) is not one of the identity provider's published keys.",
        )
    if header.get("alg") != key.algorithm_name:
        raise TokenError(
            "token_invalid_algorithm",
            f"The user token's algorithm must be its key's ({key.algorithm_name}).",
        )
    claims = _decode(token, key, config)
    _check_azp(claims, origins)
    return claim_of(claims, config)


def _header(token: str) -> dict[str, Any]:
    if len(token) > MAX_TOKEN_LENGTH:
        raise TokenError("token_malformed", "The user token is too long.")
    try:
        header = jwt.get_unverified_header(token)
    except jwt_errors.PyJWTError:
        raise TokenError("token_malformed", "The user token is not a well-formed JWT.") from None
    alg = header.get("alg")
    if not isinstance(alg, str) or alg not in ALGORITHMS:
        raise TokenError(
            "token_invalid_algorithm",
            "The user token must be signed with the identity provider's public key "
            f"(alg {alg!r} is refused).",
        )
    kid = header.get("kid")
    if kid is not None and not isinstance(kid, str):
        raise TokenError("token_malformed", "The user token's kid must be a string.")
    return header


def _decode(token: str, key: Any, config: IdpConfig) -> dict[str, Any]:
    required = ["exp", "iss", config.user_claim]
    if config.audience:
        required.append("aud")
    try:
        return jwt.decode(
            token,
            key.key,
            algorithms=[key.algorithm_name],
            issuer=config.issuer,
            audience=config.audience or None,
            leeway=LEEWAY,
            options={"require": required, "verify_aud": bool(config.audience)},
        )
    except jwt_errors.PyJWTError as exc:
        for kind, code, message in _DECODE_ERRORS:
            if isinstance(exc, kind):
                if kind is jwt_errors.MissingRequiredClaimError:
                    message = f"The user token lacks the {exc.claim!r} claim."
                raise TokenError(code, message) from None
        raise TokenError("token_invalid", "The user token is not valid.") from None


def _check_azp(claims: dict[str, Any], origins: Sequence[str]) -> None:
    azp = claims.get("azp")
    if azp is None or not origins:
        return
    if not isinstance(azp, str) or azp.rstrip("/").lower() not in origins:
        raise TokenError(
            "token_wrong_azp",
            "The user token was issued to a party (azp) that is not one of this key's origins.",
        )


def claim_of(claims: dict[str, Any], config: IdpConfig) -> EndUserClaim:
    """The end user of verified ``claims``: ``user_claim`` is the id; name and e-mail
    (from their configured claims, when present and sensible) go into the profile."""
    user = claims.get(config.user_claim)
    if isinstance(user, int) and not isinstance(user, bool):
        user = str(user)
    if not isinstance(user, str) or not 1 <= len(user) <= MAX_ID_LENGTH or not storable(user):
        raise TokenError(
            "token_missing_claim",
            f"The user token's {config.user_claim!r} claim must be a string of 1 to "
            f"{MAX_ID_LENGTH} characters, without NUL characters or lone surrogates.",
        )
    profile: dict[str, Any] = {"verified": True}
    name = claims.get(config.name_claim) if config.name_claim else None
    if isinstance(name, str) and name.strip() and storable(name):
        profile["display_name"] = name.strip()[:MAX_TEXT_LENGTH]
    email = claims.get(config.email_claim) if config.email_claim else None
    if (
        isinstance(email, str)
        and len(email) <= 320
        and EMAIL_RE.fullmatch(email)
        and storable(email)
    ):
        profile["email"] = email
    return EndUserClaim(user, "token", profile)


def _unavailable(keys: KeySet) -> IdpUnavailable:
    retry = keys.retry_after()
    return IdpUnavailable(
        "End-user tokens cannot be verified right now: the identity provider's keys "
        f"could not be fetched. Try again in {retry} s.",
        retry_after=retry,
    )
