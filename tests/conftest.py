"""The tests' fixtures, one plugin per concern (tests/plugins/), and the autouse guard
that fails any test trying to reach beyond the loopback interface. Helpers the tests
import are in tests/helpers/."""

pytest_plugins = [
    "tests.plugins.network_guard",  # autouse: loopback only
    "tests.plugins.database",  # database_url
    "tests.plugins.apps",  # make_app, app, client, runner, db, make_key
    "tests.plugins.servers",  # upstream, serve, tally, gunicorn
    "tests.plugins.identity_provider",  # jwks, idp, user_key
    "tests.plugins.console",  # make_operator, make_console, admin, support, tally_admin
    "tests.plugins.breakdowns",  # workload
    "tests.plugins.traces",  # collector, otel_env, traced
]
