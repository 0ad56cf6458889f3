"""Worker processes that end with their parent (Linux).

A process whose parent is SIGKILLed (the OOM killer, a dead rank, a killed server) is
otherwise adopted by init and lives on: a DataLoader worker blocked on its queue stays
forever.  Imports nothing heavy, so a worker can call it before Paddle is imported.

How: the kernel sends the worker DEATH_SIGNAL when its parent dies (PR_SET_PDEATHSIG), and
a watchdog thread of the worker, the only one that takes that signal, ends the worker
with SIGTERM sent to itself.  Why not simply PR_SET_PDEATHSIG(SIGTERM), or SIGKILL:

- SIGKILL leaves the worker's /dev/shm/paddle_* files behind.  Paddle's DataLoader worker
  handles SIGTERM in C by unlinking them first (data_loader.cc), except when the SIGTERM
  comes from its parent (si_pid == getppid(): the parent's own shutdown), where it only
  _exit(0)s.  A parent-death signal carries the dying parent's pid, and the kernel sends
  it when the parent's *thread* that forked the worker ends: with a multi-threaded parent
  that thread may end before the others, the worker then still has the same parent pid,
  and Paddle takes the signal for a normal shutdown and leaves its files (most times, in
  a test: docs/failures.md).  A SIGTERM the worker sends itself is never taken for one.
- The signal would also come when a parent's short-lived thread that forked the worker
  ends, under a living parent: it is asked for only when the parent's main thread forked
  (recorded at fork), or when that cannot be told (a spawned child).

The watchdog also checks every WATCH_INTERVAL s that the parent is the same, the fallback
for every case the signal does not cover (not asked for, no prctl).
"""
import ctypes
import multiprocessing
import os
import signal
import threading
import time

PR_SET_PDEATHSIG = 1
DEATH_SIGNAL = signal.SIGUSR2  # used by nothing else in a worker; blocked, taken by the watchdog
WATCH_INTERVAL = 1.0  # s between the fallback's checks of the parent
SI_USER = 0  # siginfo's si_code of a signal the kernel sends on a parent's death
GRACE = 5.0  # s SIGTERM is given before SIGKILL (SIGTERM ignored, or handled without exiting)

# Recorded in the parent just before every fork, inherited by the child; None in a process
# not forked from one that had imported this module (spawned: unknown).
_parent_main_ident = None


def _note_main_thread():
    global _parent_main_ident
    _parent_main_ident = threading.main_thread().ident


if hasattr(os, 'register_at_fork'):
    os.register_at_fork(before=_note_main_thread)


def _forked_by_main_thread():
    """In a forked child, whether the parent's main thread forked it (the child's only
    thread is a copy of the forking one, ident included); None when unknown."""
    if _parent_main_ident is None:
        return None
    return threading.get_ident() == _parent_main_ident


def _parent_pid():
    """The pid the parent had when this process started (multiprocessing records it)."""
    parent = multiprocessing.parent_process()
    return parent.pid if parent is not None else os.getppid()


def die_with_parent(*_):
    """End this process, with SIGTERM, soon after its parent ends, however the parent
    ends (SIGKILL included).  Call it first thing in the child, from its main thread (a
    DataLoader's worker_init_fn, a pool's initializer): any arguments are ignored."""
    parent = _parent_pid()
    pdeath = False
    if _forked_by_main_thread() is not False and hasattr(signal, 'pthread_sigmask'):
        try:
            # blocked before the worker starts its own threads, so they have it blocked
            # too and only the watchdog takes it (sigtimedwait); a thread already running
            # (a spawned child's OpenBLAS pool) may take it instead, and its default
            # action ends the process at once
            signal.pthread_sigmask(signal.SIG_BLOCK, {DEATH_SIGNAL})
            libc = ctypes.CDLL(None, use_errno=True)
            pdeath = libc.prctl(PR_SET_PDEATHSIG, int(DEATH_SIGNAL)) == 0
        except (OSError, AttributeError, ValueError):
            pdeath = False
    threading.Thread(target=_watch, args=(parent, pdeath), name='die_with_parent',
                     daemon=True).start()


def _watch(parent, pdeath):
    if pdeath:
        # No signal may interrupt this thread's waits: CPython's sigtimedwait, interrupted
        # (EINTR) as its time runs out, returns an unfilled siginfo instead of None, which
        # would read as the parent's death.  A worker's SIGALRM (reader.deadline) could
        # otherwise be delivered here: docs/failures.md, "A worker that ended itself".
        signal.pthread_sigmask(signal.SIG_BLOCK, signal.valid_signals())
    while os.getppid() == parent:  # checked after prctl: a parent already gone is seen
        if pdeath:
            if _parent_death_signal(signal.sigtimedwait({DEATH_SIGNAL}, WATCH_INTERVAL)):
                break  # the parent's main thread ended: the parent is exiting
        else:
            time.sleep(WATCH_INTERVAL)
    os.kill(os.getpid(), signal.SIGTERM)
    time.sleep(GRACE)
    os.kill(os.getpid(), signal.SIGKILL)


def _parent_death_signal(info):
    """Whether sigtimedwait's answer is the kernel's parent-death signal: DEATH_SIGNAL
    sent by no process (SI_USER from the kernel), not None or a foreign or unfilled one."""
    return info is not None and info.si_signo == DEATH_SIGNAL and info.si_code == SI_USER


def ended(pid):
    """True when process `pid` has exited (a zombie or gone)."""
    try:
        with open(f'/proc/{pid}/stat', encoding='ascii') as f:
            return f.read().rsplit(')', 1)[1].split()[0] in ('Z', 'X')
    except (OSError, IndexError):
        return True
