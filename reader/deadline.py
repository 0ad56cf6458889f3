"""A deadline for decoding one video, so a file that hangs the decoder cannot stall an epoch.

Soft limit: SIGALRM raises `VideoTimeout` in Python code (and interrupts blocking I/O);
the caller turns it into a counted skip.  Hard limit, in DataLoader worker processes
only: if the decoder is stuck inside C code where Python cannot interrupt it,
faulthandler's watchdog thread ends the worker at twice the deadline; the training loop
then restarts the workers after that batch (see training.loader.resilient_batches).
"""
import contextlib
import faulthandler
import signal
import threading


class VideoTimeout(Exception):
    pass


def _raise_timeout(signum, frame):
    raise VideoTimeout()


@contextlib.contextmanager
def deadline(seconds, hard=False):
    """Limit the body to `seconds` (0: no limit).  Only in the main thread of a process."""
    if not seconds or threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGALRM, _raise_timeout)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    if hard:
        faulthandler.dump_traceback_later(2 * seconds, exit=True)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        if hard:
            faulthandler.cancel_dump_traceback_later()
        signal.signal(signal.SIGALRM, previous)
