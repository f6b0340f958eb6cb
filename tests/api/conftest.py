from tests.dashboard.conftest import login, users, world  # noqa: F401  (shared fixtures)
