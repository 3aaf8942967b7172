"""Operator login and logout (flask-login). Failed logins are throttled per account and
per IP, and a browser that signed in before per its device cookie (OWASP's pattern:
tally/operators/throttle.py, blueprints/device_cookies.py), on flask-limiter's storage.
A successful login is never counted."""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass
from urllib.parse import unquote, urljoin, urlsplit

from flask import (
    Blueprint,
    abort,
    current_app,
    flash,
    redirect,
    render_template,
    request,
    session,
)
from flask_limiter.util import get_remote_address
from flask_login import UserMixin, current_user, login_user, logout_user
from werkzeug.exceptions import HTTPException
from werkzeug.routing import RoutingException

from blueprints.console.base import get_db, login_redirect, refuse_nul_characters, runtime
from blueprints.device_cookies import device_nonce, set_device_cookie
from blueprints.extensions import limiter, login_manager
from tally.errors import LimitsUnavailable
from tally.operators.accounts import (
    OperatorError,
    authenticate_operator,
    change_password,
    end_sessions,
    get_operator,
    operator_id_of,
    session_is_current,
)
from tally.operators.throttle import Attempt, LoginThrottle

bp = Blueprint("auth", __name__)

LOGIN_FAILED = 422


@dataclass(frozen=True)
class CurrentOperator(UserMixin):
    """The logged-in operator, reloaded from the database on every request, so a role
    change or a disabled account takes effect at once."""

    id: int
    email: str
    role: str
    nonce: str = ""

    @property
    def is_admin(self) -> bool:
        """Admins may change things; support operators only look."""
        return self.role == "admin"

    def get_id(self) -> str:
        """What the session cookie holds: the id and the operator's session nonce, so a
        new nonce (logout, password change, disable) ends every copy of the cookie."""
        return f"{self.id}:{self.nonce}"

    @classmethod
    def of(cls, operator) -> CurrentOperator:
        """The logged-in form of an Operator row."""
        return cls(operator.id, operator.email, operator.role, operator.session_nonce)


@login_manager.user_loader
def load_operator(session_id: str) -> CurrentOperator | None:
    """The operator of a session cookie, or None when unknown, disabled, or the cookie's
    session was ended (its nonce is not the operator's current one)."""
    operator_id, _, nonce = session_id.partition(":")
    if not operator_id.isdigit():
        return None
    with runtime().sessions() as db:
        operator = get_operator(db, int(operator_id))
        if operator is None or not operator.is_active or not session_is_current(operator, nonce):
            return None
        return CurrentOperator.of(operator)


def _throttle() -> LoginThrottle:
    config = current_app.config
    return LoginThrottle(
        limiter.limiter,
        config["LOGIN_LIMIT_PER_ACCOUNT"],
        config["LOGIN_LIMIT_PER_IP"],
        config["LOGIN_LIMIT_PER_DEVICE"],
    )


def _attempt(email: str) -> Attempt:
    """The attempt of this request: the e-mail, the client's address (ProxyFix's, behind
    trusted proxies), and its device cookie's nonce when valid for that account."""
    return Attempt(email, get_remote_address(), device_nonce(operator_id_of(get_db(), email)))


_HOST = "console.invalid"  # a stand-in host to resolve ``next`` against


def _safe_next(target: str | None) -> str:
    """``next`` when it is a page of the console, else the dashboard: never an open
    redirect. Browsers strip tabs and newlines from a Location and read a backslash as a
    slash, so ``/%09/evil.example`` or ``/%5Cevil.example`` would lead off-site; a CR or LF
    cannot go in a header at all. So the raw value and its decoded path must be free of
    control characters, whitespace and backslashes, be a path (no scheme, no host, no
    ``//``) that stays on this host when resolved, and name a console page."""
    if not target or not _plain_path(target):
        return "/"
    parts = urlsplit(target)
    path = unquote(parts.path)
    if parts.scheme or parts.netloc or not _plain_path(path):
        return "/"
    if urlsplit(urljoin(f"http://{_HOST}/", target)).netloc != _HOST:
        return "/"
    try:
        endpoint, _ = current_app.url_map.bind(_HOST).match(path, method="GET")
    except (HTTPException, RoutingException):  # no page there (or only a redirect)
        return "/"
    return "/" if endpoint == "static" else target


def _plain_path(text: str) -> bool:
    """Starts with one slash; no control character, whitespace or backslash anywhere."""
    if not text.startswith("/") or text.startswith("//"):
        return False
    return not any(
        ch == "\\" or ch.isspace() or unicodedata.category(ch).startswith("C") for ch in text
    )


@bp.route("/login", methods=["GET", "POST"])
def login():
    """Show the login form; on POST, log the operator in with a fresh session and a new
    device cookie. A locked-out attempt is 429 (the password is not even checked)."""
    refuse_nul_characters()
    next_url = _safe_next(request.values.get("next"))
    if request.method == "GET":
        if current_user.is_authenticated:
            return redirect(next_url)
        return render_template("auth/login.html", next_url=next_url, email="")
    email = request.form.get("email", "")
    db, throttle = get_db(), _throttle()
    attempt = _attempt(email)
    wait = _guarded(lambda: throttle.locked_for(attempt))
    if wait is not None:
        _guarded(lambda: throttle.refused(db, attempt))
        return _locked_out(next_url, email, wait, trusted=attempt.device is not None)
    operator = authenticate_operator(db, email, request.form.get("password", ""))
    if operator is None:
        _guarded(lambda: throttle.failed(db, attempt))
        message = "Wrong e-mail or password, or the account is disabled."
        return (
            render_template("auth/login.html", next_url=next_url, email=email, error=message),
            LOGIN_FAILED,
        )
    # A new session at login: nothing from before (a planted cookie, an old CSRF token)
    # carries over.
    session.clear()
    login_user(CurrentOperator.of(operator))
    session.permanent = True
    response = redirect(next_url, 303)
    set_device_cookie(response, operator.id)
    return response


def _guarded(step):
    """Run a step of the throttle; the limit storage failing is TALLY_RATELIMIT_FAIL's
    case, as for the API's limits: ``open`` goes on unthrottled (logged), ``closed`` 503."""
    try:
        return step()
    except Exception as exc:
        limits = runtime().limits
        if limits is None or not limits.is_storage_error(exc):
            raise
        try:
            limits.storage_failed(exc, "admitting")
        except LimitsUnavailable as refused:
            abort(503, refused.message)
        return None


def _locked_out(next_url: str, email: str, wait: int, trusted: bool):
    """The login form again, 429 with Retry-After: the lockout ends by itself."""
    minutes = max(1, round(wait / 60))
    message = (
        "Too many failed attempts"
        + (" from this browser" if trusted else "")
        + ". Wait "
        + ("a minute" if minutes == 1 else f"{minutes} minutes")
        + ", then try again"
        + ("." if trusted else " (a browser you have signed in with before is not held back).")
    )
    page = render_template("auth/login.html", next_url=next_url, email=email, error=message)
    return page, 429, {"Retry-After": str(wait)}


@bp.post("/logout")
def logout():
    """End the session, server-side too: a copy of its cookie kept elsewhere is refused
    from now on (so are the operator's other sessions: logout ends them all)."""
    if current_user.is_authenticated:
        end_sessions(get_db(), current_user.id)
    logout_user()
    session.clear()
    flash("You are logged out.")
    return redirect("/login", 303)


@bp.route("/account/password", methods=["GET", "POST"])
def password():
    """Change one's own password (any role); every other session of the account ends,
    this one continues under the new nonce."""
    if not current_user.is_authenticated:
        return login_redirect()
    refuse_nul_characters()
    if request.method == "GET":
        return render_template("auth/password.html")
    db = get_db()
    try:
        operator = change_password(
            db,
            current_user.id,
            request.form.get("current_password", ""),
            request.form.get("new_password", ""),
            current_user.email,
        )
    except OperatorError as exc:
        db.rollback()
        return render_template("auth/password.html", error=str(exc)), 422
    session.clear()
    login_user(CurrentOperator.of(operator))
    session.permanent = True
    flash("Password changed. Your other sessions have ended.")
    return redirect("/", 303)
