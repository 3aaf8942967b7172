"""The console's test client: logs in and sends the CSRF token the way the browser does
(from the page's meta tag). Fixtures built on it are in tests.plugins.console."""

from __future__ import annotations

import re

PASSWORD = "correct horse battery"
CSRF_META = re.compile(r'<meta name="csrf-token" content="([^"]+)"')
SECRET = re.compile(r'id="new-key" readonly value="(tly_[^"]+)"')  # a new key, shown once


class Console:
    """Flask's test client, speaking to the console as a browser would."""

    def __init__(self, app, email: str | None = None):
        self.app = app
        self.client = app.test_client()
        self.email = email
        self._token: str | None = None

    def csrf_token(self) -> str:
        """The CSRF token of the current session, read from a page's meta tag."""
        if self._token is None:
            page = self.client.get("/login")
            if page.status_code != 200:  # logged in: /login redirects
                page = self.client.get("/limits")
            self._token = CSRF_META.search(page.get_data(as_text=True)).group(1)
        return self._token

    def login(self, email: str, password: str = PASSWORD, **extra):
        """Post the login form; the session (and its CSRF token) is new afterwards."""
        data = {"email": email, "password": password, "csrf_token": self.csrf_token(), **extra}
        response = self.client.post("/login", data=data)
        self.session_renewed()
        return response

    def session_renewed(self) -> None:
        """Forget the CSRF token: the session is new (a login, a password change), and
        the next form reads the new session's token from a page, as a browser would."""
        self._token = None

    def get(self, url: str, htmx: bool = False, **kwargs):
        """GET, as HTMX (``HX-Request: true``) when ``htmx``."""
        headers = kwargs.pop("headers", {})
        if htmx:
            headers["HX-Request"] = "true"
        return self.client.get(url, headers=headers, **kwargs)

    def post(self, url: str, data: dict | None = None, htmx: bool = False, csrf: bool = True):
        """POST a form with the CSRF token in the header, as hx-headers sends it (or in
        the form, as a plain form post does); ``csrf=False`` sends none."""
        headers = {"HX-Request": "true"} if htmx else {}
        data = dict(data or {})
        if csrf:
            if htmx:
                headers["X-CSRFToken"] = self.csrf_token()
            else:
                data["csrf_token"] = self.csrf_token()
        return self.client.post(url, data=data, headers=headers)


def text(response) -> str:
    """The response body as text."""
    return response.get_data(as_text=True)
