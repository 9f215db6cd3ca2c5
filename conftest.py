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


@pytest.fixture(autouse=True)
def _restore_logging_handlers():
    """`mlops run` called in-process configures logging (Hydra's job logging) on the streams pytest is
    capturing for that test; put every logger's handlers back afterwards, so that a later record is not
    written to a stream pytest has closed."""
    def loggers():
        return [logging.getLogger(), *(logger for logger in logging.Logger.manager.loggerDict.values()
                                       if isinstance(logger, logging.Logger))]

    saved = {logger: list(logger.handlers) for logger in loggers()}
    yield
    for logger in loggers():
        logger.handlers[:] = saved.get(logger, [])
