"""A sink's secret: stored encrypted, since signing a webhook or authenticating to Stripe
needs it back (unlike an API key, which is only ever compared: its hash will do).

The key is derived from TALLY_SECRET_KEY (HKDF-SHA256 with a label of its own, so it is
no other use's key) and the cipher is Fernet (AES-128-CBC + HMAC-SHA256, from
``cryptography``). A secret is shown once, when the sink is made, and never after: not on
pages, in logs, exports or the audit log.
"""

from __future__ import annotations

import base64
import functools
import secrets

from cryptography.fernet import Fernet, InvalidToken
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from tally.errors import TallyError

WEBHOOK_PREFIX = "whsec_"


class SecretUnreadable(TallyError):
    """A sink's stored secret cannot be decrypted: TALLY_SECRET_KEY changed since."""


@functools.lru_cache(maxsize=8)
def _fernet(secret_key: str) -> Fernet:
    derived = HKDF(
        algorithm=hashes.SHA256(), length=32, salt=None, info=b"tally sink secrets v1"
    ).derive(secret_key.encode("utf-8"))
    return Fernet(base64.urlsafe_b64encode(derived))


def encrypt(secret_key: str, secret: str) -> str:
    """``secret`` encrypted under the key derived from ``secret_key``."""
    return _fernet(secret_key).encrypt(secret.encode("utf-8")).decode("ascii")


def decrypt(secret_key: str, token: str) -> str:
    """The secret ``token`` holds; :class:`SecretUnreadable` when the key changed."""
    try:
        return _fernet(secret_key).decrypt(token.encode("ascii")).decode("utf-8")
    except (InvalidToken, ValueError):
        raise SecretUnreadable(
            "a sink's secret cannot be decrypted (TALLY_SECRET_KEY changed?); "
            "remove the sink and add it again"
        ) from None


def webhook_secret() -> str:
    """A new Standard Webhooks secret: ``whsec_`` + base64 of 32 random bytes."""
    return WEBHOOK_PREFIX + base64.b64encode(secrets.token_bytes(32)).decode("ascii")
