"""The console's routes as the app's URL map lists them, a world for them to act on, and
a form for each state change that would really change something if nothing refused it.

The walks (tests/console/test_every_route.py) take their routes from ``app.url_map``,
never from a list: a route added tomorrow is walked tomorrow. A route without a sample
form here is still walked (with an empty form); the sample forms only make sure that a
missing check would show as a change in the database.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy import select
from werkzeug.routing import Rule

from tally.db import utcnow
from tally.keys.admin_tokens import create_admin_token
from tally.keys.api_keys import create_api_key
from tally.limits.policy_store import set_policy
from tally.models import EndUser, Operator
from tally.sinks.admin import add_sink
from tally.usage.price_table import set_price
from tests.helpers.console import PASSWORD
from tests.helpers.rows import configure, record_traffic

CONSOLE_BLUEPRINTS = ("console", "auth")
CHANGING = ("POST", "PUT", "PATCH", "DELETE")
# What the console says for a refused CSRF token (templates/errors/error.html).
CSRF_MESSAGE = "This form has expired. Reload the page and try again."
USER = "walk-user-1"
MODEL = "walk/priced-model"
REQUEST_ID = "walk-request-1"  # the end user's one call, for /requests/<request_id>


@dataclass(frozen=True)
class World:
    """What the routes' ids point at: one of each thing the console manages."""

    admin_email: str
    operator_id: int  # another operator (support), for the role and active switches
    key_id: int
    token_id: int
    revision_id: int  # an earlier config revision, to roll back to
    user_id: int
    user: str  # that end user's internal id
    sink_id: int  # a webhook sink

    def argument(self, name: str) -> object:
        """The value of URL argument ``name``; an argument no world object answers gets
        1 (ids start at 1; any converter takes it), so a new route is still walked."""
        known = {
            "operator_id": self.operator_id,
            "key_id": self.key_id,
            "token_id": self.token_id,
            "revision_id": self.revision_id,
            "user_id": self.user_id,
            "fmt": "csv",
            "request_id": REQUEST_ID,
            "sink_id": self.sink_id,
        }
        return known.get(name, 1)


def build_world(app, admin_email: str, support_email: str) -> World:
    """One of everything: a key, an admin token, two config revisions, an end user with
    traffic and a limit override, a price."""
    with app.extensions["tally"].sessions() as session:
        key, _ = create_api_key(session, "walk-key", "test")
        token, _ = create_admin_token(session, "walk-token", "test")
        call = {
            "user": USER,
            "tokens": 10,
            "cost": 0.01,
            "when": utcnow(),
            "request_id": REQUEST_ID,
        }
        record_traffic(session, [call])
        set_policy(session, f"user:{USER}", {"messages": 50}, "test")
        set_price(session, MODEL, 1.0, 2.0, None, "test")
        user_id = session.scalar(select(EndUser.id).where(EndUser.external_id == USER))
        operator_id = session.scalar(select(Operator.id).where(Operator.email == support_email))
        ids = (key.id, token.id)
        secret_key = app.extensions["tally"].settings.secret_key
        sink, _ = add_sink(session, secret_key, "walk-sink", "webhook", "https://x.example", "t")
    configure(app, prefix="walk")  # revision 2 is active: revision 1 can be rolled back to
    return World(admin_email, operator_id, *ids, 1, user_id, USER, sink.id)


def console_rules(app) -> list[Rule]:
    """Every rule of the console and its login, in a stable order."""
    rules = [r for r in app.url_map.iter_rules() if r.endpoint.split(".")[0] in CONSOLE_BLUEPRINTS]
    return sorted(rules, key=lambda r: (r.rule, r.endpoint))


def state_changes(app) -> list[tuple[Rule, str]]:
    """Every (rule, method) of the console that may change something."""
    return [(r, m) for r in console_rules(app) for m in sorted(r.methods & set(CHANGING))]


def pages(app) -> list[Rule]:
    """Every console rule that answers GET."""
    return [r for r in console_rules(app) if "GET" in r.methods]


def url_of(rule: Rule, world: World) -> str:
    """The rule's path with the world's ids in it."""
    values = {name: world.argument(name) for name in rule.arguments}
    _, path = rule.build(values)
    return path


NEW_PASSWORD = "walking the console route by route 7"
# endpoint -> the form that makes it change something in ``world``
SAMPLE_FORMS: dict[str, Callable[[World], dict[str, str]]] = {
    "auth.login": lambda w: {"email": w.admin_email, "password": PASSWORD},
    "auth.logout": lambda w: {},
    "auth.password": lambda w: {"current_password": PASSWORD, "new_password": NEW_PASSWORD},
    "console.config_save": lambda w: {"prefix": "walked", "comment": "a walk"},
    "console.config_rollback": lambda w: {},
    "console.identity_erase": lambda w: {"confirm": w.user},
    "console.idp_save": lambda w: {
        "issuer": "https://idp.example.com/",
        "jwks_url": "https://idp.example.com/.well-known/jwks.json",
    },
    "console.idp_test": lambda w: {"token": "not-a-token"},
    "console.keys_create": lambda w: {"name": "walked-key"},
    "console.keys_revoke": lambda w: {},
    "console.keys_admin_token_create": lambda w: {"name": "walked-token"},
    "console.keys_admin_token_revoke": lambda w: {},
    "console.limits_set": lambda w: {"scope": "tier:walked", "messages": "5"},
    "console.limits_unset": lambda w: {"scope": f"user:{w.user}"},
    "console.limits_tier_key": lambda w: {"tier_key": "walked"},
    "console.limits_reset": lambda w: {"scope": f"user:{w.user}"},
    "console.operators_create": lambda w: {
        "email": "walked@example.com",
        "role": "support",
        "password": NEW_PASSWORD,
    },
    "console.operators_role": lambda w: {"role": "admin"},
    "console.operators_active": lambda w: {"active": "off"},
    "console.prices_set": lambda w: {"model": "walk/other", "prompt": "1", "completion": "2"},
    "console.prices_remove": lambda w: {"model": MODEL},
    "console.sinks_add": lambda w: {
        "name": "walked",
        "kind": "webhook",
        "url": "https://w.example",
    },
    "console.sinks_remove": lambda w: {},
    "console.sinks_replay": lambda w: {"from": "2020-01-01"},
}
# POST routes that change nothing by design, with the reason.
READ_ONLY_POSTS = {
    "console.idp_test": "tries a pasted token; never stores it",
}


def sample_form(endpoint: str, world: World) -> dict[str, str]:
    """The form that would make ``endpoint`` change something (empty when none is known)."""
    make = SAMPLE_FORMS.get(endpoint)
    return make(world) if make else {}
