"""Ctrl-C: holding it off while something must be recorded whole, and the database
connection it may have cut in the middle of a query."""

import contextlib
import signal
import threading

from django.db import connection, transaction


@contextlib.contextmanager
def sigint_held():
    """Ignore Ctrl-C while something must be recorded (signals: main thread only)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


@contextlib.contextmanager
def sigint_deferred():
    """Hold a Ctrl-C until the block is done, then raise it: for steps that must not be
    cut in half (record a run and publish it). Main thread only, as signals are."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    caught = []
    previous = signal.signal(signal.SIGINT, lambda number, frame: caught.append(number))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
        if caught:  # the operator's Ctrl-C wins over whatever else the block raised
            raise KeyboardInterrupt


def caused_by_interrupt(error: BaseException) -> bool:
    """Whether `error` was raised while a Ctrl-C was being handled: Django's cleanup of a
    transaction cut by one (atomic's set_autocommit on a connection still busy with the
    COMMIT) raises a database error that hides the KeyboardInterrupt behind it."""
    seen = set()
    while error is not None and id(error) not in seen:
        if isinstance(error, KeyboardInterrupt):
            return True
        seen.add(id(error))
        error = error.__cause__ or error.__context__
    return False


@contextlib.contextmanager
def atomic_whole_commit():
    """transaction.atomic(), except that a Ctrl-C during its COMMIT or ROLLBACK waits
    until that is done and is raised after it: the caller then knows whether the block
    committed (a KeyboardInterrupt from inside the block still rolls it back)."""
    block = transaction.atomic()
    block.__enter__()
    try:
        yield
    except BaseException as error:
        with sigint_deferred():
            block.__exit__(type(error), error, error.__traceback__)  # rolls back
        raise
    with sigint_deferred():
        block.__exit__(None, None, None)


def reset_interrupted_connection() -> None:
    """A Ctrl-C can land in the middle of a query, leaving the connection busy (psycopg:
    "connection in transaction status ACTIVE") or, on SQLite, holding its lock. Roll back
    and drop it; the next query reconnects. Inside an atomic block, leave it to atomic."""
    if connection.in_atomic_block:
        return
    raw = connection.connection
    if raw is not None:
        with contextlib.suppress(Exception):
            raw.rollback()
    with contextlib.suppress(Exception):
        connection.close()
