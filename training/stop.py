"""Stopping a training run on request: SIGINT/SIGTERM end it after the current step with a
resumable checkpoint (StopRequest), and Interrupted says how to resume."""
import logging
import signal

logger = logging.getLogger(__name__)


class StopRequest:
    """SIGINT/SIGTERM ask training to stop after the current step and save a resumable
    checkpoint; installed by train_job only (no handlers at import)."""

    def __init__(self):
        self.signal = None
        self._previous = {}

    def __enter__(self):
        for sig in (signal.SIGINT, signal.SIGTERM):
            self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc):
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)

    def _handle(self, signum, frame):
        if self.signal is not None:  # a second signal: stop now
            raise KeyboardInterrupt
        self.signal = signum
        logger.warning("got %s: stopping after this step and saving a checkpoint",
                       signal.Signals(signum).name)

    def asked(self):
        """This process was asked to stop (the training loop tells the other ranks)."""
        return self.signal is not None

    def requested(self, ranks):
        """True on every rank when any rank was asked to stop."""
        return ranks.any(self.asked())


class Interrupted(Exception):
    """Training stopped by a signal after saving; the message says how to resume."""
