"""The notification fixtures (real SMTP server, world, settings) live with tests/notify."""

from tests.notify.conftest import *  # noqa: F403
