"""utils/parent_watch.die_with_parent as a paddle.io.DataLoader's worker_init_fn: a process
SIGKILLed while its workers read ahead leaves neither a worker nor a worker's
/dev/shm/paddle_* file behind, whichever of its threads started the workers, and workers
started by a thread that has ended live on while the process does."""
import contextlib
import glob
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from tests.conftest import ROOT
from utils.parent_watch import ended

PARENT = textwrap.dedent('''
    import os, signal, sys, threading, time
    sys.path.insert(0, {root!r})
    import numpy as np
    import paddle
    from utils.parent_watch import die_with_parent

    class Frames(paddle.io.Dataset):
        def __len__(self):
            return 10000

        def __getitem__(self, i):
            return np.full((64, 64, 3), i % 255, dtype=np.float32)

    loader = paddle.io.DataLoader(Frames(), batch_size=4, num_workers=2, prefetch_factor=4,
                                  use_shared_memory=True, worker_init_fn=die_with_parent)
    if sys.argv[1] == 'thread':
        # Paddle sets its SIGCHLD handler at the first iter(), which only the main thread can
        first = iter(loader)
        next(first)
        first._try_shutdown_all()
        box = {{}}
        t = threading.Thread(target=lambda: box.update(it=iter(loader)))
        t.start()
        t.join()  # the thread that forked the workers has ended
        it = box['it']
    else:
        it = iter(loader)
    print(*[w.pid for w in it._workers], flush=True)
    time.sleep(1.5)
    for n, _ in enumerate(it):  # the workers still deliver
        if n == 5:
            break
    print('read', flush=True)
    time.sleep(1)  # they read ahead into shared memory
    os.kill(os.getpid(), signal.SIGKILL)
''')


@pytest.mark.parametrize('forker', ['main', 'thread'])
def test_loader_workers_end_with_a_killed_parent_and_leave_no_shared_memory(tmp_path, forker):
    script = tmp_path / 'parent.py'
    script.write_text(PARENT.format(root=ROOT))
    out = tmp_path / 'out.txt'
    with open(out, 'w') as f:  # not a pipe: an orphaned worker would hold it open
        proc = subprocess.run([sys.executable, str(script), forker], stdout=f,
                              stderr=subprocess.DEVNULL, timeout=120,
                              env=dict(os.environ, PYTHONWARNINGS='ignore'))
    lines = out.read_text().split('\n')
    workers = [int(p) for p in lines[0].split()]
    try:
        assert proc.returncode == -signal.SIGKILL, out.read_text()
        assert lines[1] == 'read'  # workers forked by an ended thread were not killed
        t0 = time.time()
        while not all(ended(p) for p in workers) and time.time() - t0 < 15:
            time.sleep(0.2)
        assert [p for p in workers if not ended(p)] == []
        left = [f for p in workers for f in glob.glob(f'/dev/shm/paddle_{p}_*')]
        assert left == []
    finally:
        for pid in workers:
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
            for f in glob.glob(f'/dev/shm/paddle_{pid}_*'):
                with contextlib.suppress(OSError):
                    os.unlink(f)


def _alarm_storm(seconds):
    """A spawned worker (die_with_parent asks for the parent-death signal there) whose
    main thread blocks SIGALRM, so a fast interval timer's alarms can only go to the
    watchdog thread, interrupting its waits; exit code 0: it outlived the storm."""
    from utils import parent_watch
    parent_watch.WATCH_INTERVAL = 0.01  # many waits, each one a chance to be interrupted
    parent_watch.die_with_parent()
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGALRM})
    signal.signal(signal.SIGALRM, lambda *_: None)
    signal.setitimer(signal.ITIMER_REAL, 0.0003, 0.0003)
    time.sleep(seconds)
    signal.setitimer(signal.ITIMER_REAL, 0)


def test_signals_that_interrupt_the_watchdog_are_not_a_parent_death():
    """CPython's sigtimedwait, interrupted by a signal as its time runs out, returns an
    unfilled siginfo instead of None.  The watchdog took that for the parent's death and
    ended healthy workers (the server's decode workers, between two requests: their reader
    deadline's SIGALRM).  Before the fix this worker ended itself (SIGTERM, -15) within
    the storm's first seconds."""
    import multiprocessing
    proc = multiprocessing.get_context('spawn').Process(target=_alarm_storm, args=(4,))
    proc.start()
    proc.join(60)
    assert proc.exitcode == 0
