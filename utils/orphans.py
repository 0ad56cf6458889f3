"""Worker processes that end with their parent (Linux).

A process whose parent is SIGKILLed (the OOM killer, a dead rank, a killed server) is
otherwise adopted by init and lives on: a DataLoader worker blocked on its queue stays
forever.  Imports nothing heavy, so a worker can call it before Paddle is imported.
"""
import ctypes
import multiprocessing
import os
import signal

PR_SET_PDEATHSIG = 1


def die_with_parent(*_):
    """Ask the kernel to send this process SIGTERM when its parent ends, however it ends.

    The kernel ties the signal to the parent *thread* that forked this process: every
    caller here is forked or spawned from the parent's main thread (DataLoader iterators
    and the server's pool are created there), which ends only with the process.  SIGTERM,
    not SIGKILL, so a DataLoader worker's handler (Paddle's) can unlink its shared-memory
    segments; it skips that when the signal seems to come from its parent, as a death
    signal can, so segments may remain.  Any arguments are ignored, so it can be a
    DataLoader's worker_init_fn."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):
        return
    parent = multiprocessing.parent_process()
    if parent is not None and os.getppid() != parent.pid:  # it ended before prctl
        os.kill(os.getpid(), signal.SIGTERM)


def ended(pid):
    """True when process `pid` has exited (a zombie or gone)."""
    try:
        with open(f'/proc/{pid}/stat', encoding='ascii') as f:
            return f.read().rsplit(')', 1)[1].split()[0] in ('Z', 'X')
    except (OSError, IndexError):
        return True
