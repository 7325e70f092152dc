"""A signal that lands in a finalizer is raised again, not lost (tasks/core/signals.py)."""

from __future__ import annotations

import signal
import subprocess
import sys

import pytest

from tasks.core.signals import lost_signal

STOPPED_IN_A_FINALIZER = """
import signal, sys, time
from tasks.core.signals import keep_lost_signals

class SlowToFinalize:
    def __del__(self):
        signal.raise_signal(signal.SIGTERM)  # lands here, in the finalizer (as a SIGTERM from outside can)
        time.sleep(1)

class Stop(KeyboardInterrupt):
    signal = signal.SIGTERM  # as tuneloop's Terminated: sent again as SIGTERM (SIGINT may be ignored)

def stop(number, frame):
    raise Stop

signal.signal(signal.SIGTERM, stop)
if sys.argv[1] == "kept":
    keep_lost_signals()
try:
    finalized = SlowToFinalize()
    del finalized
    time.sleep(float(sys.argv[2]))  # the training that goes on
    print("trained on")
except KeyboardInterrupt:
    print("stopped")
"""


@pytest.mark.parametrize("kept", [True, False], ids=["kept", "python-default"])
def test_a_signal_that_lands_in_a_finalizer_stops_the_process_instead_of_being_lost(kept: bool) -> None:
    """Python's default prints the handler's exception as 'Exception ignored' and goes on (the
    process trains on after it was told to stop); with keep_lost_signals the signal arrives again
    after the finalizer and stops it, and nothing is printed."""
    script = [sys.executable, "-c", STOPPED_IN_A_FINALIZER, "kept" if kept else "default", "60" if kept else "1"]
    done = subprocess.run(script, capture_output=True, text=True, timeout=120)
    if kept:
        assert done.stdout.strip() == "stopped" and done.stderr == "", done.stderr
    else:  # what keep_lost_signals is for
        assert done.stdout.strip() == "trained on" and "Exception ignored" in done.stderr, done.stderr


def test_a_process_started_with_sigterm_blocked_can_be_stopped() -> None:
    """A process inherits the signal mask of the thread that started it; keep_lost_signals unblocks
    SIGINT and SIGTERM, so that a trial process started from such a thread can be stopped."""
    script = (
        "import signal\n"
        "from tasks.core.signals import keep_lost_signals\n"
        "signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})\n"
        "keep_lost_signals()\n"
        "print(sorted(int(number) for number in signal.pthread_sigmask(signal.SIG_BLOCK, [])))\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert done.stdout.strip() == "[]", done.stderr


def test_only_a_signal_is_delivered_again() -> None:
    """Prefect's TerminationSignal and tuneloop's Terminated carry their signal; Ctrl-C is SIGINT;
    an ordinary error in a finalizer stays Python's to report."""
    from prefect.exceptions import TerminationSignal

    from flows.console import Terminated

    assert lost_signal(TerminationSignal(signal.SIGTERM)) == signal.SIGTERM
    assert lost_signal(Terminated()) == signal.SIGTERM
    assert lost_signal(KeyboardInterrupt()) == signal.SIGINT
    assert lost_signal(ValueError("in __del__")) is None and lost_signal(None) is None
