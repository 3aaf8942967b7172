"""What the browser tests share besides their fixtures (tests/browser/conftest.py): the
viewport sizes, logging in through the form, and watching for CSP violations."""

from __future__ import annotations

from tests.helpers.console import PASSWORD

LAPTOP = {"width": 1280, "height": 800}
DESKTOP = {"width": 1366, "height": 900}
PHONE = {"width": 390, "height": 844}

# Every CSP violation of a page is kept in window.cspViolations and logged as a console
# error (which the ``page`` fixture fails on), with what was blocked and where.
WATCH_CSP = """
window.cspViolations = [];
document.addEventListener("securitypolicyviolation", function (event) {
  var text = "Content Security Policy violation: " + event.violatedDirective + " blocked "
    + (event.blockedURI || "inline") + " at " + event.sourceFile + ":" + event.lineNumber
    + " " + (event.sample || "");
  window.cspViolations.push(text);
  console.error(text);
});
"""


def watch_csp(page) -> None:
    """Record every CSP violation of ``page`` from its next navigation on."""
    page.add_init_script(WATCH_CSP)


def csp_violations(page) -> list[str]:
    """The CSP violations of the page loaded now."""
    return page.evaluate("window.cspViolations || []")


def log_in(page, base_url: str, email: str) -> None:
    """Log in through the form, as a person would."""
    page.goto(base_url + "/login")
    page.fill("input[name=email]", email)
    page.fill("input[name=password]", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url(base_url + "/")
