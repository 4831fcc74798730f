"""Telling a sweep that a user stopped (Ctrl-C, SIGTERM) from one that ended by itself.

Tune answers SIGINT by stopping its trials and returning normally, with nothing in its results
to say so. :class:`StopWatch`, a Tune callback, wraps Tune's own SIGINT handler (a callback's
``setup`` runs after Tune installs it) and records the stop first. The record is this
process's, not the callback instance's: on ``--resume`` Tune calls the copy of the callback it
unpickled from the sweep's saved state, never the instance the driver could hold.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from collections.abc import Iterator

from ray import tune

_STOPPED = threading.Event()  # set when Ctrl-C (or SIGTERM) reached a running sweep here


def reset() -> None:
    """Before a Tune run: no stop recorded."""
    _STOPPED.clear()


def stopped() -> bool:
    """Whether a user stopped the latest Tune run of this process."""
    return _STOPPED.is_set()


class StopWatch(tune.Callback):
    """Records a Ctrl-C before Tune handles it. Module-level: Tune pickles it."""

    def setup(self, **info) -> None:
        if threading.current_thread() is not threading.main_thread():
            return
        tune_handler = signal.getsignal(signal.SIGINT)

        def handler(sig, frame) -> None:
            _STOPPED.set()
            if callable(tune_handler):
                tune_handler(sig, frame)

        signal.signal(signal.SIGINT, handler)


@contextlib.contextmanager
def sigterm_stops_tune() -> Iterator[None]:
    """SIGTERM (``kill``, a scheduler's stop) ends the sweep the way Ctrl-C does: Tune catches
    SIGINT, stops its trials and returns, so the driver can record what was left unfinished."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, lambda *_: os.kill(os.getpid(), signal.SIGINT))
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
