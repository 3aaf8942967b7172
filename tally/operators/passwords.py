"""How strong an operator's new password must be: zxcvbn (Dropbox's estimator, kept on
PyPI as ``zxcvbn``) scores it from 0 to 4 against its dictionaries of common passwords,
names, words and keyboard patterns, plus the words of this account and this product, and
a score below :data:`MIN_SCORE` is refused with zxcvbn's own reason and advice.

Checked wherever a password is set: the CLI's ``operators create``, an admin adding an
operator in the console, an operator changing their own password."""

from __future__ import annotations

import re
import threading

from zxcvbn import zxcvbn

MIN_SCORE = 3  # zxcvbn: "safely unguessable: moderate protection from offline slow-hash"
# zxcvbn refuses longer input (its matching grows quickly with length); characters past
# it only add to the strength of what it scored.
SCORED_LENGTH = 72
# Words an attacker aiming at this console would try first.
PRODUCT_WORDS = (
    "tally",
    "gateway",
    "console",
    "admin",
    "administrator",
    "support",
    "operator",
    "operators",
    "llm",
    "openai",
    "openrouter",
    "router",
    "orq",
    "proxy",
    "login",
    "password",
)
ADVICE = "Use a longer passphrase of several unrelated words."
# zxcvbn keeps the user inputs of the call in a module-level dictionary while it scores:
# two threads (gthread workers) scoring at once would see each other's.
_scoring = threading.Lock()


def user_inputs(email: str) -> list[str]:
    """What zxcvbn should treat as known to an attacker: the e-mail, its local part and
    the words in it, the domain and its labels (also without their punctuation), and the
    product's own words."""
    email = email.strip().lower()
    local, _, domain = email.partition("@")
    words = [email, local, domain]
    labels = domain.split(".")
    words += re.split(r"[^a-z0-9]+", local) + labels
    # the same without their dots and dashes: jane.doe as janedoe, acme-corp as acmecorp
    words += [re.sub(r"[^a-z0-9]+", "", w) for w in (local, *labels)]
    words += PRODUCT_WORDS
    return list(dict.fromkeys(w for w in words if w))


def password_weakness(password: str, email: str) -> str | None:
    """Why ``password`` is too easy to guess for the account ``email``, and how to choose
    a better one (one line), or None when it is strong enough."""
    with _scoring:
        result = zxcvbn(password[:SCORED_LENGTH], user_inputs=user_inputs(email))
    if result["score"] >= MIN_SCORE:
        return None
    feedback = result.get("feedback") or {}
    reason = (feedback.get("warning") or "").strip().rstrip(".")
    if not reason:
        reason = "it is short, common or made of your e-mail or this product's words"
    tips = [tip.strip() for tip in feedback.get("suggestions") or [] if tip.strip()]
    return " ".join(
        [f"the password is too easy to guess: {reason[:1].lower()}{reason[1:]}.", ADVICE, *tips]
    )
