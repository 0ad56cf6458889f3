"""The tests' fixtures and process helpers; the media and config helpers they share with
bench/ live in testing/ (no network, no ../shared)."""
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from testing.tiny import make_tiny_dataset  # noqa: E402


@pytest.fixture
def tiny_dataset(tmp_path):
    """7 small videos over 3 classes, list files and a tiny config; -> dict of paths."""
    return make_tiny_dataset(tmp_path)


@pytest.fixture(autouse=True, scope='session')
def _inference_cache(tmp_path_factory):
    """eval.py / predict.py export to a cache of this test session, not ~/.cache."""
    old = os.environ.get('TSM_PADDLE_CACHE')
    os.environ['TSM_PADDLE_CACHE'] = str(tmp_path_factory.mktemp('inference_cache'))
    yield
    if old is None:
        os.environ.pop('TSM_PADDLE_CACHE', None)
    else:
        os.environ['TSM_PADDLE_CACHE'] = old


def run_cli(*args, env=None, timeout=300):
    """Run `python <script> args...` from the repo root; -> CompletedProcess (text)."""
    full_env = dict(os.environ, PYTHONWARNINGS='ignore', **(env or {}))
    return subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True,
                          env=full_env, timeout=timeout)


def environ_of(pid):
    """Process `pid`'s environment entries (bytes); [] once it is gone."""
    try:
        with open(f'/proc/{pid}/environ', 'rb') as f:
            return f.read().split(b'\0')
    except OSError:
        return []


def alive(pid):
    """True while `pid` runs (a zombie has ended)."""
    from utils.parent_watch import ended
    return not ended(pid)


def tagged(tag):
    """Live processes whose environment holds TSM_TEST_TAG=tag: a run started with that
    tag and every process it started (they inherit it)."""
    entry = f'TSM_TEST_TAG={tag}'.encode()
    return [int(p) for p in os.listdir('/proc')
            if p.isdigit() and entry in environ_of(p) and alive(p)]


def gone_within(tag, seconds):
    """Waits until no process of run `tag` is left; -> those still there after `seconds`
    (killed then, so that no test leaves them behind)."""
    import signal
    import time
    deadline = time.monotonic() + seconds
    while (left := tagged(tag)) and time.monotonic() < deadline:
        time.sleep(0.1)
    for pid in left:
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass
    return left
