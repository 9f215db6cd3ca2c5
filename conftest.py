"""Shared by tests/ and plugins/: close Snowpark sessions a test left open while pytest's streams still
exist (Snowpark's own atexit hook otherwise logs to streams pytest has already closed)."""

import logging
import sys

import pytest


@pytest.fixture(scope="session", autouse=True)
def _close_leftover_snowpark_sessions():
    yield
    module = sys.modules.get("snowflake.snowpark.session")
    for session in list(getattr(module, "_active_sessions", ()) or ()):
        session.close()
    logging.raiseExceptions = False  # a session closed later by Snowpark's atexit hook logs to closed streams
