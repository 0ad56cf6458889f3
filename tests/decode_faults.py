"""Stand-ins for server/decode.py's probe_upload and decode_windows, for tests of the app
and of DecodePool (tests/test_server_app.py): an upload is one clip saved by np.save, and
a call can first segfault, hang in its watchdog or wait for a gate, as a decoder might.
Imports nothing heavy: DecodePool's spawned workers run it without Paddle."""
import glob
import os
import signal
import time

import numpy as np

from server.limits import DecodeFailed

GATE_WAIT_S = 300  # a held call goes on by itself after this (a test that never opens it)


def hold(gate):
    """The k-th held call of `gate` says so (the file `gate`.held.k), then waits until the
    file `gate`.k exists: a test opens each attempt of a request on its own."""
    k = len(glob.glob(f'{glob.escape(gate)}.held.*')) + 1
    open(f'{gate}.held.{k}', 'w').close()
    until = time.monotonic() + GATE_WAIT_S
    while not os.path.exists(f'{gate}.{k}') and time.monotonic() < until:
        time.sleep(0.01)


def hang_past_the_watchdog(seconds=0.2):
    """Stuck in a call that no Python exception ends: decode.py's watchdog ends the process
    at 2 x `seconds`, as it does a decoder stuck in C code."""
    from server.decode import _quiet_watchdog
    with _quiet_watchdog(seconds):
        time.sleep(GATE_WAIT_S)


def work(stage, action, gate, path, *args):
    """`stage` (probe_upload or decode_windows) of the upload at `path`, after `action`:
    None, 'segfault', 'hang' or 'hold' (see hold)."""
    if action == 'segfault':
        os.kill(os.getpid(), signal.SIGSEGV)
    elif action == 'hang':
        hang_past_the_watchdog()
    elif action == 'hold':
        hold(gate)
    try:
        clip = np.load(path, allow_pickle=False)  # [T, 3L, S, S]
    except (OSError, ValueError):
        raise DecodeFailed("cannot decode the video: not a saved clip") from None
    if stage == 'probe_upload':
        return {'num_frames': 1, 'fps': 25.0, 'spans': None, 'times': None, 'decode_s': 0.0}
    spans = args[1]
    return {'clips': np.stack([clip] * len(spans)), 'frames': None,  # -> [K, T, 3L, S, S]
            'decode_s': 0.0}
