"""A signal whose handler raises (SIGTERM and Ctrl-C in tuneloop's commands, SIGTERM in Prefect's flow
and task runs) can land while Python runs a finalizer (an object's `__del__`, a weakref callback, a
generator being closed), which training runs all the time. Python then prints the exception as
"Exception ignored in ..." with a traceback, and the process goes on as if no signal had come:
a trial process stopped by its round trained on, and the round waited for it (seen in CI: a
SIGTERM'd sweep that did not exit in 60 s, a trial process that printed a traceback and trained on
after its pool had stopped it). `keep_lost_signals` delivers such a signal again, so that it is
raised at the next step outside the finalizer, and prints nothing for it."""

from __future__ import annotations

import signal
import sys
import threading
from typing import Any

# How long after the finalizer the signal comes again: once the hook has returned.
REDELIVERY_SECONDS = 0.05


def lost_signal(error: BaseException | None) -> int | None:
    """The signal an exception a finalizer swallowed stands for: one that carries its number
    (Prefect's TerminationSignal, tuneloop's Terminated), Ctrl-C's KeyboardInterrupt; None for
    anything else (an ordinary error in a finalizer stays Python's to report)."""
    if error is None or isinstance(error, Exception):
        return None
    number = getattr(error, "signal", None)
    if isinstance(number, int):
        return number
    return int(signal.SIGINT) if isinstance(error, KeyboardInterrupt) else None


def deliver_again(unraisable: Any) -> None:
    """sys.unraisablehook: a signal's exception lost in a finalizer is sent again as that signal to
    the main thread (where Python runs signal handlers; sent there, it also wakes a main thread that
    sleeps or waits), a moment later from another thread (its handler would run inside this hook,
    which loses it too); anything else is reported as Python reports it."""
    number = lost_signal(unraisable.exc_value)
    try:
        if number is not None:
            main = threading.main_thread().ident
            again = threading.Timer(REDELIVERY_SECONDS, signal.pthread_kill, (main, number))
            again.daemon = True  # never keeps the process from exiting
            again.start()
            return
    except RuntimeError:  # no new threads while Python shuts down: it ends anyway
        pass
    sys.__unraisablehook__(unraisable)


def keep_lost_signals() -> None:
    """Install deliver_again in this process (each command that runs flows, each trial process), and
    unblock SIGINT and SIGTERM in this thread: a process inherits the signal mask of the thread that
    started it, and one started from a thread that had them blocked could not be stopped at all."""
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT, signal.SIGTERM})
    sys.unraisablehook = deliver_again
