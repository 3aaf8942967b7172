"""Who is the end user of a request: validation of the client's ``identity``, ``user``,
``safety_identifier`` and ``X-Tally-User``, in PRODUCT.md's order of precedence."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

from tally.db import UNSTORABLE_TEXT, storable
from tally.errors import InvalidInput

MAX_ID_LENGTH = 255
MAX_METADATA_KEYS = 20
MAX_METADATA_KEY_LENGTH = 100
MAX_METADATA_VALUE_LENGTH = 1000  # a string's characters; another value's as JSON text
MAX_METADATA_LENGTH = 8000  # the whole list as JSON text
MAX_TAGS = 10
MAX_TAG_LENGTH = 100
MAX_TEXT_LENGTH = 255
MAX_URL_LENGTH = 2048
EMAIL_RE = re.compile(r"[^@\s]+@[^@\s]+\.[^@\s.]+")


@dataclass(frozen=True)
class EndUserClaim:
    """The end user a request is made for, and where the claim came from."""

    external_id: str
    # "key", "token" (verified), "identity", "user", "safety_identifier" or "header"
    source: str
    profile: dict[str, Any] = field(default_factory=dict)

    @property
    def param(self) -> str:
        """The request field an error about this claim should name."""
        return PARAMS.get(self.source, self.source)

    @property
    def carries_profile(self) -> bool:
        """True when the profile is the end user's own (``identity``, or a verified
        token's claims) and may update the stored profile."""
        return self.source in ("identity", "token")


PARAMS = {"identity": "identity.id", "header": "X-Tally-User", "token": "X-Tally-User-Token"}


def resolve_end_user(
    body: dict[str, Any],
    header: str | None,
    bound_external_id: str | None,
    verified: EndUserClaim | None = None,
) -> EndUserClaim | None:
    """The request's end user, or None for an anonymous request.

    A key bound to a user wins over anything the client sends, so a client cannot
    impersonate; next a ``verified`` end-user token (tally.verification.tokens) wins over what the
    body or X-Tally-User claim. The client's fields are still validated so bad input is
    refused the same way whichever key is used.
    """
    claim = None
    if body.get("identity") is not None:
        claim = parse_identity(body["identity"])
    elif body.get("user") is not None:
        claim = EndUserClaim(_user_id(body["user"], "user"), "user")
    elif body.get("safety_identifier") is not None:
        claim = EndUserClaim(
            _user_id(body["safety_identifier"], "safety_identifier"), "safety_identifier"
        )
    elif header is not None and header.strip():
        claim = EndUserClaim(_user_id(header.strip(), "X-Tally-User"), "header")
    if bound_external_id is not None:
        return EndUserClaim(bound_external_id, "key")
    return verified if verified is not None else claim


def parse_identity(value: Any) -> EndUserClaim:
    """Validate orq.ai's ``identity`` object and return the claim with its profile.

    Fields orq.ai does not define are ignored: they are never stored nor sent upstream.
    """
    if not isinstance(value, dict):
        raise _invalid("identity", "identity must be an object with at least an 'id'")
    external_id = _user_id(value.get("id"), "identity.id")
    profile: dict[str, Any] = {}
    for name, limit in (("display_name", MAX_TEXT_LENGTH), ("logo_url", MAX_URL_LENGTH)):
        if value.get(name) is not None:
            profile[name] = _text(value[name], f"identity.{name}", limit)
    if value.get("email") is not None:
        email = _text(value["email"], "identity.email", 320)
        if not EMAIL_RE.fullmatch(email):
            raise _invalid("identity.email", "identity.email must be a valid e-mail address")
        profile["email"] = email
    if value.get("metadata") is not None:
        profile["metadata"] = _metadata(value["metadata"])
    if value.get("tags") is not None:
        profile["tags"] = _tags(value["tags"])
    return EndUserClaim(external_id, "identity", profile)


def _user_id(value: Any, param: str) -> str:
    if not isinstance(value, str):
        raise _invalid(param, f"{param} must be a string of 1 to {MAX_ID_LENGTH} characters")
    if not 1 <= len(value) <= MAX_ID_LENGTH:
        raise _invalid(
            param, f"{param} must be 1 to {MAX_ID_LENGTH} characters long, got {len(value)}"
        )
    return _storable(value, param)


def _text(value: Any, param: str, limit: int) -> str:
    if not isinstance(value, str):
        raise _invalid(param, f"{param} must be a string")
    if len(value) > limit:
        raise _invalid(param, f"{param} must be at most {limit} characters, got {len(value)}")
    return _storable(value, param)


def _storable(value: str, param: str) -> str:
    """``value``, when every backend can store it (no NUL, no lone surrogate)."""
    if not storable(value):
        raise _invalid(param, f"{param} {UNSTORABLE_TEXT}")
    return value


def _metadata(value: Any) -> list[dict[str, Any]]:
    param = "identity.metadata"
    if not isinstance(value, list) or not all(isinstance(item, dict) for item in value):
        raise _invalid(param, "identity.metadata must be a list of objects")
    keys = sum(len(item) for item in value)
    if keys > MAX_METADATA_KEYS:
        raise _invalid(
            param,
            f"identity.metadata may hold at most {MAX_METADATA_KEYS} keys in all, got {keys}",
        )
    for item in value:
        for name, entry in item.items():
            _metadata_entry(name, entry)
    if not all(storable(text) for text in _strings(value)):
        raise _invalid(param, f"identity.metadata's keys and values {UNSTORABLE_TEXT}")
    size = len(_json_text(value))
    if size > MAX_METADATA_LENGTH:
        raise _invalid(
            param,
            f"identity.metadata must be at most {MAX_METADATA_LENGTH} characters as JSON, "
            f"got {size}",
        )
    return value


def _metadata_entry(name: str, entry: Any) -> None:
    """One key and its value, each within its size."""
    param = "identity.metadata"
    if len(name) > MAX_METADATA_KEY_LENGTH:
        raise _invalid(
            param,
            f"each key of identity.metadata must be at most {MAX_METADATA_KEY_LENGTH} "
            f"characters, got {len(name)}",
        )
    size = len(entry) if isinstance(entry, str) else len(_json_text(entry))
    if size > MAX_METADATA_VALUE_LENGTH:
        raise _invalid(
            param,
            f"identity.metadata[{name!r}] must be at most {MAX_METADATA_VALUE_LENGTH} "
            f"characters, got {size}",
        )


def _strings(value: Any):
    """Every string in a JSON value, keys included."""
    pending = [value]
    while pending:
        item = pending.pop()
        if isinstance(item, str):
            yield item
        elif isinstance(item, dict):
            yield from item
            pending.extend(item.values())
        elif isinstance(item, list):
            pending.extend(item)


def _json_text(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def _tags(value: Any) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(tag, str) for tag in value):
        raise _invalid("identity.tags", "identity.tags must be a list of strings")
    if len(value) > MAX_TAGS:
        raise _invalid(
            "identity.tags", f"identity.tags may hold at most {MAX_TAGS} tags, got {len(value)}"
        )
    for tag in value:
        if len(tag) > MAX_TAG_LENGTH:
            raise _invalid(
                "identity.tags",
                f"each of identity.tags must be at most {MAX_TAG_LENGTH} characters",
            )
        if not storable(tag):
            raise _invalid("identity.tags", f"each of identity.tags {UNSTORABLE_TEXT}")
    return value


def _invalid(param: str, message: str) -> InvalidInput:
    return InvalidInput(message, field=param, code="invalid_identity")
