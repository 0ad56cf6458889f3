"""--cpu_threads reaches eager Paddle: utils/env.set_cpu_threads, called after Paddle is
imported (as setup_runtime does), makes that many OS threads do the math.  Each thread's
CPU ticks (/proc/self/task) are counted against the busiest one's, not against a time."""
import sys

import pytest

from tests.conftest import run_cli

PROBE = r'''
import glob, sys
import paddle
from utils import env
n = env.set_cpu_threads(int(sys.argv[1]))
paddle.set_device('cpu')

def ticks():
    out = {}
    for t in glob.glob('/proc/self/task/*/stat'):
        f = open(t).read().rsplit(')', 1)[1].split()
        out[t.split('/')[4]] = int(f[11]) + int(f[12])
    return out

x, a = paddle.randn([8, 64, 56, 56]), paddle.randn([1024, 1024])
conv = paddle.nn.Conv2D(64, 64, 3, padding=1)
with paddle.no_grad():
    conv(x)
    before = ticks()
    for _ in range(15):
        conv(x).numpy()
        paddle.matmul(a, a).numpy()
    after = ticks()
work = [v - before.get(k, 0) for k, v in after.items()]
# a thread of the math pool does its even share of every op, whatever the machine's load
# or speed: counted relative to the busiest thread, not in absolute ticks
busy = sum(1 for w in work if w >= max(3, 0.3 * max(work)))
print('THREADS', n, busy)
'''


@pytest.mark.skipif(not sys.platform.startswith('linux'), reason='reads /proc')
@pytest.mark.parametrize('threads', [1, 2])
def test_cpu_threads_are_the_threads_that_work(threads):
    import os
    if len(os.sched_getaffinity(0)) < threads:
        pytest.skip(f'fewer than {threads} CPUs')
    res = run_cli('-c', PROBE, str(threads))
    assert res.returncode == 0, res.stderr[-2000:]
    n, busy = map(int, res.stdout.split('THREADS')[1].split())
    assert n == threads and busy == threads
