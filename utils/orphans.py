"""Worker processes that end with their parent (Linux).

A process whose parent is SIGKILLed (the OOM killer, a dead rank, a killed server) is
otherwise adopted by init and lives on: a DataLoader worker blocked on its queue stays
forever.  Imports nothing heavy, so a worker can call it before Paddle is imported.
"""
import ctypes
import os
import signal

PR_SET_PDEATHSIG = 1


def die_with_parent(*_):
    """The kernel sends this process SIGKILL when the thread that started it ends (for
    DataLoader workers and pools: the main thread of the parent).  Any arguments are
    ignored, so it can be a DataLoader's worker_init_fn."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):
        pass
    if os.getppid() == 1:  # the parent already went before prctl
        os._exit(1)
