"""Holding Ctrl-C off while something must be recorded whole."""

import contextlib
import signal
import threading


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
    if caught:
        raise KeyboardInterrupt
