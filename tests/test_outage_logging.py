"""A database outage in the logs: one line per failed attempt, the first traceback once
when the database answers again (outage.py)."""

import logging

import pytest
from django.db import OperationalError

from maintenance.outage import OUTAGE, Outage, quiet_outages_of


@pytest.fixture
def outage_logger(caplog):
    caplog.set_level(logging.INFO)
    quiet_outages_of("tests.outage")
    OUTAGE.answered()  # start from no outage
    caplog.clear()
    return logging.getLogger("tests.outage")


def _failure(text: str) -> OperationalError:
    try:
        raise OperationalError(text)
    except OperationalError as error:
        return error


def test_each_failed_attempt_is_one_line_and_the_traceback_comes_once_at_the_end(
    outage_logger, caplog
):
    for _ in range(3):
        error = _failure("connection refused\n\tIs the server running on that host?")
        outage_logger.error("Database gave error: %r", error, exc_info=error)
    lines = [record.getMessage() for record in caplog.records]
    assert len(lines) == 3
    assert all("\n" not in line and "Traceback" not in line for line in lines)
    assert lines[2].endswith("(database error 3 in a row)")
    assert all(record.exc_info is None for record in caplog.records)
    caplog.clear()

    OUTAGE.answered()
    OUTAGE.answered()  # nothing more to say
    [ended] = caplog.records
    text = ended.getMessage()
    assert "the database answers again after 3 failed attempts" in text
    assert text.count("Traceback") == 1 and "connection refused" in text


def test_other_errors_keep_their_traceback(outage_logger, caplog):
    try:
        raise ValueError("a bug")
    except ValueError:
        outage_logger.exception("run failed")
    [record] = caplog.records
    assert record.exc_info is not None


def test_an_outage_counts_from_its_first_failure():
    outage = Outage()
    assert outage.failed(_failure("the first")) == 1
    assert outage.failed(_failure("the second")) == 2
    assert "the first" in outage.first and "the second" not in outage.first
